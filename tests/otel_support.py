"""Helpers shared by the OpenTelemetry tests (not a test module): in-memory SDK set-up, a
comparable view of spans, the reference scenario on the real mock endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine_records import EngineSpec
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from scheduler_support import MemoryWriter, chain3

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus, EventSink, ListSink, RunHeader
from ddscope.exporters.otel.genai import Conventions
from ddscope.exporters.otel.sink import OtelSink
from ddscope.mock.server import MockServer
from ddscope.record.jsonl import JsonlRecorder, RunReader

# The engine on a fake clock (tests/engine_records.py): 429s (every 7th task), cooldowns, a
# deferral every 10th task (→ a salvage round), row 3 dropped
ENGINE_SPEC = EngineSpec(rows=12, buffer_size=6, rate_limit_every=7, defer_every=10, drop_rows=(3,))
# The same ingredients from the real engine: 503 burst → deferrals → salvage; "poison" topics →
# 400 → drops; every 10th arrival → 429 → cooldown (default 50 ms, no Retry-After).
REAL_MOCK = {"error_burst": 12, "fail_marker": "poison", "rate_limit_k": 1, "rate_limit_n": 10}


class InMemoryOtel:
    """An OtelSink on the SDK's in-memory span exporter and metric reader."""

    def __init__(self, *, record_text: bool = False, genai: Conventions | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider([self.reader], shutdown_on_exit=False)
        self.sink = OtelSink(
            self.tracer_provider,
            self.meter_provider,
            record_text=record_text,
            genai_conventions=genai,
        )

    def feed(self, header: RunHeader, events: Iterable[Any]) -> InMemoryOtel:
        self.sink.open(header)
        for event in events:
            self.sink.handle(event)
        self.sink.close()
        return self

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metrics(self) -> dict[str, Any]:
        """Metric name → Metric (one collection)."""
        data = self.reader.get_metrics_data()
        return {
            metric.name: metric
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }


def points(metrics: dict[str, Any], name: str) -> list[Any]:
    return list(metrics[name].data.data_points)


def span_path(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> str:
    names = []
    current: ReadableSpan | None = span
    while current is not None:
        names.append(current.name)
        parent = current.parent
        current = by_id.get(parent.span_id) if parent is not None else None
    return " > ".join(reversed(names))


def span_view(spans: list[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Everything about the spans except their random ids: parents and link targets become
    name paths. Sorted, so two runs of the same stream compare equal."""
    by_id = {span.context.span_id: span for span in spans}
    view = []
    for span in spans:
        events = tuple(
            (e.name, e.timestamp, tuple(sorted(e.attributes.items()))) for e in span.events
        )
        links = tuple(
            (span_path(by_id[link.context.span_id], by_id), tuple(sorted(link.attributes.items())))
            for link in span.links
        )
        view.append(
            (
                span_path(span, by_id),
                span.start_time,
                span.end_time,
                span.kind.name,
                span.status.status_code.name,
                span.status.description,
                tuple(sorted(span.attributes.items())),
                events,
                links,
            )
        )
    return sorted(view, key=repr)


def feed_record(sink: EventSink, record: Path) -> None:
    """Every event of ``record`` through ``sink``: open with its header, each event, close."""
    reader = RunReader(record)
    try:
        sink.open(reader.header)
        for event in reader:
            sink.handle(event)
        sink.close()
    finally:
        reader.close()


def replay(
    record: Path, *, record_text: bool = False, genai: Conventions | None = None
) -> InMemoryOtel:
    reader = RunReader(record)
    return InMemoryOtel(record_text=record_text, genai=genai).feed(reader.header, reader)


def run_real(
    pipeline: Pipeline, record: Path, extra_sinks: Iterable[EventSink] = ()
) -> tuple[InMemoryOtel, ListSink]:
    """Runs ``pipeline`` with the record, a ListSink and a live in-memory OtelSink."""
    live = InMemoryOtel()
    events = ListSink()
    bus = EventBus([JsonlRecorder(record), events, live.sink, *extra_sinks])
    asyncio.run(run_pipeline(pipeline, bus=bus, output=MemoryWriter()))
    return live, events


def reference_pipeline(endpoint: str, **run: Any) -> Pipeline:
    """chain-3 with a poisoned topic, a short cooldown and salvage that is quick to reach."""
    return chain3(
        endpoint,
        records=10,
        values=["a", "b", "poison"],
        max_attempts_in_pass=2,
        error_rate_window=200,
        default_cooldown_s=0.05,
        **run,
    )


def run_reference(record: Path) -> tuple[InMemoryOtel, ListSink]:
    with MockServer(latency_ms=5, **REAL_MOCK) as server:
        return run_real(reference_pipeline(server.base_url), record)


def reference_pipeline_file(endpoint: str, path: Path) -> Path:
    """The reference pipeline as a JSON file, for ``ddtrace run``."""
    data = reference_pipeline(endpoint).model_dump(mode="json", exclude_none=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
