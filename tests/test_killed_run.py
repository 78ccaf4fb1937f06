"""A run killed with SIGKILL mid-way leaves a record every tool can still read, and
`--resume` finishes it with exactly the rows an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_support import (
    ddtrace,
    line_count,
    pipeline_dict,
    run_ddtrace,
    wait_until,
    write_pipeline,
)

from ddscope.cli.main import cli
from ddscope.mock import MockBehavior, MockServer
from ddscope.record.jsonl import RunReader


@pytest.fixture(scope="module")
def killed_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("killed")
    record = out / "run.jsonl"
    command = [
        sys.executable,
        "-m",
        "ddscope.cli.main",
        "demo",
        "--scenario",
        "rate-limited",
        "--records",
        "400",
        "--out",
        str(out),
        "--quiet",
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not (record.exists() and record.read_text().count("\n") >= 200)
        ):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return record


def test_killed_run_leaves_a_readable_record(killed_record: Path) -> None:
    reader = RunReader(killed_record)
    events = list(reader)
    assert reader.header.num_records == 400
    assert len(events) >= 150
    assert events[0].kind == "run_started"
    assert not any(e.kind == "run_finished" for e in events)  # it never got to finish
    assert reader.stats.corrupt_lines == 0


def test_killed_run_is_explained_and_exported(killed_record: Path, tmp_path: Path) -> None:
    health = CliRunner().invoke(cli, ["health", str(killed_record), "--json"])
    assert health.exit_code == 0, health.output
    assert '"verdict"' in health.output
    trace = tmp_path / "killed.pftrace"
    export = CliRunner().invoke(cli, ["export", str(killed_record), "--perfetto", "-o", str(trace)])
    assert export.exit_code == 0, export.output
    assert trace.stat().st_size > 0


# -- killed, then resumed ------------------------------------------------------------------

RESUME_ROWS = 600


@pytest.fixture(scope="module")
def uninterrupted(server: MockServer, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """data.jsonl of the same pipeline run without a stop: what a resumed run must equal."""
    server.reset(MockBehavior(latency_ms=2))
    directory = tmp_path_factory.mktemp("whole")
    pipeline = write_pipeline(directory, pipeline_dict(server.base_url, RESUME_ROWS))
    result = run_ddtrace("run", str(pipeline), "--out", str(directory / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    return (directory / "out" / "data.jsonl").read_bytes()


def _kill_when(proc: subprocess.Popen[str], data: Path, rows: int) -> None:
    wait_until(lambda: line_count(data) >= rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_runs_resume_to_the_rows_of_an_uninterrupted_run(
    server: MockServer, tmp_path: Path, uninterrupted: bytes
) -> None:
    """Killed at a quarter, resumed, killed again past half, resumed to the end: the final
    data.jsonl equals the uninterrupted run's, and the mock saw each row's request once — plus
    at most the requests on the wire at each kill."""
    server.reset(MockBehavior(latency_ms=2))
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, RESUME_ROWS))
    out = tmp_path / "out"
    data = out / "data.jsonl"
    first = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    _kill_when(first, data, RESUME_ROWS // 4)
    second = ddtrace("run", str(pipeline), "--out", str(out), "--quiet", "--resume")
    _kill_when(second, data, RESUME_ROWS * 3 // 5)
    third = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet", "--resume")
    assert third.returncode == 0, third.stderr
    assert "Run complete" in third.stdout and f"{RESUME_ROWS}/{RESUME_ROWS} rows" in third.stdout
    assert data.read_bytes() == uninterrupted
    assert not (out / "data.pending.jsonl").exists()  # the journal goes once all is written
    in_flight_at_kill = 4  # max_parallel_requests: requests lost with each killed process
    assert RESUME_ROWS <= server.stats().requests <= RESUME_ROWS + 2 * in_flight_at_kill
    assert sorted(p.name for p in out.glob("run*.jsonl")) == [
        "run.1.jsonl",
        "run.2.jsonl",
        "run.jsonl",
    ]
    reader = RunReader(out / "run.jsonl")
    kinds = [e.kind for e in reader]
    assert kinds.count("run_started") == 1 and kinds.count("resumed") == 2
    assert kinds[-1] == "run_finished"
    health = CliRunner().invoke(cli, ["health", str(out / "run.jsonl"), "--json"])
    assert health.exit_code == 0, health.output
    totals = json.loads(health.output)["totals"]
    assert totals["rows_completed"] == RESUME_ROWS and totals["rows_dropped"] == 0
    assert totals["row_groups_finished"] == totals["row_groups_total"]
    assert totals["resumes"] == 2 and totals["stopped_s"] > 0


def test_a_stopped_run_resumed_is_explained_as_one_run_with_nothing_dropped(
    server: MockServer, tmp_path: Path
) -> None:
    """SIGTERM cancels the rows in flight (``row_dropped`` cancelled, their row group
    abandoned); the resume generates them again. Health counts the run as a whole: no drops,
    each row group once, the stop named and not taken for a stall of the endpoint."""
    server.reset(MockBehavior(latency_ms=40))
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, 200))
    out = tmp_path / "out"
    first = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    wait_until(lambda: line_count(out / "data.jsonl") >= 20, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 1
    stopped = CliRunner().invoke(cli, ["health", str(out / "run.jsonl"), "--json"])
    dropped_at_stop = json.loads(stopped.output)["totals"]["drops_by_reason"]
    assert dropped_at_stop.get("cancelled", 0) > 0  # the case under test: drops at the stop
    time.sleep(1.5)  # stopped for a while: not a stall
    second = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet", "--resume")
    assert second.returncode == 0, second.stderr
    health = CliRunner().invoke(cli, ["health", str(out / "run.jsonl"), "--json"])
    assert health.exit_code == 0, health.output
    report = json.loads(health.output)
    totals = report["totals"]
    assert (totals["state"], totals["outcome"]) == ("finished", "complete")
    assert (totals["rows_completed"], totals["rows_dropped"]) == (200, 0)
    assert totals["drops_by_reason"] == {} and totals["drop_examples"] == []
    assert totals["row_groups_finished"] == totals["row_groups_total"]
    assert totals["resumes"] == 1 and totals["stopped_s"] >= 1.5
    assert report["scheduler"]["longest_no_progress"]["duration_s"] < 1.5
    text = CliRunner().invoke(cli, ["health", str(out / "run.jsonl")]).output
    assert "resumed once; stopped" in text and "dropped (cancelled)" not in text


def test_resume_with_a_changed_pipeline_is_refused_naming_the_change(
    server: MockServer, tmp_path: Path
) -> None:
    server.reset(MockBehavior(latency_ms=2))
    data_dict = pipeline_dict(server.base_url, 300)
    pipeline = write_pipeline(tmp_path, data_dict)
    out = tmp_path / "out"
    first = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    _kill_when(first, out / "data.jsonl", 50)
    before = (out / "data.jsonl").read_bytes()
    data_dict["run"]["seed"] = 7
    data_dict["columns"][2]["prompt"] = "{{ n }} {{ topic }}"
    changed = write_pipeline(tmp_path, data_dict, "changed.yaml")
    result = run_ddtrace("run", str(changed), "--out", str(out), "--resume")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ConfigError: --resume: the pipeline differs")
    assert "columns.summary changed" in line and "run.seed: 0 -> 7" in line
    assert (out / "data.jsonl").read_bytes() == before


def test_resume_of_a_completed_run_is_refused(server: MockServer, tmp_path: Path) -> None:
    server.reset(MockBehavior())
    pipeline = write_pipeline(tmp_path, pipeline_dict(server.base_url, 20))
    out = tmp_path / "out"
    assert run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet").returncode == 0
    result = run_ddtrace("run", str(pipeline), "--out", str(out), "--resume")
    assert result.returncode == 2
    assert "already completed" in result.stderr
