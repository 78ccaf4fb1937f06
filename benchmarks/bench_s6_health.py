"""S6 for ``ddtrace health``: events per second over a 1,000,000-event run record.

    .venv/bin/python benchmarks/bench_s6_health.py [--events 1000000] [--repeat 3] [--profile]

The record is a chain-3 run made by the real engine (``tests/engine_records.py``: a fake clock
and a scripted endpoint; 429s with cooldowns and AIMD decreases, deferred tasks recovered in
salvage, dropped rows), generated once (about 50 CPU s per million events) and cached under the
temp directory (ddscope-s6/, shared with the other S6 benchmarks). Prints the analysis rate
(median of ``--repeat`` runs), the bare read rate of the same file (``RunReader.iter_dicts``
alone: the floor any analysis sits on) and one JSON line. Goal (SCENARIOS.md S6): ≥ 500,000
events/s (wall). The rate per CPU second is printed too: on a shared machine it is the steadier
figure. ``--profile`` prints the top of a cProfile of one analysis.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

from ddscope.exporters.health import analyze
from ddscope.record.jsonl import RunReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from engine_records import s6_record

TARGET = 500_000


def read_rate(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in RunReader(path).iter_dicts())
    return count, count / (time.perf_counter() - start)


def analysis_rate(path: Path) -> tuple[int, float, float, str]:
    """(events, events per wall second, events per CPU second, verdict)."""
    start, cpu = time.perf_counter(), time.process_time()
    report = analyze(path)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    events = report.record.events
    return events, events / elapsed, events / cpu, report.verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    path = s6_record(args.events)
    runs = [analysis_rate(path) for _ in range(max(1, args.repeat))]
    events, verdict = runs[0][0], runs[0][3]
    rate = statistics.median(r[1] for r in runs)
    cpu_rate = statistics.median(r[2] for r in runs)
    _, bare = read_rate(path)
    print(f"record: {path} ({events:,} events, {path.stat().st_size / 1e6:.0f} MB)")
    print(
        f"ddtrace health: {rate:,.0f} events/s wall, {cpu_rate:,.0f} events per CPU-second "
        f"(median of {len(runs)}; verdict {verdict})"
    )
    print(f"bare RunReader.iter_dicts(): {bare:,.0f} events/s")
    print(f"goal ≥ {TARGET:,} events/s: {'met' if rate >= TARGET else 'NOT met'}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(analyze, path)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    print(
        json.dumps(
            {
                "benchmark": "s6_health",
                "events": events,
                "events_per_s": round(rate),
                "events_per_cpu_s": round(cpu_rate),
                "read_events_per_s": round(bare),
                "target_events_per_s": TARGET,
                "met": rate >= TARGET,
                "runs": [round(r[1]) for r in runs],
            }
        )
    )


if __name__ == "__main__":
    main()
