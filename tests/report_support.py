"""Shared by the report and trace-processor tests (not a test module): records of REAL runs —
``ddtrace demo`` against the built-in mock endpoint on 127.0.0.1 — made once per test session
and reused (the saturated one takes ~20 s: the breaker waits for 20 s of refusals)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from click.testing import CliRunner

from ddscope.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
# Screenshots and other files a person may want to look at after a run (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("DDSCOPE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SCENARIO_ROWS = {"healthy": 24, "rate-limited": 12, "saturated": 5}


@functools.cache
def _session_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ddscope-report-tests-"))


@functools.cache
def demo_record(scenario: str) -> Path:
    """``ddtrace demo --scenario SCENARIO``'s run.jsonl (made once per session). Call it from
    the main thread with no event loop running (the engine sets signal handlers): not inside
    playwright's sync API."""
    out = _session_dir() / scenario
    args = ["demo", "--scenario", scenario, "-n", str(SCENARIO_ROWS[scenario]), "-q"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code in (0, 1), result.output  # saturated ends with exit code 1
    record = out / "run.jsonl"
    assert record.exists(), result.output
    return record


def cut_record(source: Path, target: Path) -> Path:
    """``source`` cut in the middle of a line two thirds in, as a killed writer leaves it."""
    lines = source.read_bytes().splitlines(keepends=True)
    keep = len(lines) * 2 // 3
    partial = lines[keep][: len(lines[keep]) // 2]
    target.write_bytes(b"".join(lines[:keep]) + partial)
    return target


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
