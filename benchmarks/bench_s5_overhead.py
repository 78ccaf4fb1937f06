"""S5 — healthy throughput and instrument overhead (SCENARIOS.md).

chain-3, 1,000 records (3,000 requests), 32 parallel requests, against the mock endpoint in a
child process (50 ms latency). Variants, run round-robin ``--repeats`` times in one go:

* ``bare_aiohttp`` — a bare aiohttp client doing the same number of requests (the floor);
* ``no_sinks``     — ddscope with an empty event bus;
* ``record``       — ddscope writing run.jsonl;
* ``otel_memory``  — run.jsonl + OtelSink spans and metrics, on the providers ``ddtrace run``
  builds, into the SDK's in-memory exporter (BatchSpanProcessor) and metric reader;
* ``otel_otlp``    — run.jsonl + OtelSink over OTLP/gRPC (the real ``build_otel_sink`` set-up)
  to a receiver in another child process.

Prints per variant the median wall and CPU (``time.process_time``: this process, all threads —
the endpoint and the receiver run elsewhere), the ratios the goals are stated in (issue 17: no
sinks ÷ bare client ≤ 1.05 wall and ≤ 350 µs CPU per model task; full instrumentation ÷ no sinks
≤ 1.10 wall, ≤ 1.20 CPU) both as a ratio of medians and paired by round (each variant over the
no-sinks run of its own round, then the median: robust to the machine's drift over minutes), CPU
µs per task, run.jsonl bytes per task, the spans the receiver got against those the records
imply, then one ``JSON`` line. The CPU goal of full instrumentation also gets a verdict from its
rounds: a 90 % distribution-free interval for the median of the per-round ratios (the k-th
smallest to the k-th largest round) — "met" only when the whole interval is at or under 1.20,
"not met" when it is above, else "undecided". Three rounds cannot give a 90 % interval (the
smallest to the largest of three covers the median 75 % of the time); five can. Usage::

    .venv/bin/python benchmarks/bench_s5_overhead.py [--records 1000] [--repeats 3]

Where a task's CPU goes, what made it fall and what was measured and not kept (profiles, per-
thread figures, interleaved A/Bs): ``docs/PERFORMANCE.md``. In short: a no-sinks task costs
≈ 1.6–1.8× a bare aiohttp request — asyncio and sockets ≈ 37 %, aiohttp ≈ 30 %, the engine
≈ 25 % with no hot spot, ddscope's client and events the rest; full instrumentation adds
≈ 45–65 µs a task, most of it on the engine's thread (the OTel sink's batches, and the engine's
own work running colder beside the events the sinks keep), then the span export thread (OTLP
encoding, gRPC) and the record's writer thread.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import aiohttp
import orjson

from ddscope.engine import event_loop
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus, EventSink
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.exporters.otel.sink import OtelSink
from ddscope.mock import MockBehavior, MockServerProcess
from ddscope.record.jsonl import JsonlRecorder, RunReader

PARALLEL = 32
CPU_GOAL = 1.20  # issue 17: full instrumentation's CPU over no sinks
LATENCY_MS = 50.0
COLUMNS = ("summary", "analysis", "rewrite")
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


def chain3(endpoint: str, records: int, parallel: int = PARALLEL) -> Pipeline:
    columns: list[dict[str, Any]] = [
        {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b", "c"]}
    ]
    previous = "topic"
    for name in COLUMNS:
        columns.append(
            {
                "name": name,
                "type": "llm_text",
                "model": "m",
                "prompt": f"{name}: {{{{ {previous} }}}}",
            }
        )
        previous = name
    model = {
        "alias": "m",
        "provider": "mock",
        "model": "mock-model",
        "max_parallel_requests": parallel,
    }
    return Pipeline.from_dict(
        {
            "name": "s5-chain-3",
            "providers": [{"name": "mock", "endpoint": endpoint}],
            "models": [model],
            "columns": columns,
            "run": {"num_records": records, "buffer_size": 100},
        }
    )


async def bare_client(url: str, requests: int) -> None:
    """The floor: the same number of requests, PARALLEL at a time, no engine."""
    body = orjson.dumps({"model": "mock-model", "messages": [{"role": "user", "content": "x"}]})
    headers = {"content-type": "application/json"}
    remaining = iter(range(requests))
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            for _ in remaining:  # the shared iterator bounds the total
                async with session.post(f"{url}/chat/completions", data=body) as response:
                    orjson.loads(await response.read())

        await asyncio.gather(*(worker() for _ in range(PARALLEL)))


def in_memory_otel() -> tuple[OtelSink, Callable[[], list[str]]]:
    """The providers ``ddtrace run`` builds (otel_sdk: resource, span limits, sampler), with the
    SDK's in-memory span exporter behind a batch span processor and an in-memory reader."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ddscope.exporters.otel.sdk import meter_provider, tracer_provider

    exporter = InMemorySpanExporter()
    traces = tracer_provider(BatchSpanProcessor(exporter, max_queue_size=100_000))
    reader = InMemoryMetricReader()
    metrics = meter_provider([reader])

    def finish() -> list[str]:
        traces.shutdown()
        reader.get_metrics_data()  # one collection, as a periodic reader would do
        return [] if exporter.get_finished_spans() else ["no spans reached the exporter"]

    return OtelSink(traces, metrics), finish


