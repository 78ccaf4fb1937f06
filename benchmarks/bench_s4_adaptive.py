"""S4 — narrow frontier: adaptive row groups against fixed row-groups-in-flight.

A root sampler column, then a chain of LLM columns; 8-row groups, many groups, 16 parallel
requests, a 10 ms mock endpoint over real HTTP. For fixed 1, 2, 4, 8 row groups in flight and
adaptive, it prints (medians of ``--repeats`` runs):

* model-slot utilization: time-weighted requests in flight ÷ the domain's limit, from the events;
* the idle split: idle slot-time while ready model work was waiting for a slot ("ready work
  waiting") versus while there was no ready model work ("no ready work"), as shares of all
  slot-time (utilization + both idle shares = 100 %);
* wall time, and the ideal (requests × latency ÷ parallel).

A model task is *ready* once the cells it reads are done (a model dependency: its lease finished
ok; a sampler or expression: computed inline when its inputs are); it *waits* from then until its
first attempt starts. Ends with one JSON line. Usage::

    .venv/bin/python benchmarks/bench_s4_adaptive.py [--records 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import defaultdict
from typing import Any

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus, ListSink, RunHeader
from ddscope.mock.server import MockServer

SETTINGS: list[int | str] = [1, 2, 4, 8, "adaptive"]
LLM_COLUMNS = 4
PARALLEL = 16
LATENCY_MS = 10.0
BUFFER = 8


def pipeline(endpoint: str, records: int, in_flight: int | str) -> Pipeline:
    columns: list[dict[str, Any]] = [
        {"name": "c0", "type": "sampler", "sampler": "category", "values": ["a", "b", "c"]}
    ]
    for i in range(1, LLM_COLUMNS + 1):
        columns.append(
            {
                "name": f"c{i}",
                "type": "llm_text",
                "model": "m",
                "prompt": f"step {i}: {{{{ c{i - 1} }}}}",
            }
        )
    return Pipeline.from_dict(
        {
            "name": "s4-narrow-frontier",
            "providers": [{"name": "mock", "endpoint": endpoint}],
            "models": [
                {
                    "alias": "m",
                    "provider": "mock",
                    "model": "mock-model",
                    "max_parallel_requests": PARALLEL,
                }
            ],
            "columns": columns,
            "run": {
                "num_records": records,
                "buffer_size": BUFFER,
                "row_groups_in_flight": in_flight,
                "max_row_groups_in_flight": 8,
            },
        }
    )


def ready_times(header: RunHeader, events: list[dict[str, Any]]) -> dict[str, int]:
    """task_id → t_ns when the task's inputs were all done (see the module docstring)."""
    deps = {c.name: c.depends_on for c in header.columns}
    is_model = {c.name: c.domain is not None for c in header.columns}
    group_start: dict[int, int] = {}
    done: dict[str, int] = {}  # model task_id → lease finished ok
    for e in events:
        if e["kind"] == "row_group_started":
            group_start[e["row_group"]] = e["t_ns"]
        elif e["kind"] == "lease_finished" and e["outcome"] == "ok":
            done[e["task_id"]] = e["t_ns"]

    def cell_done(column: str, row: int, group: int) -> int | None:
        if is_model[column]:
            return done.get(f"{column}:{row}")
        times = [cell_done(d, row, group) for d in deps[column]]
        if any(t is None for t in times):
            return None
        return max([group_start[group], *times])  # type: ignore[list-item]

    ready: dict[str, int] = {}
    for e in events:
        if e["kind"] == "lease_started" and e["task_id"] not in ready:
            inputs = [cell_done(d, e["row"], e["row_group"]) for d in deps[e["column"]]]
            known = [t for t in inputs if t is not None]
            ready[e["task_id"]] = max([group_start[e["row_group"]], *known])
    return ready


def analyse(header: RunHeader, events: list[dict[str, Any]]) -> dict[str, float]:
    """Utilization and the idle split, as shares of slot-time over the run."""
    limit = header.domains[0].max_parallel_requests
    ready = ready_times(header, events)
    first_attempt: dict[str, int] = {}
    changes: list[tuple[int, str, int]] = []  # (t_ns, what, delta)
    for e in events:
        if e["kind"] == "attempt_started":
            changes.append((e["t_ns"], "in_flight", 1))
            first_attempt.setdefault(e["task_id"], e["t_ns"])
        elif e["kind"] == "attempt_finished":
            changes.append((e["t_ns"], "in_flight", -1))
        elif e["kind"] == "limit_changed":
            changes.append((e["t_ns"], "limit", e["new"] - e["old"]))
    for task_id, t_ready in ready.items():
        changes.append((t_ready, "waiting", 1))
        changes.append((first_attempt.get(task_id, t_ready), "waiting", -1))
    start = next(e["t_ns"] for e in events if e["kind"] == "run_started")
    end = next(e["t_ns"] for e in events if e["kind"] == "run_finished")
    return _integrate(sorted(changes), start, end, limit)


