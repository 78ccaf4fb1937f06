"""``ddtrace open``: exports a record when needed, serves the trace ONCE on 127.0.0.1 with the CORS
header ui.perfetto.dev requires, and prints the UI's URL — checked with a real HTTP GET from
this process to the real command running as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from engine_records import EngineSpec, engine_events
from perfetto_support import write_record

SPEC = EngineSpec(rows=6, buffer_size=3, rate_limit_every=5)
UI = "https://ui.perfetto.dev"


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path / "run.jsonl", *engine_events(SPEC))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ddscope.cli.main", "open", *args, "--no-browser"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def served_url(proc: subprocess.Popen[str]) -> str:
    """The trace URL from the printed ``https://ui.perfetto.dev/#!/?url=…`` line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("Open in the browser: "):
            ui_url = line.split(": ", 1)[1].strip()
            assert ui_url.startswith(f"{UI}/#!/?url=")
            return parse_qs(urlsplit(ui_url.replace("#!/", "")).query)["url"][0]
    proc.kill()
    raise AssertionError(f"no URL printed: {proc.communicate()}")


def get(url: str, origin: str = UI) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serves_the_exported_trace_once_on_port_9001(record: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9001)) == 0:
            pytest.skip("something already listens on 127.0.0.1:9001")
    proc = start(str(record))
    url = served_url(proc)
    assert url == "http://127.0.0.1:9001/run.pftrace"
    status, headers, body = get(url)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI
    assert body == record.with_suffix(".pftrace").read_bytes() and len(body) > 1000
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "fetched" in out


def test_a_trace_file_is_served_as_is_and_other_paths_are_404(record: Path, tmp_path: Path) -> None:
    trace = tmp_path / "mine.pftrace"
    trace.write_bytes(b"\x0a\x00not really a trace, served byte for byte")
    port = free_port()
    proc = start(str(trace), "--port", str(port))
    url = served_url(proc)
    assert url == f"http://127.0.0.1:{port}/mine.pftrace"
    status, _, _ = get(f"http://127.0.0.1:{port}/etc/passwd")
    assert status == 404 and proc.poll() is None  # still waiting for the trace itself
    status, _headers, body = get(url)
    assert status == 200 and body == trace.read_bytes()
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_nobody_fetching_ends_after_the_timeout(record: Path) -> None:
    proc = start(str(record), "--port", str(free_port()), "--timeout", "1")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "nobody fetched the trace within 1 s" in err


def test_a_port_in_use_is_one_line_and_exit_1(record: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(str(record), "--port", str(port))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith(f"DdscopeError: 127.0.0.1:{port} is in use")


def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    proc = start(str(tmp_path / "nope.jsonl"))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no such file" in err
