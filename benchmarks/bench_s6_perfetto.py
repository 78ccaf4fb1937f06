"""S6 post-mortem at scale: ``ddtrace export --perfetto`` on records of 100k and 1M events.

    .venv/bin/python benchmarks/bench_s6_perfetto.py [--sizes 100000,1000000] [--repeat 3]

Records are made by the real engine (tests/engine_records.py: chain-3 on one domain on a fake
clock with a scripted endpoint: 429s with cooldowns and AIMD decreases, deferrals recovered in
salvage, dropped rows), generated once (about 50 CPU s per million events) and cached under the
temp directory (ddscope-s6/, shared with bench_s6_health and bench_report) by a subprocess, so
that this process stays small. Each export runs in a fresh subprocess, which reports the
export's wall and CPU time (events/s: the machine is shared, so CPU time is the steadier figure)
and its peak resident memory (``ru_maxrss`` of the child: interpreter and imports included; it
starts from this process's size at the fork). Compared: the hand-encoded writer (the default),
the writer built on the generated protobuf classes (the reference), and Chrome JSON of the same
record (size yardstick). Goals (SCENARIOS.md S6): >= 200,000 events/s and < 500 MB peak at 1M
events; trace <= half the Chrome JSON. Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"  # engine_records: the records
CACHE = Path("/tmp/ddscope-bench-s6")  # the exports' outputs
GOAL_EVENTS_PER_S = 200_000
GOAL_PEAK_MB = 500
GOAL_SIZE_RATIO = 0.5


def record_for(events: int) -> Path:
    """The cached engine-made record (``engine_records.s6_record``), made in a subprocess: this
    process stays small, and its children's ``ru_maxrss`` starts from its size at the fork."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from engine_records import s6_record; "
        "print(s6_record(int(sys.argv[2])))"
    )
    cmd = [sys.executable, "-c", code, str(TESTS_DIR), str(events)]
    lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    for line in lines[:-1]:  # the generation's figures, when it ran
        print(line)
    return Path(lines[-1])


def child(fmt: str, record: str, out: str) -> None:
    """Runs one export in this (fresh) process and prints its figures as JSON."""
    from ddscope.exporters.trace.chrome_json import export_chrome_json
    from ddscope.exporters.trace.perfetto import export_perfetto

    started, cpu_started = time.perf_counter(), time.process_time()
    if fmt == "chrome-json":
        result = export_chrome_json(Path(record), Path(out))
    else:
        result = export_perfetto(Path(record), Path(out), encoder=fmt)  # type: ignore[arg-type]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    figures = {"events": result.events, "seconds": seconds, "cpu_seconds": cpu}
    figures["bytes"] = result.bytes_written
    print(json.dumps({**figures, "peak_mb": peak_kb / 1024, "warnings": result.warnings}))


def measure(fmt: str, record: Path, repeat: int) -> dict[str, float]:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{record.stem}.{fmt}.out"
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", fmt, str(record), str(out)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out.unlink(missing_ok=True)
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    return {
        "events": runs[0]["events"],
        "seconds": seconds,
        "events_per_s": runs[0]["events"] / seconds,
        "events_per_cpu_s": runs[0]["events"] / cpu,
        "peak_mb": max(r["peak_mb"] for r in runs),
        "bytes": runs[0]["bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--child", nargs=3, metavar=("FORMAT", "RECORD", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results: dict[str, dict[str, dict[str, float]]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        record = record_for(size)
        figures = {
            "wire": measure("wire", record, args.repeat),
            "proto": measure("proto", record, 1),
            "chrome-json": measure("chrome-json", record, 1),
        }
        figures["record"] = {"bytes": record.stat().st_size}
        results[str(size)] = figures
        report(size, figures)
    print(json.dumps({"benchmark": "s6_perfetto", "results": results, "goals": goals(results)}))


def report(size: int, f: dict[str, dict[str, float]]) -> None:
    wire, proto, chrome = f["wire"], f["proto"], f["chrome-json"]
    print(f"S6 export, {wire['events']:,} events (record {f['record']['bytes'] / 1e6:.1f} MB):")
    rows = (
        ("perfetto (hand-encoded)", wire),
        ("perfetto (protobuf classes)", proto),
        ("chrome json", chrome),
    )
    for name, row in rows:
        print(
            f"  {name:28s} {row['events_per_s']:>9,.0f} events/s ({row['events_per_cpu_s']:>9,.0f}"
            f" per CPU s)  {row['seconds']:6.2f} s  peak {row['peak_mb']:6.1f} MB  "
            f"{row['bytes'] / 1e6:7.1f} MB"
        )
    print(f"  trace / chrome json size: {wire['bytes'] / chrome['bytes']:.2f}")


def goals(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, bool]:
    largest = results[max(results, key=int)]
    wire, chrome = largest["wire"], largest["chrome-json"]
    verdict = {
        "events_per_s": wire["events_per_s"] >= GOAL_EVENTS_PER_S,
        "peak_memory": wire["peak_mb"] < GOAL_PEAK_MB,
        "size_vs_chrome_json": wire["bytes"] <= GOAL_SIZE_RATIO * chrome["bytes"],
    }
    for name, ok in verdict.items():
        print(f"goal {name}: {'met' if ok else 'NOT met'} (at {wire['events']:,} events)")
    return verdict


if __name__ == "__main__":
    main()