def _integrate(
    changes: list[tuple[int, str, int]], start: int, end: int, limit: int
) -> dict[str, float]:
    level: dict[str, int] = defaultdict(int)
    level["limit"] = limit
    busy = waiting_idle = empty_idle = capacity = 0.0
    t_prev = start
    for t, what, delta in [*changes, (end, "end", 0)]:
        dt = max(0, min(t, end) - t_prev)
        idle = max(0, level["limit"] - level["in_flight"])
        busy += dt * min(level["in_flight"], level["limit"])
        waiting_idle += dt * min(idle, level["waiting"])
        empty_idle += dt * (idle - min(idle, level["waiting"]))
        capacity += dt * level["limit"]
        t_prev = max(t_prev, min(t, end))
        level[what] += delta
    capacity = capacity or 1.0
    return {
        "utilization": busy / capacity,
        "idle_ready_waiting": waiting_idle / capacity,
        "idle_no_ready_work": empty_idle / capacity,
    }


async def one_run(endpoint: str, records: int, in_flight: int | str) -> dict[str, float]:
    sink = ListSink()
    started = time.perf_counter()
    summary = await run_pipeline(
        pipeline(endpoint, records, in_flight), bus=EventBus([sink]), output=DiscardingRowWriter()
    )
    wall = time.perf_counter() - started
    assert summary.outcome == "complete" and summary.rows_completed == records, summary
    assert sink.header is not None
    figures = analyse(sink.header, [e.model_dump() for e in sink.events])
    return {
        **figures,
        "wall_s": wall,
        "requests": summary.requests,
        "peak_row_groups": _peak_row_groups(sink),
    }


def _peak_row_groups(sink: ListSink) -> int:
    """Most row groups admitted and not yet checkpointed at once."""
    level = peak = 0
    for event in sink.events:
        level += {"row_group_started": 1, "row_group_finished": -1}.get(event.kind, 0)
        peak = max(peak, level)
    return peak


def measure(records: int, repeats: int) -> dict[str, dict[str, float]]:
    """Median figures per setting, all against one mock endpoint."""
    results: dict[str, dict[str, float]] = {}
    with MockServer(latency_ms=LATENCY_MS) as srv:
        asyncio.run(one_run(srv.base_url, 16, "adaptive"))  # warm-up: connections, imports
        for setting in SETTINGS:
            runs = [asyncio.run(one_run(srv.base_url, records, setting)) for _ in range(repeats)]
            results[str(setting)] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return results


def report(results: dict[str, dict[str, float]], records: int, repeats: int) -> None:
    ideal = records * LLM_COLUMNS * LATENCY_MS / 1000 / PARALLEL
    print(
        f"S4 narrow frontier: {records} records, {BUFFER}-row groups, 1 sampler + "
        f"{LLM_COLUMNS} chained LLM columns, {PARALLEL} parallel, {LATENCY_MS:g} ms mock; "
        f"medians of {repeats}; ideal wall {ideal:.2f} s"
    )
    print(
        f"{'row groups':>12} {'util':>7} {'idle: ready waiting':>20} {'idle: no ready work':>20}"
        f" {'wall s':>8} {'peak groups':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:>12} {r['utilization']:7.1%} {r['idle_ready_waiting']:20.1%} "
            f"{r['idle_no_ready_work']:20.1%} {r['wall_s']:8.2f} {r['peak_row_groups']:12g}"
        )
    best_fixed = max(v["utilization"] for k, v in results.items() if k != "adaptive")
    adaptive = results["adaptive"]["utilization"]
    print(
        f"adaptive {adaptive:.1%} vs best fixed {best_fixed:.1%} (goal: >= 75 %, within 10 points)"
    )
    summary = {"scenario": "S4", "records": records, "repeats": repeats, "ideal_wall_s": ideal}
    print(
        json.dumps(
            {**summary, "results": results, "adaptive_minus_best_fixed": adaptive - best_fixed}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.records, args.repeats), args.records, args.repeats)


if __name__ == "__main__":
    main()
