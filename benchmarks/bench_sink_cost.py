"""What each event sink costs per task, without the network: S5's event stream replayed through
the sinks, CPU time only.

S5 in real time (``bench_s5_overhead.py``) measures the instruments inside a whole run, where the
HTTP client, the event loop and, on a shared machine, other people's processes move the figures
by more than the sinks cost. Here the same events (a chain-3 run of ``--records`` records on the
mock endpoint, recorded once) are fed to one sink at a time, ``--repeats`` times each, and the
median CPU time (``time.process_time``: this process, all threads — the SDK's batch span processor
thread included) is divided by the tasks:

* ``record``           — ``JsonlRecorder`` writing run.jsonl;
* ``otel``             — ``OtelSink`` on the providers ``ddtrace run`` builds, into the SDK's
  in-memory span exporter (behind a batch span processor) and an in-memory metric reader,
  collected once at the end;
* ``otel_start_span``  — the same, with finished spans made by ``start_span`` + ``end`` instead
  of handed to the processors (``otel/direct.py``: what a provider without the internals gets);
* ``otel_plain_histograms`` — the same, with every histogram measurement made by the SDK's
  ``Histogram.record`` instead of ``otel/histograms.py``'s ``FastHistogram`` (before issue 17);
* ``otel_new_genai`` / ``otel_both_genai`` — ``otel`` with the current / both GenAI namings;
* ``otel_otlp``        — the sink ``ddtrace run`` builds (``build_otel_sink``) exporting over
  OTLP/gRPC to a receiver in a child process (the encoding and the gRPC client included; the
  receiver's CPU is not), flushed and shut down at the end.

Usage::

    .venv/bin/python benchmarks/bench_sink_cost.py [--records 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_s5_overhead import chain3, start_receiver
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ddscope.engine.rows.output import DiscardingRowWriter
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import Event, EventBus, EventSink, RunHeader
from ddscope.exporters.otel.direct import DirectSpans
from ddscope.exporters.otel.genai import Conventions
from ddscope.exporters.otel.histograms import FastHistogram
from ddscope.exporters.otel.sdk import meter_provider, tracer_provider
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.exporters.otel.sink import OtelSink
from ddscope.mock import MockServer
from ddscope.record.jsonl import JsonlRecorder, RunReader

Finish = Callable[[], object]


def recorded_stream(records: int, workdir: Path) -> tuple[RunHeader, list[Event]]:
    record = workdir / "s5.jsonl"
    with MockServer(latency_ms=2) as server:
        bus = EventBus([JsonlRecorder(record)])
        asyncio.run(
            run_pipeline(chain3(server.base_url, records), bus=bus, output=DiscardingRowWriter())
        )
    reader = RunReader(record)
    try:
        return reader.header, list(reader)
    finally:
        reader.close()


def otel_sink(genai: Conventions | None = None) -> tuple[EventSink, Finish]:
    exporter = InMemorySpanExporter()
    traces = tracer_provider(BatchSpanProcessor(exporter, max_queue_size=1_000_000))
    reader = InMemoryMetricReader()
    sink = OtelSink(traces, meter_provider([reader]), genai_conventions=genai)

    def finish() -> None:
        traces.shutdown()
        reader.get_metrics_data()  # one collection, as a periodic reader would do
        assert exporter.get_finished_spans()

    return sink, finish


def otlp_sink(endpoint: str) -> tuple[EventSink, Finish]:
    sink, finish = build_otel_sink(endpoint, "grpc", None)
    assert sink is not None

    def finish_and_check() -> None:
        warnings = finish()
        assert not warnings, warnings

    return sink, finish_and_check


def otel_with_start_span() -> tuple[EventSink, Finish]:
    original = DirectSpans.of
    DirectSpans.of = classmethod(lambda cls, provider, scope: None)  # type: ignore[method-assign,assignment]
    try:
        return otel_sink()
    finally:
        DirectSpans.of = original  # type: ignore[method-assign]


def otel_with_plain_histograms() -> tuple[EventSink, Finish]:
    sink, finish = otel_sink()
    assert isinstance(sink, OtelSink)
    for owner in (sink.instruments, sink.genai):
        for value in vars(owner).values():
            if isinstance(value, FastHistogram):
                value._consumer = None  # as when the SDK's internals are not recognised
    return sink, finish


def cpu_per_task(
    make: Callable[[], tuple[EventSink, Finish]],
    header: RunHeader,
    events: list[Event],
    repeats: int,
) -> list[float]:
    tasks = sum(1 for e in events if e.kind == "lease_started")
    out = []
    for _ in range(repeats):
        sink, finish = make()
        gc.collect()
        cpu0 = time.process_time()
        sink.open(header)
        for event in events:
            sink.handle(event)
        sink.close()
        finish()
        out.append((time.process_time() - cpu0) * 1e6 / tasks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    receiver, endpoint = start_receiver()
    try:
        measure(args.records, args.repeats, endpoint)
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        receiver.wait(timeout=30)


def measure(records: int, repeats: int, endpoint: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        header, events = recorded_stream(records, workdir)
        variants: dict[str, Callable[[], tuple[EventSink, Finish]]] = {
            "record": lambda: (JsonlRecorder(workdir / "replayed.jsonl"), lambda: None),
            "otel": otel_sink,
            "otel_start_span": otel_with_start_span,
            "otel_plain_histograms": otel_with_plain_histograms,
            "otel_new_genai": lambda: otel_sink(Conventions(old=False, new=True)),
            "otel_both_genai": lambda: otel_sink(Conventions(old=True, new=True)),
            "otel_otlp": lambda: otlp_sink(endpoint),
        }
        figures: dict[str, Any] = {}
        for name, make in variants.items():
            runs = cpu_per_task(make, header, events, repeats)
            figures[name] = {
                "median_us": round(statistics.median(runs), 1),
                "min_us": round(min(runs), 1),
            }
            median, least = figures[name]["median_us"], figures[name]["min_us"]
            print(f"{name:21s} {median:6.1f} µs CPU/task (median; min {least:.1f})", flush=True)
    tasks = sum(1 for e in events if e.kind == "lease_started")
    print(f"{len(events)} events, {tasks} tasks")
    line = {
        "benchmark": "bench_sink_cost",
        "records": records,
        "repeats": repeats,
        "events": len(events),
        "tasks": tasks,
        "cpu_us_per_task": figures,
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
