"""Faults a user meets with `ddtrace run`: a full disk, signals, two runs into one directory, a
run refused at start. Each against the real mock endpoint over 127.0.0.1, `ddtrace` as a real
subprocess."""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fault_support import (
    ddtrace,
    line_count,
    mounted_tmpfs,
    pipeline_dict,
    run_ddtrace,
    wait_until,
    write_pipeline,
)

from ddscope.mock import MockBehavior, MockServer
from ddscope.record.jsonl import RunReader


def _finished(record: Path) -> list[dict[str, Any]]:
    return [e for _, e in RunReader(record).iter_dicts() if e["kind"] == "run_finished"]


def _rows_are_whole(data: Path) -> list[int]:
    raw = data.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "data.jsonl ends in a cut-off line"
    return [orjson.loads(line)["_row"] for line in raw.splitlines()]


# -- disk full ------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    why = "mounting a small tmpfs needs root (and mount(8))"
    with mounted_tmpfs(tmp_path / "tmpfs", "size=200k", why) as mount_point:
        yield mount_point


@pytest.mark.parametrize("prefill_kib", [0, 150])
def test_a_full_disk_fails_the_run_loudly_and_keeps_whole_rows(
    small_tmpfs: Path, srv: MockServer, tmp_path: Path, prefill_kib: int
) -> None:
    """200 KiB cannot hold 2,000 rows and their record: the run stops at once, outcome failed,
    naming the file and the OS error; data.jsonl holds whole rows only."""
    (small_tmpfs / "fill").write_bytes(b"\0" * prefill_kib * 1024)
    pipeline = write_pipeline(tmp_path, pipeline_dict(srv.base_url, 2000))
    out = small_tmpfs / "out"
    result = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Run failed (" in result.stdout
    assert "No space left on device" in result.stdout
    assert str(out) in result.stdout  # the file is named
    rows = _rows_are_whole(out / "data.jsonl")
    # In row order, each row once. Not always contiguous: when the record's write fails first,
    # the stop writes the groups in flight with the rows they had completed (outcome
    # abandoned), so a row still on the wire in an earlier group leaves a gap.
    assert rows == sorted(set(rows)) and len(rows) < 2000
    assert srv.stats().requests < 2000  # stopped promptly, not after sending everything


# -- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_the_run_like_ctrl_c(
    server: MockServer, tmp_path: Path, sig: signal.Signals
) -> None:
    server.reset(MockBehavior(latency_ms=20))
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, 5000))
    out = tmp_path / "out"
    proc = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    wait_until(lambda: line_count(out / "data.jsonl") >= 20, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "Run cancelled after" in stdout and sig.name in stdout
    finished = _finished(out / "run.jsonl")
    assert [(f["outcome"], f["reason"]) for f in finished] == [("cancelled", "cancelled")]
    assert sig.name in finished[0]["message"]
    assert finished[0]["rows_completed"] == line_count(out / "data.jsonl")


def test_ctrl_c_with_huge_row_groups_stops_before_a_generous_deadline(
    server: MockServer, tmp_path: Path
) -> None:
    """buffer_size 50,000 is processed in slices, so stopping does not grow with it."""
    server.reset(MockBehavior(latency_ms=50))
    data = pipeline_dict(server.base_url, 100_000, buffer_size=50_000)
    data["models"][0]["max_parallel_requests"] = 64
    pipeline = write_pipeline(tmp_path, data)
    out = tmp_path / "out"
    proc = ddtrace("run", str(pipeline), "--out", str(out))
    assert proc.stderr is not None
    wait_until(lambda: line_count(out / "run.jsonl") >= 500, proc)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    stopped_s = time.monotonic() - signalled
    assert proc.returncode == 1, stderr
    assert "Run cancelled" in stdout
    assert stopped_s < 5.0  # the target is < 1 s; this only guards against the old minutes
    # progress kept coming (health_interval_s 0.5): no silent stretch while groups are huge
    stamps = [float(m) for m in re.findall(r"^\[\s*([0-9.]+)s\]", stderr, re.MULTILINE)]
    assert len(stamps) >= 3
    assert max(b - a for a, b in itertools.pairwise(stamps)) <= 2.0
    started = [
        e for _, e in RunReader(out / "run.jsonl").iter_dicts() if e["kind"] == "run_started"
    ]
    assert started[0]["row_groups"] == 100


# -- one run per directory; nothing replaced before the run starts --------------------------


def test_a_second_run_into_the_same_directory_is_refused(
    server: MockServer, tmp_path: Path
) -> None:
    server.reset(MockBehavior(latency_ms=20))
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, 200))
    out = tmp_path / "out"
    first = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    wait_until(lambda: line_count(out / "run.jsonl") >= 5, first)
    second = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    _, stderr = first.communicate(timeout=60)
    assert second.returncode == 2
    assert second.stderr.startswith("ConfigError: --out ")
    assert "another ddtrace run" in second.stderr and str(first.pid) in second.stderr
    assert first.returncode == 0, stderr
    assert _rows_are_whole(out / "data.jsonl") == list(range(200))
    assert [f["outcome"] for f in _finished(out / "run.jsonl")] == ["complete"]


