"""``ddtrace open RUN.jsonl|TRACE.pftrace``: the trace in ui.perfetto.dev in one step.

Perfetto's own recipe (``tools/open_trace_in_ui``): serve the file once on 127.0.0.1:9001 — the
only address the UI's Content-Security-Policy lets it fetch traces from — with the CORS header
naming the UI's origin, and open ``https://ui.perfetto.dev/#!/?url=…``. The UI then loads the
trace inside the browser; nothing leaves the machine except the page load of the UI itself.
A record is exported first (to ``RUN.pftrace`` beside it) unless that file is newer.

What is served is decided by content, not by name: a record (ddscope's or DataDesigner's, plain
or gzipped, recognised as ``health`` recognises it) is exported; a Perfetto protobuf trace or a
Chrome JSON trace (plain or gzipped) is served as it is; anything else is refused, since the UI
would only show a parse error for it.
"""

from __future__ import annotations

import errno
import gzip
import http.server
import time
import webbrowser
import zlib
from pathlib import Path
from urllib.parse import quote

import click

from ddscope.cli.common import NonEmptyPath, handle_errors, seconds_callback, warn
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
    """The trace to serve: the file itself if it is a trace, or a record's .pftrace (exported
    when missing or older than the record)."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a record (run.jsonl) or a trace")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    from ddscope.record.detect import detect_format

    # A .jsonl(.gz) that is not recognised still goes to the exporter: its reader names the
    # file and line that are wrong, which says more than "not a trace".
    is_record = detect_format(path) != "unknown" or path.name.endswith((".jsonl", ".jsonl.gz"))
    if not is_record:
        if not looks_like_trace(path):
            raise ConfigError(
                f"{path}: not a record (run.jsonl, scheduler_events.jsonl, plain or gzipped) nor "
                "a Perfetto or Chrome JSON trace; nothing to open"
            )
        return path
    trace = path.with_suffix(".pftrace")  # what `ddtrace export` writes by default
    if trace.exists() and trace.stat().st_mtime >= path.stat().st_mtime:
        return trace
    from ddscope.exporters.trace.perfetto import export_perfetto

    result = export_perfetto(path, trace, lenient=lenient)
    for message in result.warnings:
        warn(message)
    click.echo(f"{trace}  ({result.events} events, {result.bytes_written:,} bytes)")
    return trace


_SNIFF_BYTES = 4096
# Bytes that never occur in text (NUL and the C0 controls other than \t \n \v \f \r, and ESC
# aside): a protobuf's tags and varints are full of them within its first bytes.
_BINARY = frozenset(range(0x09)) | frozenset(range(0x0E, 0x1B)) | frozenset(range(0x1C, 0x20))


def looks_like_trace(path: Path) -> bool:
    """Whether the UI can load ``path``: a Perfetto trace (a protobuf ``Trace``, whose first
    byte is 0x0A: field 1, ``packet``, length-delimited, then the packet's varint length) or a
    Chrome JSON trace, either maybe gzipped (the UI unzips). The name does not count: a
    ``.pftrace`` holding text is refused, a trace called ``t.bin`` is served."""
    try:
        with path.open("rb") as raw:
            head = raw.read(_SNIFF_BYTES)
            size = path.stat().st_size
            if head[:2] == b"\x1f\x8b":
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    head = unzipped.read(_SNIFF_BYTES)
                size = -1  # unknown without unzipping it all
    except (OSError, EOFError, zlib.error):
        return False
    return _is_perfetto(head, size) or _is_chrome_json(head)


def _is_perfetto(head: bytes, size: int) -> bool:
    if len(head) < 2 or head[0] != 0x0A:
        return False
    length, shift, end = 0, 0, 1
    while end < len(head) and end <= 10:
        byte = head[end]
        length |= (byte & 0x7F) << shift
        shift += 7
        end += 1
        if not byte & 0x80:
            break
    else:
        return False  # no varint end within 10 bytes
    fits = size < 0 or end + length <= size
    # A text file that starts with an empty line starts with 0x0A too: a trace is binary.
    return fits and any(b in _BINARY for b in head[: min(len(head), 256)])


def _is_chrome_json(head: bytes) -> bool:
    text = head.lstrip()
    if text.startswith(b"["):  # the array form: a list of events
        return text[1:].lstrip().startswith((b"{", b"]"))
    return text.startswith(b"{") and b'"traceEvents"' in text


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
@click.argument("path", type=NonEmptyPath(dir_okay=False))
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
    callback=seconds_callback("--timeout"),
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
