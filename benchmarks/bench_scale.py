"""Scale: many records at high concurrency — wall time against the ideal, and flat memory.

chain-3 (S5's pipeline), 10,000 records (30,000 requests), 128 parallel requests, against the
mock endpoint in a child process with 200 ms latency. The ideal is requests × latency ÷
parallel (46.9 s). Variants, one after the other:

* ``no_sinks`` — ddscope with an empty event bus;
* ``full``     — run.jsonl + OtelSink over OTLP/gRPC (``build_otel_sink``) to a receiver in
  another child process, whose span count is printed beside the expected one.

Memory: this process's resident set (``/proc/self/statm``) is sampled every second; printed at
10 %, 50 % and 100 % of the run's requests, with the growth from 10 % to the end (flat memory:
what a run holds does not grow with the records done). CPU is ``time.process_time`` (this
process, all threads). The engine runs on the loop ``ddtrace run`` uses (``event_loop.run``:
uvloop where installed; ``DDSCOPE_EVENT_LOOP=asyncio`` for asyncio's own). Usage::

    .venv/bin/python benchmarks/bench_scale.py [--records 10000] [--variants no_sinks,full]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_s5_overhead import COLUMNS, chain3, expected_spans, start_receiver, stop_receiver

from ddscope.engine import event_loop
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import Event, EventBus, EventSink, RunHeader
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.mock import MockBehavior, MockServerProcess
from ddscope.record.jsonl import JsonlRecorder

PARALLEL = 128
LATENCY_MS = 200.0
SAMPLE_S = 1.0
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 1e6


class ProgressMemory:
    """An event sink that notes the resident set each second, against attempts finished."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float]] = []  # (attempts finished, RSS MB)
        self._attempts = 0
        self._next = 0.0

    def open(self, header: RunHeader) -> None:
        self.samples.append((0, rss_mb()))

    def handle(self, event: Event) -> None:
        if event.kind == "attempt_finished":
            self._attempts += 1
            now = time.monotonic()
            if now >= self._next:
                self._next = now + SAMPLE_S
                self.samples.append((self._attempts, rss_mb()))

    def close(self) -> None:
        self.samples.append((self._attempts, rss_mb()))

    def at(self, share: float) -> float:
        """RSS at the first sample with at least ``share`` of the attempts done."""
        total = self.samples[-1][0] or 1
        return next(mb for done, mb in self.samples if done >= share * total)


def run_variant(name: str, url: str, records: int, workdir: Path, otlp: str) -> dict[str, Any]:
    memory = ProgressMemory()
    sinks: list[EventSink] = [memory]
    finish: Any = list
    record = workdir / f"{name}.jsonl"
    if name == "full":
        otel, finish = build_otel_sink(otlp, "grpc", None)
        assert otel is not None
        sinks += [JsonlRecorder(record), otel]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    pipeline = chain3(url, records, parallel=PARALLEL)
    event_loop.run(run_pipeline(pipeline, bus=EventBus(sinks), output=DiscardingRowWriter()))
    warnings = finish()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    requests = memory.samples[-1][0]
    out = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_request": round(cpu * 1e6 / max(requests, 1), 1),
        "requests": requests,
        "rss_mb_at_10pct": round(memory.at(0.1), 1),
        "rss_mb_at_50pct": round(memory.at(0.5), 1),
        "rss_mb_at_end": round(memory.at(1.0), 1),
        "warnings": warnings,
    }
    out["rss_growth_mb_10pct_to_end"] = round(out["rss_mb_at_end"] - out["rss_mb_at_10pct"], 1)
    if record.exists():
        out["expected_spans"] = expected_spans(record)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--variants", default="no_sinks,full")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    ideal = args.records * len(COLUMNS) * LATENCY_MS / 1000 / PARALLEL
    receiver, otlp = start_receiver()
    results: dict[str, dict[str, Any]] = {}
    try:
        with (
            MockServerProcess(MockBehavior(latency_ms=LATENCY_MS)) as server,
            tempfile.TemporaryDirectory() as tmp,
        ):
            for name in variants:
                results[name] = run_variant(name, server.base_url, args.records, Path(tmp), otlp)
                r = results[name]
                print(f"  {name:9s} wall {r['wall_s']:6.2f} s  CPU {r['cpu_s']:6.2f} s", flush=True)
    finally:
        received = stop_receiver(receiver)
    print(f"\nscale: chain-3, {args.records} records, {PARALLEL} parallel, {LATENCY_MS:g} ms")
    loop, _ = event_loop.chosen_loop()
    print(f"ideal {ideal:.2f} s (requests × latency ÷ parallel); ddscope on {loop}")
    for name, r in results.items():
        print(
            f"{name:9s} wall {r['wall_s']:6.2f} s = {r['wall_s'] / ideal:.3f}× ideal (goal ≤ 1.05)"
            f"  CPU {r['cpu_s']:6.2f} s ({r['cpu_us_per_request']:.0f} µs/request)"
        )
        print(
            f"{'':9s} RSS {r['rss_mb_at_10pct']:.0f} MB at 10 %, {r['rss_mb_at_50pct']:.0f} MB at"
            f" 50 %, {r['rss_mb_at_end']:.0f} MB at the end"
            f" (growth {r['rss_growth_mb_10pct_to_end']:+.0f} MB)"
        )
    if "full" in results:
        expected = results["full"]["expected_spans"]
        print(f"receiver got {received.get('spans')} spans; expected {expected}")
    line = {
        "benchmark": "bench_scale",
        "records": args.records,
        "parallel": PARALLEL,
        "latency_ms": LATENCY_MS,
        "ideal_s": round(ideal, 3),
        "loop": loop,
        "variants": results,
        "received": received,
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