def run_variant(
    name: str, url: str, records: int, workdir: Path, otlp: str, loop: str
) -> dict[str, Any]:
    """One run of one variant: wall, CPU, record size, tasks, warnings. ddscope runs on ``loop``
    (``event_loop.run``, as ``ddtrace run``); the bare client on asyncio's own loop, what a plain
    aiohttp script gets, and ``bare_uvloop`` the same client on uvloop, for comparison."""
    record = workdir / f"{name}.jsonl"
    sinks: list[EventSink] = []
    finish: Callable[[], list[str]] = list
    if name != "no_sinks":
        sinks.append(JsonlRecorder(record))
    if name == "otel_memory":
        sink, finish = in_memory_otel()
        sinks.append(sink)
    elif name == "otel_otlp":
        otel, finish = build_otel_sink(otlp, "grpc", None)
        assert otel is not None
        sinks.append(otel)
    # The previous run's garbage (an in-memory exporter's spans, providers in reference
    # cycles) is collected now, not by a collection that happens to fall in this run.
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if name == "bare_aiohttp":
        asyncio.run(bare_client(url, records * len(COLUMNS)))
    elif name == "bare_uvloop":
        event_loop.run(bare_client(url, records * len(COLUMNS)), "uvloop")
    else:
        pipeline = chain3(url, records)
        bus = EventBus(sinks)
        event_loop.run(run_pipeline(pipeline, bus=bus, output=DiscardingRowWriter()), loop)
    warnings = finish()  # inside the measurement: the flush at the end is part of the cost
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    size = record.stat().st_size if record.exists() else 0
    tasks = record.read_bytes().count(b'"kind":"lease_started"') if size else 0
    spans = expected_spans(record) if name == "otel_otlp" else 0
    result = {"wall_s": wall, "cpu_s": cpu, "bytes": size, "tasks": tasks, "spans": spans}
    return {**result, "warnings": warnings}


SPAN_EVENTS = (
    "row_group_started",
    "salvage_started",
    "lease_started",
    "wait_started",
    "attempt_started",
    "cooldown_started",
)


def expected_spans(record: Path) -> int:
    """The spans the OTel sink makes for the run in ``record``: the run, one per domain, and
    one per interval-opening event (README: the span tree)."""
    reader = RunReader(record)
    try:
        count = 1 + len(reader.header.domains)
        count += sum(1 for event in reader if event.kind in SPAN_EVENTS)
    finally:
        reader.close()
    return count


