"""Request-admission scenarios against the real mock endpoint: SCENARIOS.md S1–S3 and issue 11's
rate-limit acceptance list (transient outages, quotas, sustained refusals, a 503 storm).

    .venv/bin/python benchmarks/bench_admission.py                  # all of them (several minutes)
    .venv/bin/python benchmarks/bench_admission.py --scenario quota  # one (see --help)

The mock runs in a subprocess (its own core and GIL); the engine runs here over real HTTP on
127.0.0.1, recording to a temporary run.jsonl that ``ddtrace health`` then judges. Each scenario
prints its figures and one JSON line (prefixed ``JSON ``). Wall times depend on a shared, noisy
machine; the outcomes (rows, drops, breaker, verdict) do not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus, ListSink
from ddscope.exporters.health import analyze
from ddscope.mock import MockServerProcess
from ddscope.record.jsonl import JsonlRecorder

Result = dict[str, Any]


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
    cpu_s: float
    rows_written: int
    verdict: str
    reasons: list[str]
    ended_at_unix: float


def run(pipeline: Pipeline, deadline_s: float) -> Outcome:
    """Runs to the end with a real run.jsonl, then asks ``ddtrace health`` for its verdict."""
    sink, writer = ListSink(), DiscardingRowWriter()
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "run.jsonl"
        bus = EventBus([sink, JsonlRecorder(record)])
        started, cpu = time.perf_counter(), time.process_time()
        summary = asyncio.run(
            asyncio.wait_for(run_pipeline(pipeline, bus=bus, output=writer), timeout=deadline_s)
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        ended = time.time()
        report = analyze(record)
    return Outcome(
        summary, sink.events, wall, cpu, writer.rows_written, report.verdict, report.reasons, ended
    )


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


def figures(name: str, out: Outcome, records: int) -> Result:
    """The figures every scenario reports."""
    attempts = [e for e in out.events if e.kind == "attempt_finished"]
    refused = sum(1 for e in attempts if e.outcome == "rate_limited")
    opened = [e for e in out.events if e.kind == "breaker" and e.state == "open"]
    s = out.summary
    return {
        "scenario": name,
        "outcome": s.outcome,
        "reason": s.reason,
        "rows_completed": f"{s.rows_completed}/{records}",
        "rows_dropped": s.rows_dropped,
        "drops_by_reason": dict(s.drops_by_reason),
        "wall_s": round(out.wall_s, 1),
        "engine_cpu_s": round(out.cpu_s, 2),
        "attempts": len(attempts),
        "refused_429": refused,
        "refused_share": round(refused / len(attempts), 3) if attempts else 0.0,
        "breaker_opened_at_s": round(opened[0].t_ns / 1e9, 1) if opened else None,
        "salvage_rounds": count(out.events, "salvage_started"),
        "longest_silence_s": round(longest_silence_s(out.events), 1),
        "health": out.verdict,
        "health_reasons": out.reasons,
    }


def scenario(
    name: str, knobs: dict[str, Any], *, records: int = 40, deadline_s: float = 600, **run_kw: Any
) -> tuple[Result, Outcome]:
    """chain-3 (``records``, row groups of 10, 4 parallel unless given) against ``knobs``."""
    run_kw = {"buffer_size": 10, "max_parallel": 4, **run_kw}
    with MockServerProcess(**knobs) as mock:
        out = run(chain3(mock.base_url, records=records, **run_kw), deadline_s)
    return figures(name, out, records), out


# -- SCENARIOS.md S1–S3 -------------------------------------------------------------------------


def s1(policy: str, parallel: int = 4) -> Result:
    """Saturated endpoint: 9 of 10 requests get 429 with Retry-After: 5."""
    knobs: dict[str, Any] = dict(rate_limit_k=9, rate_limit_n=10, retry_after="5")
    if policy == "wait":
        knobs["rate_limit_for_s"] = 25.0  # the endpoint recovers, so the patient run can finish
    elif policy == "wait-long":  # saturated for longer than a bounded retry budget would last
        knobs.update(retry_after="1", rate_limit_for_s=60.0)
        policy = "wait"
    result, out = scenario(
        f"S1 ({policy}, 15 records, {parallel} parallel)",
        knobs,
        records=15,
        buffer_size=15,
        max_parallel=parallel,
        breaker_policy=policy,
        deadline_s=180,
    )
    shutdown = next((e for e in out.events if e.kind == "shutdown"), None)
    result["shutdown_names_domain"] = bool(
        shutdown and shutdown.domain == "mock/mock-model" and "mock-model" in shutdown.message
    )
    result["message"] = out.summary.message
    return result


def s2() -> Result:
    """Admission pressure on a healthy endpoint: few slots, many row groups, 1 s acquire timeout."""
    records, parallel, latency_ms = 128, 4, 35.0
    result, out = scenario(
        "S2",
        dict(latency_ms=latency_ms, jitter_ms=15.0),
        records=records,
        buffer_size=16,
        max_parallel=parallel,
        acquire_timeout_s=1.0,
        row_groups_in_flight=4,
        deadline_s=300,
    )
    ideal = result["attempts"] * latency_ms / 1000 / parallel
    result["admission_timeouts"] = count(out.events, "wait_finished", outcome="timeout")
    result.update(ideal_s=round(ideal, 2), wall_over_ideal=round(out.wall_s / ideal, 2))
    return result


def s3(ramp_s: float) -> Result:
    """Cold endpoint: capacity ramps 1 → 16 over 5 s; beyond it 429 with Retry-After: 1."""
    result, out = scenario(
        f"S3 (client ramp {ramp_s:g} s)",
        dict(capacity=16, ramp_s=5.0, capacity_retry_after="1", latency_ms=50.0),
        records=400,
        buffer_size=50,
        max_parallel=16,
        ramp_s=ramp_s,
        deadline_s=300,
    )
    limited = [e.t_ns for e in out.events if e.kind == "attempt_finished" and e.outcome != "ok"]
    result["last_429_at_s"] = round(max(limited, default=0) / 1e9, 2)
    result["limit_decreases"] = count(out.events, "limit_changed", reason="decrease")
    return result


# -- issue 11: rate limits ------------------------------------------------------------------------


def outage(kind: str) -> Result:
    """Transient refusals the run must sit out: every row, exit 0, breaker closed."""
    if kind == "start":  # 100 % 429 for the first 8 s, Retry-After 1
        knobs = dict(rate_limit_k=10, rate_limit_n=10, retry_after="1", rate_limit_for_s=8.0)
        knobs["latency_ms"] = 20.0
    elif kind == "middle":  # 15 s of 429s from 3 s in (Retry-After 1), 200 ms answers around it
        knobs = dict(outage_from_s=3.0, outage_until_s=18.0, outage_retry_after="1")
        knobs["latency_ms"] = 200.0
    else:  # a 0.5 s burst answered "Retry-After: 0"
        knobs = dict(rate_limit_k=10, rate_limit_n=10, retry_after="0", rate_limit_for_s=0.5)
        knobs["latency_ms"] = 20.0
    result, _ = scenario(f"outage ({kind})", knobs)
    return result


def quota() -> Result:
    """A hosted-API quota: token bucket of 4 requests/s, burst 4, with x-ratelimit-* headers;
    120 requests = 30 s at the quota. 8 parallel, so the budget, not the width, must pace it."""
    result, out = scenario(
        "quota (4 req/s, burst 4, 8 parallel)",
        dict(quota_rate=4.0, quota_burst=4, latency_ms=20.0),
        max_parallel=8,
    )
    quota_bound_s = result["attempts"] / 4.0 - 1.0  # the burst's 4 are free at t = 0
    pauses = [e for e in out.events if e.kind == "cooldown_started" and e.cause == "quota"]
    result.update(
        quota_bound_s=round(quota_bound_s, 1),
        wall_over_quota_bound=round(out.wall_s / max(quota_bound_s, 1e-9), 2),
        quota_pauses=len(pauses),
    )
    return result


def window() -> Result:
    """A gateway's budget per calendar minute (100 requests), counted down with no reset header,
    then 429s without Retry-After until the minute rolls over; 120 requests need two windows."""
    result, out = scenario(
        "per-minute window (100/min)", dict(window_requests=100, window_s=60.0, latency_ms=20.0)
    )
    rollover = math.floor(out.ended_at_unix / 60.0) * 60.0
    result["s_after_last_rollover"] = round(out.ended_at_unix - rollover, 1)
    return result


def sustained(share: int, policy: str) -> Result:
    """Sustained refusals by arrival pattern: ``share`` of every 10 answered 429."""
    retry_after, records = ("1", 40) if share <= 3 else ("2", 10)
    result, _ = scenario(
        f"sustained {share * 10} % 429 (Retry-After {retry_after}, {policy})",
        dict(rate_limit_k=share, rate_limit_n=10, retry_after=retry_after, latency_ms=20.0),
        records=records,
        max_parallel=8,
        breaker_policy=policy,
    )
    return result


def storm() -> Result:
    """The first 30 requests answer 503 (every other one with Retry-After 1)."""
    result, out = scenario(
        "503 storm (first 30)",
        dict(error_burst=30, error_burst_retry_after="1", latency_ms=20.0),
    )
    backoffs = [e.backoff_s for e in out.events if e.kind == "attempt_finished" and e.backoff_s]
    statuses = Counter(e.status_code for e in out.events if e.kind == "attempt_finished")
    result.update(
        answered_503=statuses.get(503, 0),
        backoffs=len(backoffs),
        backoff_total_s=round(sum(backoffs), 2),
        backoff_max_s=round(max(backoffs, default=0.0), 2),
    )
    return result


SCENARIOS: dict[str, Callable[[], Result | list[Result]]] = {
    "s1": lambda: s1("fail_fast"),
    "s1-16": lambda: s1("fail_fast", parallel=16),
    "s1-wait": lambda: s1("wait"),
    "s1-wait-long": lambda: s1("wait-long"),
    "s2": s2,
    "s3": lambda: [s3(5.0), s3(0.0)],
    "outage-start": lambda: outage("start"),
    "outage-middle": lambda: outage("middle"),
    "burst-retry-after-0": lambda: outage("burst"),
    "quota": quota,
    "window": window,
    "sustained-30": lambda: sustained(3, "fail_fast"),
    "sustained-70": lambda: [sustained(7, "wait"), sustained(7, "fail_fast")],
    "storm": storm,
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
            print("JSON " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
