"""A 10 MB DataDesigner ``scheduler_events.jsonl`` read for health and for Perfetto.

    .venv/bin/python benchmarks/bench_datadesigner.py [--mb 10] [--repeat 3]

The file is synthetic but DataDesigner 0.9.5-shaped (tests/datadesigner_support.py: chain-3,
row groups of 100, a 429 deferral every 50 model tasks re-run later, health snapshots with
request_pressure and retryable_outcomes), grown to ``--mb`` megabytes, plain and gzipped, cached
in /tmp/ddscope-bench-dd. Its lines are leaner than real ones (~570 B against ~1,660 B in the
recorded fixture), so 10 MB holds about three times the events of a real 10 MB file: a
pessimistic stand-in. Each measurement runs in a fresh subprocess (imports included in neither
figure) and reports wall and CPU seconds; medians of ``--repeat``. Goal (issue 14): health and
Perfetto each read the 10 MB file in under 2 s. Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path("/tmp/ddscope-bench-dd")
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
GOAL_S = 2.0
RECORDS_PER_MB = 80  # of the spec below: ~12.6 MB per 1,000 records


def dd_file(mb: int, gz: bool) -> Path:
    path = CACHE / f"dd-{mb}mb.scheduler_events.jsonl{'.gz' if gz else ''}"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(TESTS_DIR))
        from datadesigner_support import (  # type: ignore[import-not-found,unused-ignore]
            SyntheticDD,
            synthetic_events,
            write_dd_file,
        )

        spec = SyntheticDD(records=mb * RECORDS_PER_MB, buffer_size=100, every_429=50)
        part = path.with_name(path.name + ".part")
        write_dd_file(part, synthetic_events(spec), gz=gz)
        part.rename(path)
    return path


def child(what: str, source: str) -> None:
    """One measurement in this fresh process; prints its figures as JSON."""
    from ddscope.exporters.health import analyze
    from ddscope.exporters.trace.perfetto import export_perfetto

    started, cpu = time.perf_counter(), time.process_time()
    if what == "health":
        report = analyze(source)
        events = report.record.events
    else:
        events = export_perfetto(Path(source), CACHE / "bench.pftrace").events
    figures = {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}
    print(json.dumps(figures | {"events": events}))


def measure(what: str, source: Path, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", what, str(source)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "cpu_seconds": round(statistics.median(r["cpu"] for r in runs), 3),
        "events": runs[0]["events"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results: dict[str, dict[str, float]] = {}
    with dd_file(args.mb, False).open("rb") as file:
        lines = sum(1 for _ in file)
    print(f"{lines:,} DataDesigner events in {args.mb} MB (machine shared: CPU is the steadier)")
    for gz in (False, True):
        source = dd_file(args.mb, gz)
        label = "gzip" if gz else "plain"
        size_mb = (dd_file(args.mb, False).stat().st_size) / 1e6
        for what in ("health", "perfetto"):
            figures = measure(what, source, args.repeat)
            results[f"{what}_{label}"] = figures
            print(
                f"{what:8} {label:5} {size_mb:5.1f} MB ({source.stat().st_size / 1e6:.1f} MB on "
                f"disk), {figures['events']:,} ddscope events: {figures['seconds']:.2f} s wall, "
                f"{figures['cpu_seconds']:.2f} s CPU (goal < {GOAL_S} s)"
            )
    worst = max(r["seconds"] for r in results.values())
    print(f"worst: {worst:.2f} s; goal met: {worst < GOAL_S}")
    head = {"mb": args.mb, "datadesigner_events": lines, "goal_s": GOAL_S, "worst_s": worst}
    print("JSON " + json.dumps(head | results))


if __name__ == "__main__":
    main()
