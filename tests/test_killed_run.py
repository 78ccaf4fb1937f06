"""A run killed with SIGKILL mid-way leaves a record every tool can still read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddscope.cli.main import cli
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
