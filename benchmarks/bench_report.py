"""``ddtrace report``: size and build time of the HTML report for 100k and 1M-event records.

    .venv/bin/python benchmarks/bench_report.py [--sizes 100000,1000000] [--repeat 3]

The records are chain-3 runs made by the real engine (``tests/engine_records.py``: a fake clock
and a scripted endpoint; 429s with cooldowns and AIMD decreases, deferred tasks recovered in
salvage, dropped rows), generated once and cached under the temp directory (ddscope-s6/, shared
with the S6 benchmarks). Each build runs in a fresh child process (which does not import the
engine), so its peak memory (ru_maxrss) is the build's own; the child's memory after its imports
is printed beside it, so "flat" can be read off: the peak should not grow with the record.
Goals (issue 15): a 1,000,000-event record gives a report ≤ 3 MB, built in ≤ 10 s. CPU seconds
are printed too: on a shared machine they are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"  # engine_records: the records
GOAL_BYTES = 3_000_000
GOAL_SECONDS = 10.0


def _status_mb(key: str) -> float:
    """VmRSS / VmHWM of this process, from /proc (ru_maxrss would carry the parent's peak
    across exec, and the parent generated the record)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(record: str, out: str) -> None:
    from ddscope.exporters.report import build_report

    baseline_mb = _status_mb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    result = build_report(Path(record), Path(out))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak_mb = _status_mb("VmHWM")
    figures = {
        "events": result.events,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": result.bytes_written,
        "trace_embedded": result.trace_embedded,
        "baseline_mb": baseline_mb,
        "peak_mb": peak_mb,
    }
    print(json.dumps(figures))


def measure(record: Path, repeat: int) -> dict[str, float]:
    out = Path(tempfile.gettempdir()) / f"{record.stem}.report.html"
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", str(record), str(out)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out.unlink(missing_ok=True)
    return {
        "events": runs[0]["events"],
        "record_bytes": record.stat().st_size,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "bytes": runs[0]["bytes"],
        "trace_embedded": runs[0]["trace_embedded"],
        "baseline_mb": max(r["baseline_mb"] for r in runs),
        "peak_mb": max(r["peak_mb"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="builds per size (median)")
    parser.add_argument("--child", nargs=2, metavar=("RECORD", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(TESTS_DIR))
    from engine_records import s6_record  # here, not at the top: the children need no engine

    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        f = measure(s6_record(size), max(1, args.repeat))
        results[str(size)] = f
        print(
            f"{f['events']:>9,} events (record {f['record_bytes'] / 1e6:5.0f} MB): report "
            f"{f['bytes'] / 1e6:5.2f} MB in {f['seconds']:5.2f} s ({f['cpu_seconds']:5.2f} CPU s),"
            f" peak {f['peak_mb']:5.1f} MB (after imports {f['baseline_mb']:5.1f} MB), trace "
            f"{'embedded' if f['trace_embedded'] else 'not embedded'}"
        )
    largest = results[max(results, key=int)]
    goals = {
        "size": largest["bytes"] <= GOAL_BYTES,
        "seconds": largest["seconds"] <= GOAL_SECONDS,
    }
    print(
        f"goals for {largest['events']:,} events: ≤ 3 MB {goals['size']}, ≤ 10 s {goals['seconds']}"
    )
    print("JSON " + json.dumps({"benchmark": "report", "results": results, "goals": goals}))


if __name__ == "__main__":
    main()
