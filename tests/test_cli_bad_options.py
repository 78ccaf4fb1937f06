"""Bad options and arguments of every command (the CLI audit): one ``UsageError:`` or
``ConfigError:`` line naming the option, argument or file, exit 2, never a traceback, and
nothing run or served first."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from engine_records import EngineSpec, write_engine_record
from fault_support import pipeline_dict, write_pipeline

from ddscope.cli.main import cli
from ddscope.errors import ConfigError
from ddscope.mock import MockBehavior

SPEC = EngineSpec(rows=6, buffer_size=3)
DD_GZ = Path("/work/shared/fixtures/datadesigner/dd-0.9.5-healthy-30rec.scheduler_events.jsonl.gz")


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _refused(result: Result, *needles: str, kind: str = "UsageError: ") -> str:
    """Exit 2 and exactly one stderr line, of ``kind``, containing every needle."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(kind), line
    for needle in needles:
        assert needle in line, line
    return line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def record(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    write_engine_record(path, SPEC)
    return path


@pytest.fixture
def trace(record: Path) -> Path:
    out = record.with_suffix(".pftrace")
    assert _invoke("export", str(record), "-o", str(out)).exit_code == 0
    return out


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A pipeline whose endpoint nobody serves: an option that got past parsing would fail
    later with exit 1 (unreachable), never hang."""
    return write_pipeline(tmp_path, pipeline_dict(f"http://127.0.0.1:{_free_port()}/v1", 4))


# -- 1. empty and directory paths -------------------------------------------------------------


@pytest.mark.parametrize("command", ["health", "export", "report", "open", "convert"])
@pytest.mark.parametrize(("path", "why"), [("", "empty path"), (".", "is a directory")])
def test_an_empty_or_directory_input_names_the_argument(command: str, path: str, why: str) -> None:
    extra = ["--no-browser", "--timeout", "0.1"] if command == "open" else []
    arg = "PATH" if command == "open" else "SOURCE" if command == "convert" else "RECORD"
    arg = "RECORDS" if command == "report" else arg
    _refused(_invoke(command, path, *extra), f"'{arg}", why)


def test_open_a_directory_says_it_is_one(tmp_path: Path) -> None:
    _refused(_invoke("open", str(tmp_path), "--no-browser"), "'PATH'", "is a directory")


# -- 2, 3. health --at / --stall-s --------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e308", "1e10"])
def test_health_at_beyond_what_a_record_can_hold(record: Path, value: str) -> None:
    _refused(_invoke("health", str(record), "--at", value), "--at", "more than")


def test_health_at_the_bound_still_works(record: Path) -> None:
    assert _invoke("health", str(record), "--at", "9223372036").exit_code == 0


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_health_stall_s_must_be_finite(record: Path, value: str) -> None:
    _refused(_invoke("health", str(record), "--stall-s", value), "--stall-s", "not a finite")


# -- 4. open --timeout ------------------------------------------------------------------------


def test_open_timeout_nan_is_refused_before_serving(trace: Path) -> None:
    result = _invoke("open", str(trace), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "nan")  # fmt: skip
    _refused(result, "--timeout", "not a finite")
    assert "serving" not in result.stdout


def test_open_timeout_inf_is_refused(tmp_path: Path) -> None:
    # a missing file: were --timeout inf accepted, the test would fail fast instead of hanging
    result = _invoke("open", str(tmp_path / "x.pftrace"), "--no-browser", "--timeout", "inf")
    _refused(result, "--timeout", "not a finite")


# -- 5, 6, 9. run / demo options ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "86401"])
def test_run_prometheus_linger_is_refused_before_the_run(
    pipeline: Path, tmp_path: Path, value: str
) -> None:
    out = tmp_path / "out"
    result = _invoke("run", str(pipeline), "-o", str(out), "--prometheus-port",
                     str(_free_port()), "--prometheus-linger", value)  # fmt: skip
    _refused(result, "--prometheus-linger")
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "99999999999999999999"],
        ["-n", str(2**63)],
        ["--buffer-size", "99999999999999999999"],
    ],
)
def test_run_sizes_beyond_what_a_record_can_hold(
    pipeline: Path, tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "out"
    result = _invoke("run", str(pipeline), "-o", str(out), *args)
    _refused(result, args[0], "9223372036854775807")
    assert not out.exists()


def test_a_size_at_the_bound_is_recorded_and_read_back(tmp_path: Path) -> None:
    """What -n accepts fits the header: written and validated back by the reader."""
    from ddscope.events import RunHeader
    from ddscope.record.jsonl import RunReader
    from ddscope.record.recorder import header_line

    header = RunHeader(ddscope_version="x", run_id="r", started_at_unix_ns=0,
                       num_records=2**63 - 1, buffer_size=2**63 - 1)  # fmt: skip
    path = tmp_path / "run.jsonl"
    path.write_bytes(header_line(header))
    assert RunReader(path).header.num_records == 2**63 - 1


@pytest.mark.parametrize("command", ["run", "demo"])
def test_an_empty_out_dir_is_refused(pipeline: Path, command: str) -> None:
    args = [command, str(pipeline)] if command == "run" else [command]
    _refused(_invoke(*args, "-o", ""), "'-o' / '--out'", "empty path")


@pytest.mark.parametrize("command", ["export", "report", "convert"])
def test_an_empty_out_file_is_refused(record: Path, command: str) -> None:
    source = record
    if command == "convert":
        source = record.with_name("se.jsonl.gz")
        shutil.copyfile(DD_GZ, source)
    _refused(_invoke(command, str(source), "-o", ""), "'-o' / '--out'", "empty path")


# -- 7. open: what is served --------------------------------------------------------------------


def test_open_exports_a_gzipped_datadesigner_record(tmp_path: Path) -> None:
    source = tmp_path / DD_GZ.name
    shutil.copyfile(DD_GZ, source)
    result = _invoke("open", str(source), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "0.2")  # fmt: skip
    trace = source.with_suffix(".pftrace")
    assert trace.exists(), result.output
    assert f"serving {trace} once" in result.stdout
    assert result.exit_code == 1  # nobody fetched it


def test_open_exports_a_gzipped_ddscope_record(record: Path) -> None:
    gz = record.with_name("run.jsonl.gz")
    gz.write_bytes(gzip.compress(record.read_bytes()))
    result = _invoke("open", str(gz), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "0.2")  # fmt: skip
    assert f"serving {gz.with_suffix('.pftrace')} once" in result.stdout, result.output


@pytest.mark.parametrize(
    "content",
    [b"myhost\n", b"\nan empty first line, then text" * 10, b"", b'{"a": 1}\n', b"\x1f\x8bnot"],
)
def test_open_refuses_a_file_that_is_no_trace(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "hostname"
    path.write_bytes(content)
    result = _invoke("open", str(path), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "0.2")  # fmt: skip
    _refused(result, str(path), "not a", kind="ConfigError: ")
    assert "serving" not in result.stdout


def test_open_refuses_a_pftrace_suffix_that_is_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "fake.pftrace"
    path.write_text("hello\n")
    result = _invoke("open", str(path), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "0.2")  # fmt: skip
    _refused(result, str(path), kind="ConfigError: ")


@pytest.mark.parametrize("name", ["t.pftrace", "t.bin", "t.pftrace.gz", "t.trace.json"])
def test_open_serves_real_traces_whatever_their_name(trace: Path, record: Path, name: str) -> None:
    path = trace.with_name(name)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(trace.read_bytes()))
    elif name.endswith(".json"):
        assert _invoke("export", str(record), "--chrome-json", "-o", str(path)).exit_code == 0
    else:
        shutil.copyfile(trace, path)
    result = _invoke("open", str(path), "--no-browser", "--port", str(_free_port()),
                     "--timeout", "0.2")  # fmt: skip
    assert f"serving {path} once" in result.stdout, result.output


# -- 8. mock-server -----------------------------------------------------------------------------

# An address nothing can bind: an option that got past parsing fails at the bind (exit 2, but
# naming --host) instead of serving forever.
NO_SERVER = ("--host", "256.256.256.256", "--port", "0")


@pytest.mark.parametrize("option", ["--latency-ms", "--jitter-ms", "--ramp-s", "--hang-s"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_mock_server_times_must_be_finite(option: str, value: str) -> None:
    result = _invoke("mock-server", *NO_SERVER, option, value)
    _refused(result, option, "not a finite number")


def test_mock_server_outage_must_end_after_it_starts() -> None:
    result = _invoke("mock-server", *NO_SERVER, "--outage-from-s", "5", "--outage-until-s", "1")
    _refused(result, "--outage-until-s", "--outage-from-s")


def test_mock_behavior_refuses_the_same() -> None:
    with pytest.raises(ConfigError, match="latency_ms is not a finite number"):
        MockBehavior(latency_ms=float("inf"))
    with pytest.raises(ConfigError, match="outage_until_s must be after outage_from_s"):
        MockBehavior(outage_from_s=5.0, outage_until_s=1.0)


def test_mock_server_stopped_with_a_request_pending_prints_no_traceback() -> None:
    command = [sys.executable, "-m", "ddscope.cli.main", "mock-server", "--port", "0",
               "--latency-ms", "60000"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://"), base_url
        pending = threading.Thread(
            target=lambda: _post_ignoring_errors(f"{base_url}/chat/completions"), daemon=True
        )
        pending.start()
        _wait_for_a_request(base_url)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err and "CancelledError" not in err, err


def _post_ignoring_errors(url: str) -> None:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
    with contextlib.suppress(httpx.HTTPError):  # the server went away: what the test does
        httpx.post(url, json=body, timeout=30)


def _wait_for_a_request(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    for _ in range(200):
        if httpx.get(f"{root}/stats", timeout=5).json()["requests"] >= 1:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the request never reached the mock server")
