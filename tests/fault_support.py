"""Helpers of the fault tests: a pipeline file against a mock endpoint, and `ddtrace` as a real
subprocess (signals, locks and kills need a process of their own)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEADLINE_S = 60.0


def pipeline_dict(endpoint: str, records: int, **run: Any) -> dict[str, Any]:
    """A sampler pair and one llm_text column: one request per row when healthy."""
    return {
        "name": "faults",
        "providers": [{"name": "mock", "endpoint": endpoint}],
        "models": [
            {
                "alias": "m",
                "provider": "mock",
                "model": "mock-model",
                "max_parallel_requests": 4,
                "timeout_s": 5,
            }
        ],
        "columns": [
            {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b", "c"]},
            {"name": "n", "type": "sampler", "sampler": "uniform_int", "low": 0, "high": 10**6},
            {"name": "summary", "type": "llm_text", "model": "m", "prompt": "{{ topic }} {{ n }}"},
        ],
        "run": {"num_records": records, "buffer_size": 10, "health_interval_s": 0.5, **run},
    }


def write_pipeline(directory: Path, data: dict[str, Any], name: str = "p.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ddtrace(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Starts ``ddtrace ARGS`` as a subprocess (its own process group is not needed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ddscope.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def run_ddtrace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = ddtrace(*args, env=env)
    stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    """Polls ``condition`` (bounded) while ``proc`` runs; fails if it ended first."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, "the run ended before the condition held"
        time.sleep(0.02)
    raise AssertionError("condition not reached before the deadline")


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, options: str, why_root: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mount_point`` with ``options`` (e.g. ``size=200k``) while inside,
    unmounted after; the test is skipped (``why_root`` says why it needs root) where mounting
    is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(why_root)
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
