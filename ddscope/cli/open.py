"""``ddtrace open RUN.jsonl|TRACE.pftrace``: the trace in ui.perfetto.dev in one step.

Perfetto's own recipe (``tools/open_trace_in_ui``): serve the file once on 127.0.0.1:9001 — the
only address the UI's Content-Security-Policy lets it fetch traces from — with the CORS header
naming the UI's origin, and open ``https://ui.perfetto.dev/#!/?url=…``. The UI then loads the
trace inside the browser; nothing leaves the machine except the page load of the UI itself.
A record is exported first (to ``RUN.pftrace`` beside it) unless that file is newer.
"""

from __future__ import annotations

import errno
import http.server
import time
import webbrowser
from pathlib import Path
from urllib.parse import quote

import click

from ddscope.cli.common import handle_errors, warn
from ddscope.errors import ConfigError, DdscopeError

UI_ORIGIN = "https://ui.perfetto.dev"
PORT = 9001  # the UI accepts ?url= traces only from 127.0.0.1:9001 (and localhost:9001)


class _TraceServer(http.server.HTTPServer):
    """Serves one file, at one path, to the Perfetto UI's origin."""

    def __init__(self, port: int, trace: Path) -> None:
        self.trace = trace
        self.path_served = "/" + quote(trace.name)
        self.served = False
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TraceServer

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", UI_ORIGIN)
        self.send_header("Cache-Control", "no-cache")

    def do_OPTIONS(self) -> None:  # http.server names handlers after the method
        # a preflight (Chrome's private-network access asks before a public page reads
        # 127.0.0.1)
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Access-Control-Allow-Private-Network", "true")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != self.server.path_served:
            self.send_error(404, "only the trace is served here")
            return
        data = self.server.trace.read_bytes()
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.served = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the command prints its own lines."""


def trace_for(path: Path, *, lenient: bool) -> Path:
    """The trace to serve: the file itself, or a record's .pftrace (exported when missing or
    older than the record)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if path.suffix != ".jsonl":
        return path
    trace = path.with_suffix(".pftrace")
    if trace.exists() and trace.stat().st_mtime >= path.stat().st_mtime:
        return trace
    from ddscope.exporters.trace.perfetto import export_perfetto

    result = export_perfetto(path, trace, lenient=lenient)
    for message in result.warnings:
        warn(message)
    click.echo(f"{trace}  ({result.events} events, {result.bytes_written:,} bytes)")
    return trace


def serve_once(trace: Path, port: int, *, browser: bool, timeout_s: float) -> None:
    try:
        server = _TraceServer(port, trace)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DdscopeError(
                f"127.0.0.1:{port} is in use (ui.perfetto.dev fetches traces only from port "
                f"{PORT}): stop what listens there, or open {trace} in the UI by hand"
            ) from exc
        raise
    url = f"{UI_ORIGIN}/#!/?url=http://127.0.0.1:{port}{server.path_served}&referrer=ddscope"
    with server:
        click.echo(f"Open in the browser: {url}")
        click.echo(f"serving {trace} once on http://127.0.0.1:{port} (Ctrl-C to stop)")
        if browser:
            webbrowser.open_new_tab(url)
        server.timeout = 0.5
        deadline = time.monotonic() + timeout_s
        while not server.served and time.monotonic() < deadline:
            server.handle_request()
    if not server.served:
        raise DdscopeError(f"nobody fetched the trace within {timeout_s:g} s; stopped serving")
    click.echo("the trace was fetched; done")


@click.command("open")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-browser", is_flag=True, help="Print the URL instead of opening a browser.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=PORT,
    show_default=True,
    help="Port on 127.0.0.1 (the public UI fetches only from 9001: change it for a self-hosted "
    "UI or for tests).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Stop serving after this many seconds if nobody fetched the trace.",
)
@click.option("--lenient", is_flag=True, help="Skip corrupt lines of a record instead of failing.")
@handle_errors
def open_command(path: Path, no_browser: bool, port: int, timeout_s: float, lenient: bool) -> None:
    """Open a run in ui.perfetto.dev: exports RUN.jsonl if needed, serves the trace once on
    127.0.0.1:9001 with the CORS header the UI requires, and opens (or prints) the UI's URL."""
    serve_once(trace_for(path, lenient=lenient), port, browser=not no_browser, timeout_s=timeout_s)