def start_receiver() -> tuple[subprocess.Popen[str], str]:
    """An OTLP/gRPC receiver (tests/otlp_receiver.py) in a child process."""
    command = [sys.executable, __file__, "--serve-otlp-receiver"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def serve_receiver() -> None:
    sys.path.insert(0, str(TESTS_DIR))
    from otlp_receiver import GrpcReceiver

    with GrpcReceiver() as receiver:
        print(receiver.endpoint, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        print(json.dumps({"spans": len(receiver.spans()), "metrics": len(receiver.metrics())}))


VARIANTS = ("bare_aiohttp", "no_sinks", "record", "otel_memory", "otel_otlp")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    # Task leases, counted in a record; the same workload in every ddscope variant.
    tasks = max(r["tasks"] for results in runs.values() for r in results) or None
    for name, results in runs.items():
        engine = not name.startswith("bare_")
        wall = statistics.median(r["wall_s"] for r in results)
        cpu = statistics.median(r["cpu_s"] for r in results)
        out[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_task": round(cpu * 1e6 / tasks, 1) if tasks and engine else None,
            "record_bytes_per_task": (
                round(results[0]["bytes"] / tasks, 1) if tasks and results[0]["bytes"] else None
            ),
            "warnings": sum(len(r["warnings"]) for r in results),
        }
    return out


def ratios(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = figures["no_sinks"]
    bare = figures["bare_aiohttp"]
    out = {
        "no_sinks_wall_vs_bare": base["wall_s"] / bare["wall_s"],
        # the same requests: CPU per model task over the bare client's CPU per request
        "no_sinks_cpu_vs_bare": base["cpu_s"] / bare["cpu_s"],
    }
    for name in ("record", "otel_memory", "otel_otlp"):
        out[f"{name}_wall_vs_no_sinks"] = figures[name]["wall_s"] / base["wall_s"]
        out[f"{name}_cpu_vs_no_sinks"] = figures[name]["cpu_s"] / base["cpu_s"]
    return {k: round(v, 3) for k, v in out.items()}


def paired_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The same ratios taken round by round (each variant over no sinks *of the same round*,
    seconds apart), then the median: the machine's speed drifts over minutes, and a ratio of
    medians taken from different rounds carries that drift; a paired ratio does not."""

    def paired(name: str, base: str, key: str) -> float:
        return round(statistics.median(per_round(runs, name, base, key)), 3)

    out = {
        "no_sinks_wall_vs_bare": paired("no_sinks", "bare_aiohttp", "wall_s"),
        "no_sinks_cpu_vs_bare": paired("no_sinks", "bare_aiohttp", "cpu_s"),
    }
    for name in ("record", "otel_memory", "otel_otlp"):
        out[f"{name}_wall_vs_no_sinks"] = paired(name, "no_sinks", "wall_s")
        out[f"{name}_cpu_vs_no_sinks"] = paired(name, "no_sinks", "cpu_s")
    return out


def per_round(runs: dict[str, list[dict[str, Any]]], name: str, base: str, key: str) -> list[float]:
    """``name``'s ``key`` over ``base``'s, round by round."""
    return [a[key] / b[key] for a, b in zip(runs[name], runs[base], strict=True)]


def by_round(runs: dict[str, list[dict[str, Any]]], tasks: int) -> dict[str, list[float]]:
    """The goals' figures round by round, so the spread behind each median shows: no sinks' CPU
    per task, and full instrumentation's CPU over no sinks of the same round."""
    return {
        "no_sinks_cpu_us_per_task": [round(r["cpu_s"] * 1e6 / tasks, 1) for r in runs["no_sinks"]],
        "otel_otlp_cpu_vs_no_sinks": [
            round(ratio, 3) for ratio in per_round(runs, "otel_otlp", "no_sinks", "cpu_s")
        ],
    }


def median_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float] | None:
    """A distribution-free interval for the median of what ``values`` were drawn from: the
    k-th smallest to the k-th largest value, with the largest k whose coverage, 1 − 2·P(X < k)
    for X ~ Binomial(n, ½), is at least ``confidence``; None when even the smallest to the
    largest falls short (3 rounds cover 75 %, 5 cover 94 %)."""
    ordered = sorted(values)
    n = len(ordered)
    best = None
    below = 0.0  # P(X < k)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < confidence:
            break
        best = (ordered[k - 1], ordered[n - k])
    return best


def goal_verdict(values: list[float], goal: float, confidence: float = 0.9) -> str:
    """Whether rounds ``values`` (a figure whose goal is ≤ ``goal``) decide the goal at
    ``confidence``: "met" when the median's interval is at or below it, "not met" when above,
    else "undecided", with the interval."""
    interval = median_interval(values, confidence)
    if interval is None:
        return f"undecided: {len(values)} rounds cannot give a {confidence * 100:.0f} % interval"
    low, high = interval
    span = f"{confidence * 100:.0f} % interval of the median {low:.3f}–{high:.3f}"
    if high <= goal:
        return f"met ({span})"
    if low > goal:
        return f"not met ({span})"
    return f"undecided ({span}; more rounds narrow it)"


def measure(
    url: str, records: int, repeats: int, otlp: str, loop: str
) -> dict[str, list[dict[str, Any]]]:
    """Every variant ``repeats`` times, round-robin, so drift on this noisy machine is shared;
    each round starts one variant later, so no variant always runs after the same one."""
    variants = VARIANTS if loop == "asyncio" else (VARIANTS[0], "bare_uvloop", *VARIANTS[1:])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    asyncio.run(bare_client(url, PARALLEL * 4))  # warm-up: connections, lazy imports
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            shift = repeat % len(variants)
            for name in (*variants[shift:], *variants[:shift]):
                r = run_variant(name, url, records, Path(tmp), otlp, loop)
                runs[name].append(r)
                line = f"wall {r['wall_s']:6.2f} s  CPU {r['cpu_s']:6.2f} s"
                print(f"  run {repeat + 1} {name:12s} {line}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--loop",
        choices=get_args(event_loop.LoopChoice),
        default="auto",
        help="ddscope's event loop (default: as ddtrace run, uvloop where installed)",
    )
    parser.add_argument("--serve-otlp-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_otlp_receiver:
        return serve_receiver()
    args.loop, _ = event_loop.chosen_loop(args.loop)
    receiver, otlp = start_receiver()
    try:
        with MockServerProcess(MockBehavior(latency_ms=LATENCY_MS)) as server:
            runs = measure(server.base_url, args.records, args.repeats, otlp, args.loop)
    finally:
        received = stop_receiver(receiver)
    received["expected_spans"] = sum(r["spans"] for r in runs.get("otel_otlp", []))
    rounds = by_round(runs, args.records * len(COLUMNS))
    report(args, summarize(runs), paired_ratios(runs), rounds, received)


def stop_receiver(receiver: subprocess.Popen[str]) -> dict[str, Any]:
    """Stops the receiver; what it got: {"spans": N, "metrics": names}."""
    assert receiver.stdin is not None and receiver.stdout is not None
    receiver.stdin.close()
    received: dict[str, Any] = json.loads(receiver.stdout.readline() or "{}")
    receiver.wait(10)
    return received


def report(
    args: argparse.Namespace,
    figures: dict[str, dict[str, Any]],
    paired: dict[str, float],
    rounds: dict[str, list[float]],
    received: dict[str, Any],
) -> None:
    ideal = args.records * len(COLUMNS) * LATENCY_MS / 1000 / PARALLEL
    print(f"\nS5: chain-3, {args.records} records, {PARALLEL} parallel, {LATENCY_MS:g} ms endpoint")
    print(f"ideal {ideal:.2f} s; medians of {args.repeats} runs; ddscope on {args.loop}")
    for name, f in figures.items():
        line = f"{name:13s} wall {f['wall_s']:6.2f} s  CPU {f['cpu_s']:6.2f} s"
        if f["cpu_us_per_task"]:
            line += f"  {f['cpu_us_per_task']:6.0f} µs CPU/task"
        if f["record_bytes_per_task"]:
            line += f"  {f['record_bytes_per_task']:4.0f} B/task in run.jsonl"
        print(line)
    r = ratios(figures)
    print(f"no sinks / bare client, wall: {r['no_sinks_wall_vs_bare']:.3f}  (goal ≤ 1.05)")
    print(f"no sinks CPU per task: {figures['no_sinks']['cpu_us_per_task']:.0f} µs  (goal ≤ 350)")
    bare_us = figures["bare_aiohttp"]["cpu_s"] * 1e6 / (args.records * len(COLUMNS))
    print(
        f"  = {r['no_sinks_cpu_vs_bare']:.2f}× the bare client's {bare_us:.0f} µs a request "
        f"(paired by round {paired['no_sinks_cpu_vs_bare']:.2f}×; the goal was set when the bare "
        "client cost 200 µs: 1.75×)"
    )
    for name in ("record", "otel_memory", "otel_otlp"):
        wall, cpu = r[f"{name}_wall_vs_no_sinks"], r[f"{name}_cpu_vs_no_sinks"]
        pw, pc = paired[f"{name}_wall_vs_no_sinks"], paired[f"{name}_cpu_vs_no_sinks"]
        print(f"{name:13s} / no sinks: wall {wall:.3f}  CPU {cpu:.3f}", end="")
        print(f"   (paired by round: wall {pw:.3f}  CPU {pc:.3f})")
    print("goal, full instrumentation over no sinks: wall ≤ 1.10, CPU ≤ 1.20; ≤ 1 KB/task")
    print(f"by round: no sinks µs CPU/task {rounds['no_sinks_cpu_us_per_task']}")
    print(f"          otel_otlp / no sinks CPU {rounds['otel_otlp_cpu_vs_no_sinks']}")
    verdict = goal_verdict(rounds["otel_otlp_cpu_vs_no_sinks"], CPU_GOAL)
    print(f"          CPU goal ≤ {CPU_GOAL:.2f} by round: {verdict}")
    got, expected = received.get("spans"), received.get("expected_spans")
    verdict = "every span delivered" if got == expected else "SPANS MISSING"
    print(f"receiver got {got} spans of {expected} expected ({verdict}), ", end="")
    print(f"{received.get('metrics')} metric names")
    line = {
        "benchmark": "bench_s5_overhead",
        "records": args.records,
        "parallel": PARALLEL,
        "latency_ms": LATENCY_MS,
        "repeats": args.repeats,
        "loop": args.loop,
        "ideal_s": round(ideal, 3),
        "variants": figures,
        "ratios": r,
        "paired_ratios": paired,
        "by_round": rounds,
        "otel_otlp_cpu_interval_90": median_interval(rounds["otel_otlp_cpu_vs_no_sinks"]),
        "received": received,
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
