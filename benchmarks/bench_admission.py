"""Request-admission scenarios S1, S2 and S3 of SCENARIOS.md against the real mock endpoint.

    .venv/bin/python benchmarks/bench_admission.py                 # all of them
    .venv/bin/python benchmarks/bench_admission.py --scenario s2   # one: s1, s1-wait, s2, s3

The mock runs in a subprocess (its own core and GIL); the engine runs here over real HTTP on
127.0.0.1. Each scenario prints its figures and one JSON line (prefixed ``JSON ``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ddscope.engine.output import DiscardingRowWriter
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus, ListSink
from ddscope.mock import MockServerProcess


def chain3(
    endpoint: str,
    *,
    records: int,
    buffer_size: int,
    max_parallel: int,
    ramp_s: float = 0.0,
    **run: Any,
) -> Pipeline:
    """The chain-3 pipeline of SCENARIOS.md, pointed at ``endpoint``."""
    text = resources.files("ddscope").joinpath("examples/chain3.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    data["providers"][0]["endpoint"] = endpoint
    data["models"][0].update(max_parallel_requests=max_parallel, ramp_s=ramp_s, timeout_s=30)
    data["run"].update(num_records=records, buffer_size=buffer_size, **run)
    return Pipeline.from_dict(data, source="chain3 (benchmark)")


@dataclass
class Outcome:
    summary: RunSummary
    events: list[Any]
    wall_s: float
    rows_written: int


def run(pipeline: Pipeline, deadline_s: float) -> Outcome:
    sink, writer = ListSink(), DiscardingRowWriter()
    started = time.perf_counter()
    summary = asyncio.run(
        asyncio.wait_for(
            run_pipeline(pipeline, bus=EventBus([sink]), output=writer), timeout=deadline_s
        )
    )
    return Outcome(summary, sink.events, time.perf_counter() - started, writer.rows_written)


def longest_silence_s(events: list[Any]) -> float:
    """Longest gap between lines a user would see: health, checkpoints, breaker, shutdown."""
    visible = {
        "run_started",
        "health",
        "row_group_finished",
        "breaker",
        "shutdown",
        "run_finished",
        "salvage_started",
        "salvage_finished",
    }
    times = [e.t_ns for e in events if e.kind in visible]
    return max((b - a for a, b in itertools.pairwise(times)), default=0) / 1e9


def count(events: list[Any], kind: str, **fields: Any) -> int:
    return sum(
        1 for e in events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items())
    )


def s1(policy: str) -> dict[str, Any]:
    """Saturated endpoint: 9 of 10 requests get 429 with Retry-After: 5."""
    knobs: dict[str, Any] = dict(rate_limit_k=9, rate_limit_n=10, retry_after="5")
    records = 15
    if policy == "wait":
        knobs["rate_limit_for_s"] = 25.0  # the endpoint recovers, so the patient run can finish
    elif policy == "wait-long":  # saturated for longer than a bounded retry budget would last
        knobs.update(retry_after="1", rate_limit_for_s=60.0)
        policy = "wait"
    with MockServerProcess(**knobs) as mock:
        out = run(
            chain3(
                mock.base_url,
                records=records,
                buffer_size=15,
                max_parallel=4,
                breaker_policy=policy,
            ),
            deadline_s=180,
        )
    shutdown = next((e for e in out.events if e.kind == "shutdown"), None)
    opened = [e for e in out.events if e.kind == "breaker" and e.state == "open"]
    return {
        "scenario": f"S1 ({policy}, {records} records)",
        "outcome": out.summary.outcome,
        "reason": out.summary.reason,
        "message": out.summary.message,
        "seconds_to_end": round(out.wall_s, 1),
        "seconds_to_breaker_open": round(opened[0].t_ns / 1e9, 1) if opened else None,
        "shutdown_names_domain": bool(
            shutdown and shutdown.domain == "mock/mock-model" and "mock-model" in shutdown.message
        ),
        "rows_completed": out.summary.rows_completed,
        "rows_written": out.rows_written,
        "longest_silence_s": round(longest_silence_s(out.events), 1),
        "requests": count(out.events, "attempt_started"),
        "rate_limited": count(out.events, "attempt_finished", outcome="rate_limited"),
    }


def s2() -> dict[str, Any]:
    """Admission pressure on a healthy endpoint: few slots, many row groups, 1 s acquire timeout."""
    records, parallel, latency_ms = 128, 4, 35.0
    with MockServerProcess(latency_ms=latency_ms, jitter_ms=15.0) as mock:
        out = run(
            chain3(
                mock.base_url,
                records=records,
                buffer_size=16,
                max_parallel=parallel,
                acquire_timeout_s=1.0,
                row_groups_in_flight=4,
            ),
            deadline_s=300,
        )
    requests = count(out.events, "attempt_started")
    ideal = requests * latency_ms / 1000 / parallel
    return {
        "scenario": "S2",
        "rows_completed": out.summary.rows_completed,
        "rows_dropped": out.summary.rows_dropped,
        "admission_timeouts": count(out.events, "wait_finished", outcome="timeout"),
        "requests": requests,
        "wall_s": round(out.wall_s, 2),
        "ideal_s": round(ideal, 2),
        "wall_over_ideal": round(out.wall_s / ideal, 2),
    }


def s3(ramp_s: float) -> dict[str, Any]:
    """Cold endpoint: capacity ramps 1 → 16 over 5 s; beyond it 429 with Retry-After: 1."""
    with MockServerProcess(
        capacity=16, ramp_s=5.0, capacity_retry_after="1", latency_ms=50.0
    ) as mock:
        out = run(
            chain3(mock.base_url, records=400, buffer_size=50, max_parallel=16, ramp_s=ramp_s),
            deadline_s=300,
        )
    limited = [
        e for e in out.events if e.kind == "attempt_finished" and e.outcome == "rate_limited"
    ]
    last_429 = max((e.t_ns for e in limited), default=0) / 1e9
    return {
        "scenario": f"S3 (client ramp {ramp_s:g} s)",
        "rows_completed": out.summary.rows_completed,
        "rows_dropped": out.summary.rows_dropped,
        "rate_limited": len(limited),
        "breaker_opened": count(out.events, "breaker", state="open"),
        "last_429_at_s": round(last_429, 2),
        "wall_s": round(out.wall_s, 2),
        "limit_decreases": count(out.events, "limit_changed", reason="decrease"),
    }


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "s1": lambda: s1("fail_fast"),
    "s1-wait": lambda: s1("wait"),
    "s1-wait-long": lambda: s1("wait-long"),
    "s2": s2,
    "s3": lambda: [s3(5.0), s3(0.0)],  # type: ignore[dict-item,return-value]
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in names:
        results = SCENARIOS[name]()
        for result in results if isinstance(results, list) else [results]:
            print(f"--- {result['scenario']}")
            for key, value in result.items():
                print(f"  {key:28} {value}")
            print("JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
