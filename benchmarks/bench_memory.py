"""Peak memory of ``ddtrace run`` does not grow with the run: bounded by the row groups in flight.

    .venv/bin/python benchmarks/bench_memory.py [--records 100000] [--baseline 1000]

Three runs of the same pipeline (two samplers and one llm_text column), each ``ddtrace run`` in
a fresh process against the mock endpoint in another process (``MockServerProcess``, over
127.0.0.1), so the peak RSS measured (``os.wait4``'s ``ru_maxrss``) is the engine's alone:

* ``baseline`` — ``--baseline`` records (1,000), ``buffer_size`` 10;
* ``early_deferred`` — ``--records`` (100,000), ``buffer_size`` 10, and the mock's first 24
  answers are 503s, so tasks of the first row groups are deferred while the main pass goes on
  (before issue 12 every later group stayed in memory until the end of the main pass);
* ``big_buffer`` — ``--records``, ``buffer_size`` 100,000 (before: one 100,000-row group in
  memory at once, no output until it was done).

Goal (issue 12): both large runs within 1.5× of the baseline's peak RSS. Note: on Linux a child's
``ru_maxrss`` includes the *parent's* high-water mark when it was started by ``vfork`` + ``exec``
(as ``subprocess`` does), so this process never reads a whole file (``count_in`` streams) and
prints its own peak RSS, which must stay below the children's for their figures to mean
anything. Prints each run's peak
RSS, CPU seconds and wall seconds, the ratios, then one JSON line. Figures taken on a machine
others share are noisy in time, much less so in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ddscope.mock import MockBehavior, MockServerProcess

GOAL_RATIO = 1.5


def pipeline(endpoint: str, records: int, buffer_size: int) -> dict[str, Any]:
    return {
        "name": "bench-memory",
        "providers": [{"name": "mock", "endpoint": endpoint}],
        "models": [
            {
                "alias": "m",
                "provider": "mock",
                "model": "mock-model",
                "max_parallel_requests": 16,
                "timeout_s": 30,
            }
        ],
        "columns": [
            {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
            {"name": "n", "type": "sampler", "sampler": "uniform_int", "low": 0, "high": 10**6},
            {"name": "text", "type": "llm_text", "model": "m", "prompt": "{{ topic }} {{ n }}"},
        ],
        "run": {
            "num_records": records,
            "buffer_size": buffer_size,
            "error_rate_window": 500,  # the early 503 burst is a few dozen of 100,000
            "salvage_pause_s": 0.1,
        },
    }


def count_in(path: Path, needle: bytes) -> int:
    """Occurrences of ``needle`` (one per line), reading line by line: this process must stay
    small, or the next child's ``ru_maxrss`` would include it (see the module docstring)."""
    with path.open("rb") as handle:
        return sum(line.count(needle) for line in handle)


def measure(name: str, behavior: MockBehavior, records: int, buffer_size: int) -> dict[str, Any]:
    """Runs one case in a fresh ``ddtrace run`` process; its peak RSS, CPU and wall time."""
    with MockServerProcess(behavior) as server, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(yaml.safe_dump(pipeline(server.base_url, records, buffer_size)))
        command = [sys.executable, "-m", "ddscope.cli.main", "run", str(path)]
        command += ["--out", str(Path(tmp) / "out"), "--quiet"]
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - started
        assert proc.stdout is not None and proc.stderr is not None
        summary = proc.stdout.read().decode().splitlines()[:1]
        errors = proc.stderr.read().decode().strip()
        proc.stdout.close()
        proc.stderr.close()
        rows = count_in(Path(tmp) / "out" / "data.jsonl", b"\n")
        deferred = count_in(Path(tmp) / "out" / "run.jsonl", b'"kind":"task_deferred"')
        groups = count_in(Path(tmp) / "out" / "run.jsonl", b'"kind":"row_group_started"')
    code = os.waitstatus_to_exitcode(status)
    result = {
        "case": name,
        "records": records,
        "buffer_size": buffer_size,
        "exit_code": code,
        "rows_written": rows,
        "row_groups": groups,
        "tasks_deferred": deferred,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(wall_s, 2),
    }
    print(
        f"{name:15s} {records:>7,} records, buffer {buffer_size:>7,}: "
        f"peak RSS {result['peak_rss_mb']:6.1f} MB, CPU {result['cpu_s']:6.2f} s, "
        f"wall {result['wall_s']:6.2f} s, {rows:,} rows in {groups:,} groups, "
        f"{deferred} tasks deferred, exit {code}"
    )
    if code != 0:
        print(f"  {summary} {errors[-300:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    args = parser.parse_args()
    healthy = MockBehavior()
    base = measure("baseline", healthy, args.baseline, 10)
    deferred = measure("early_deferred", MockBehavior(error_burst=24), args.records, 10)
    big = measure("big_buffer", healthy, args.records, 100_000)
    ratios = {
        case["case"]: round(case["peak_rss_mb"] / base["peak_rss_mb"], 2)
        for case in (deferred, big)
    }
    within = all(r <= GOAL_RATIO for r in ratios.values())
    verdict = "met" if within else "NOT met"
    own_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"this process's own peak RSS: {own_mb} MB (must be below the children's)")
    print(
        f"peak RSS vs baseline: early_deferred {ratios['early_deferred']}x, "
        f"big_buffer {ratios['big_buffer']}x (goal <= {GOAL_RATIO}x: {verdict})"
    )
    print(
        "JSON " + json.dumps({"runs": [base, deferred, big], "ratios": ratios, "goal_met": within})
    )


if __name__ == "__main__":
    main()
