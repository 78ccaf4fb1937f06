"""The self-contained HTML document: sections, the plots' data, the vendored uPlot, our script
and styles, and (when small enough) the Perfetto trace — all inline.

A Content-Security-Policy forbids every fetch and every external resource, so the page cannot
reach the network when viewed (the tests check this in Chromium); only the "Open in Perfetto"
button opens a window on ui.perfetto.dev, because the user asked for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ddscope import __version__
from ddscope.exporters.report.plots import Spec
from ddscope.exporters.report.sections import esc
from ddscope.exporters.report.trace_embed import EmbeddedTrace

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; base-uri 'none'; form-action 'none'"
)


def _asset(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def plot_slots(specs: list[Spec], first: int) -> str:
    """Placeholders for ``specs`` (numbered from ``first`` in the page's list of plots)."""
    figures = []
    for i, spec in enumerate(specs, start=first):
        figures.append(
            f'<figure class="plot"><figcaption><b>{esc(spec["title"])}</b>'
            f"<span>{esc(spec['help'])}</span></figcaption>"
            f'<div class="chart" data-plot="{i}"></div></figure>'
        )
    return f'<div class="plots">{"".join(figures)}</div>'


def trace_section(trace: EmbeddedTrace | None, record_hint: str) -> str:
    if trace is None:
        return ""
    command = f"ddtrace open {record_hint}"
    if trace.gzip_base64 is not None:
        offer = (
            f'<a id="download-trace" class="button" download="{esc(trace.name)}">'
            f"Download {esc(trace.name)}</a> <span class='muted'>{trace.size:,} bytes</span>"
        )
    else:
        offer = (
            f"<p class='muted'>Not embedded: {esc(trace.why_not)}. Write it with "
            f"<code>ddtrace export {esc(record_hint)} --perfetto</code> and choose it here "
            f'<input type="file" id="trace-file" accept=".pftrace,.json,.gz">, '
            f"or run <code>{esc(command)}</code>.</p>"
        )
    return (
        '<section class="trace"><h2>Trace</h2>'
        '<button id="open-perfetto" type="button">Open in Perfetto</button> '
        f'{offer} <span id="perfetto-status" class="muted"></span>'
        "<p class='muted'>The button opens ui.perfetto.dev and hands it the trace inside the "
        "browser (Perfetto's postMessage protocol); nothing is uploaded.</p></section>"
    )


def _trace_blob(trace: EmbeddedTrace | None) -> str:
    if trace is None or trace.gzip_base64 is None:
        return ""
    return (
        f'<script id="ddscope-trace" type="application/octet-stream" '
        f'data-name="{esc(trace.name)}" data-size="{trace.size}" '
        f'data-sha256="{trace.sha256}">{trace.gzip_base64}</script>'
    )


def document(title: str, body: str, data: dict[str, Any], trace: EmbeddedTrace | None) -> str:
    # "<" only occurs inside JSON strings, where \u003c means the same: no "</script>" or
    # "<!--" from a record can end the data block early.
    payload = orjson.dumps(data).replace(b"<", b"\\u003c").decode("utf-8")
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>{_asset('vendor/uPlot.min.css')}</style>"
        f"<style>{_asset('assets/report.css')}</style>"
        "</head><body>"
        f"<header><h1>{esc(title)}</h1><p class='muted'>ddscope {esc(__version__)}, "
        f"report made {made}</p></header><main>{body}</main>"
        f'<script id="ddscope-data" type="application/json">{payload}</script>'
        f"{_trace_blob(trace)}"
        f"<script>{_asset('vendor/uPlot.iife.min.js')}</script>"
        f"<script>{_asset('assets/report.js')}</script>"
        "</body></html>\n"
    )