@pytest.fixture
def previous_run(server: MockServer, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    server.reset(MockBehavior())
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, 30))
    out = tmp_path / "out"
    result = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out, {p.name: p.read_bytes() for p in out.iterdir()}


def _unchanged(out: Path, before: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unset_api_key_leaves_the_previous_output_untouched(
    server: MockServer, tmp_path: Path, previous_run: tuple[Path, dict[str, bytes]]
) -> None:
    out, before = previous_run
    data = pipeline_dict(server.base_url, 30)
    data["providers"][0]["api_key_env"] = "DDSCOPE_FAULTS_UNSET_KEY"
    result = run_ddtrace("run", str(write_pipeline(tmp_path, data, "k.yaml")), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ConfigError: providers: mock: api_key_env: environment variable "
        "DDSCOPE_FAULTS_UNSET_KEY is not set"
    ]
    _unchanged(out, before)


def test_a_blank_api_key_leaves_the_previous_output_untouched(
    server: MockServer, tmp_path: Path, previous_run: tuple[Path, dict[str, bytes]]
) -> None:
    """A key of spaces only is no key (the client strips it): refused before the out dir is
    touched, not after it was replaced."""
    out, before = previous_run
    data = pipeline_dict(server.base_url, 30)
    data["providers"][0]["api_key_env"] = "DDSCOPE_FAULTS_BLANK_KEY"
    pipeline = write_pipeline(tmp_path, data, "k.yaml")
    result = run_ddtrace(
        "run", str(pipeline), "--out", str(out), env={"DDSCOPE_FAULTS_BLANK_KEY": "  "}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ConfigError: providers: mock: api_key_env: environment variable "
        "DDSCOPE_FAULTS_BLANK_KEY is blank"
    ]
    _unchanged(out, before)


def test_a_bad_setting_leaves_the_previous_output_untouched(
    server: MockServer, tmp_path: Path, previous_run: tuple[Path, dict[str, bytes]]
) -> None:
    out, before = previous_run
    data = pipeline_dict(server.base_url, 30, acquire_timeout_s=float("inf"))
    result = run_ddtrace("run", str(write_pipeline(tmp_path, data, "i.yaml")), "--out", str(out))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "run.acquire_timeout_s" in result.stderr
    _unchanged(out, before)


def test_an_unreachable_endpoint_names_the_url_and_leaves_the_output_untouched(
    tmp_path: Path, previous_run: tuple[Path, dict[str, bytes]]
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    out, before = previous_run
    pipeline = write_pipeline(tmp_path, pipeline_dict(url, 30), "u.yaml")
    result = run_ddtrace("run", str(pipeline), "--out", str(out))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("EndpointUnreachable: provider 'mock': cannot connect to " + url)
    _unchanged(out, before)
