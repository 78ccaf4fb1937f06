"""``ddtrace report RUN.jsonl``: one run as a self-contained HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ddscope.exporters.report.collect import RunData, collect
from ddscope.exporters.report.page import document, plot_slots, trace_section
from ddscope.exporters.report.plots import Spec, domain_plots, run_plots
from ddscope.exporters.report.sections import (
    domain_table,
    drops_section,
    esc,
    scheduler_section,
    totals_section,
    verdict_section,
)
from ddscope.exporters.report.trace_embed import EmbeddedTrace, embed_trace
from ddscope.exporters.report.view import run_view


@dataclass
class ReportResult:
    out: Path
    bytes_written: int
    events: int  # events read (all records together)
    trace_embedded: bool
    warnings: list[str] = field(default_factory=list)
    note: str | None = None  # why the trace is not embedded


def write_html(out: Path, text: str) -> int:
    """Whole or not at all: a half-written report is never left behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    data = text.encode("utf-8")
    partial.write_bytes(data)
    partial.replace(out)
    return len(data)


def build_report(
    record: str | Path, out: str | Path, *, lenient: bool = False, trace: bool = True
) -> ReportResult:
    """Reads ``record`` once (plus once more to export its trace, when it is small enough to
    embed) and writes the report to ``out``."""
    record = Path(record)
    run = collect(record, lenient=lenient)
    embedded = embed_trace(record, lenient=lenient) if trace else None
    title = f"ddscope report: run {run.header.run_id} ({run.header.pipeline_name})"
    body, specs = run_body(run, embedded)
    size = write_html(Path(out), document(title, body, {"title": title, "plots": specs}, embedded))
    return ReportResult(
        out=Path(out),
        bytes_written=size,
        events=run.health.record.events,
        trace_embedded=embedded is not None and embedded.gzip_base64 is not None,
        warnings=list(run.health.record.warnings),
        note=None if embedded is None else embedded.why_not,
    )


def run_body(run: RunData, trace: EmbeddedTrace | None) -> tuple[str, list[Spec]]:
    """The page's sections and its plot specs, in page order."""
    view = run_view(run)
    health = run.health
    specs = run_plots(view)
    parts = [
        f"<p class='muted'>Record: <code>{esc(run.path)}</code>, "
        f"{health.record.events:,} events.</p>",
        verdict_section(health),
        trace_section(trace, str(run.path)),
        totals_section(health.totals),
        f"<h2>Over time</h2>{plot_slots(specs, 0)}",
    ]
    for report, dview in zip(health.domains, view.domains, strict=False):
        mine = domain_plots(view, dview)
        parts.append(
            f'<section class="domain-block"><h2>{esc(report.domain)}</h2>'
            f"{domain_table(report, dview.peak_waiters)}{plot_slots(mine, len(specs))}</section>"
        )
        specs += mine
    parts += [drops_section(health.totals), scheduler_section(health)]
    parts += [f"<p class='muted'>warning: {esc(w)}</p>" for w in health.record.warnings]
    return "".join(parts), specs
