"""The engine's own CPU per cell, without HTTP: S5's chain-3 with a client that answers after a
1 ms sleep, so scheduling, request admission and events are all that is measured.

S5 (``bench_s5_overhead.py``) moves by ±5 % between runs on a shared machine, more than most
changes to the engine's hot path are worth; this one is steady to about ±2 % (no sockets, no
other process), so it can tell a 3 µs change from noise. Prints the CPU per cell of each run
(``time.process_time``; the same sleeps without the engine are printed as the floor), the
median, and one JSON line. With ``--profile``, the top of a cProfile of one more run. It runs on
asyncio's own loop, not ``ddtrace run``'s uvloop: the engine's code is the same on both, and
cProfile sees asyncio's callbacks as Python frames. Usage::

    .venv/bin/python benchmarks/bench_engine_only.py [--records 1000] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import time
from typing import Any

from bench_s5_overhead import COLUMNS, PARALLEL, chain3

from ddscope.engine.client.answers import ChatResult
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus

SLEEP_S = 0.001
UNUSED_ENDPOINT = "http://127.0.0.1:9"  # never contacted: the client below answers


class SleepingClient:
    """A model client that answers every request after ``SLEEP_S``."""

    async def __aenter__(self) -> SleepingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def chat(self, model: str, messages: list[dict[str, Any]], **_: Any) -> ChatResult:
        await asyncio.sleep(SLEEP_S)
        return ChatResult("out", 3, 5, model, 200)


def run_once(records: int) -> float:
    """CPU seconds of one run with no sinks."""
    client = SleepingClient()
    started = time.process_time()
    asyncio.run(
        run_pipeline(
            chain3(UNUSED_ENDPOINT, records),
            bus=EventBus([]),
            output=DiscardingRowWriter(),
            client_factory=lambda provider, alias: client,
        )
    )
    return time.process_time() - started


def sleeps_alone(cells: int) -> float:
    """CPU seconds of the same sleeps, PARALLEL at a time, without the engine (the floor)."""

    async def main() -> None:
        remaining = iter(range(cells))

        async def worker() -> None:
            for _ in remaining:  # the shared iterator bounds the total
                await asyncio.sleep(SLEEP_S)

        await asyncio.gather(*(worker() for _ in range(PARALLEL)))

    started = time.process_time()
    asyncio.run(main())
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cells = args.records * len(COLUMNS)
    run_once(min(args.records, 100))  # warm-up: imports, caches
    per_cell = [run_once(args.records) * 1e6 / cells for _ in range(args.repeats)]
    floor = sleeps_alone(cells) * 1e6 / cells
    median = statistics.median(per_cell)
    print(
        f"engine only: chain-3, {args.records} records, {PARALLEL} parallel, {SLEEP_S * 1e3:g} ms"
    )
    print("CPU per cell, each run: " + ", ".join(f"{v:.1f}" for v in per_cell) + " µs")
    print(f"median {median:.1f} µs per cell; the sleeps alone {floor:.1f} µs")
    line = {
        "benchmark": "bench_engine_only",
        "records": args.records,
        "repeats": args.repeats,
        "cpu_us_per_cell": round(median, 1),
        "runs_us_per_cell": [round(v, 1) for v in per_cell],
        "sleeps_alone_us_per_cell": round(floor, 1),
    }
    print("JSON " + json.dumps(line))
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run_once, args.records)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
