"""ddscope's own OTLP pipeline takes the sink's ``FinishedSpan`` instead of a ``ReadableSpan``
(issue 17, ``otel/direct.py``): the same spans, the same bytes on the wire, and every other
span processor, span limit or encoder still gets the SDK's spans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from otel_support import feed_record, replay, run_reference, span_view
from otlp_receiver import GrpcReceiver, HttpReceiver

from ddscope.exporters.otel import direct as direct_module
from ddscope.exporters.otel.delivery import CountingSpanProcessor
from ddscope.exporters.otel.direct import DirectSpans, FinishedSpan, readable_spans
from ddscope.exporters.otel.encode import SpanEncoder
from ddscope.exporters.otel.otlp import GrpcSpanExporter, HttpSpanExporter
from ddscope.exporters.otel.sink import OtelSink

# Spans the sink makes when they end, from one event pair each: leases, waits, attempts.
REQUEST_PATH_SPANS = ("task ", "request.wait", "chat ")


class KeepingExporter(SpanExporter):
    """Keeps whatever the processor hands over, as it is."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run: 429s with cooldowns linked to attempts, retries, salvage, drops."""
    path = tmp_path_factory.mktemp("finished") / "run.jsonl"
    run_reference(path)
    return path


def ddscope_pipeline(limits: SpanLimits | None = None) -> tuple[TracerProvider, Any, Any]:
    """A provider whose only processor is marked as ddscope's pipeline, as ``OtelSdk`` does."""
    exporter = KeepingExporter()
    counting = CountingSpanProcessor(SimpleSpanProcessor(exporter), takes_finished_spans=True)
    provider = TracerProvider(span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(counting)
    return provider, counting, exporter


def feed(provider: TracerProvider, record: Path) -> OtelSink:
    sink = OtelSink(provider, MeterProvider(shutdown_on_exit=False))
    feed_record(sink, record)
    return sink


def test_the_request_path_spans_arrive_as_finished_spans_equal_to_the_sdks(record: Path) -> None:
    provider, counting, exporter = ddscope_pipeline()
    feed(provider, record)
    finished = [s for s in exporter.spans if type(s) is FinishedSpan]
    others = [s for s in exporter.spans if type(s) is not FinishedSpan]
    assert finished and all(s.name.startswith(REQUEST_PATH_SPANS) for s in finished)
    assert all(isinstance(s, ReadableSpan) for s in others)
    assert not any(s.name.startswith(REQUEST_PATH_SPANS) for s in others)
    assert {s.name for s in finished} >= {"request.wait", "chat mock-model"}
    assert counting.ended == len(exporter.spans)
    # The same spans as a provider with the SDK's own processor gets (parents, links to
    # failed attempts, statuses, attributes, times).
    assert span_view(readable_spans(exporter.spans)) == span_view(replay(record).spans())


@pytest.mark.parametrize("batch", [512, 37])
def test_finished_spans_encode_to_the_sdk_encoders_bytes(record: Path, batch: int) -> None:
    provider, _, exporter = ddscope_pipeline()
    feed(provider, record)
    spans = exporter.spans
    encoder = SpanEncoder()  # one encoder across batches, as an exporter keeps it
    for start in range(0, len(spans), batch):
        part = spans[start : start + batch]
        expected = encode_spans(readable_spans(part)).SerializeToString()
        assert encoder.encode(part) == expected


def unusual_finished_spans() -> list[FinishedSpan]:
    """Finished spans the encoder's short path for the usual one declines — a root, a remote
    parent, a trace state, a missing time — beside usual ones with an error status, a float
    and a bool, in one batch."""
    resource, scope = Resource.create({"service.name": "t"}), InstrumentationScope("t", "1")
    flags = TraceFlags(TraceFlags.SAMPLED)
    local = SpanContext(0xA1, 0xB1, False, flags)
    remote = SpanContext(0xA1, 0xB2, True, flags)
    state = TraceState([("vendor", "x")])
    error = Status(StatusCode.ERROR, "boom")
    shapes: list[tuple[SpanContext, SpanContext | None, int, int, Status]] = [
        (SpanContext(0xA1, 0xC1, False, flags), local, 10, 20, Status()),
        (SpanContext(0xA1, 0xC2, False, flags), local, 10, 20, error),
        (SpanContext(0xA1, 0xC3, False, flags), None, 10, 20, Status()),
        (SpanContext(0xA1, 0xC4, False, flags), remote, 10, 20, Status()),
        (SpanContext(0xA1, 0xC5, False, flags, state), local, 10, 20, Status()),
        (SpanContext(0xA1, 0xC6, False, flags), local, 0, 20, Status()),
        (SpanContext(0xA2, 0xC7, False, flags), SpanContext(0xA2, 0xB3, False, flags), 5, 9, error),
    ]
    attributes = {"a": "x", "n": 3, "f": 0.5, "b": True}
    made = []
    for i, (context, parent, start, end, status) in enumerate(shapes):
        attrs = dict(attributes, i=i)
        made.append(FinishedSpan(f"s{i}", context, parent, SpanKind.CLIENT, attrs, start, end,
                                 status, resource, scope))  # fmt: skip
    return made


def test_unusual_finished_spans_encode_to_the_sdk_encoders_bytes() -> None:
    spans = unusual_finished_spans()
    expected = encode_spans(readable_spans(spans)).SerializeToString()
    encoder = SpanEncoder()
    assert encoder.encode(spans) == expected
    assert (
        encoder.encode(spans[::-1]) == encode_spans(readable_spans(spans[::-1])).SerializeToString()
    )


def test_an_attribute_count_limit_that_can_bite_means_the_sdks_spans_for_those_spans(
    record: Path,
) -> None:
    """An attempt span has 11 or more attributes, a task lease span 4 or 5: with a limit of 8,
    attempts are the SDK's spans with the limit applied, leases still finished spans."""
    provider, _, exporter = ddscope_pipeline(SpanLimits(max_span_attributes=8))
    feed(provider, record)
    attempts = [s for s in exporter.spans if s.name.startswith("chat ")]
    assert attempts and all(isinstance(s, ReadableSpan) for s in attempts)
    assert all(len(s.attributes) <= 8 for s in attempts)
    assert any(s.dropped_attributes > 0 for s in attempts)
    # the task lease spans (4 or 5 attributes, none shared) still arrive as finished spans
    assert any(type(s) is FinishedSpan and s.name.startswith("task ") for s in exporter.spans)


def test_a_processor_added_after_the_sink_gets_every_span_as_the_sdks(record: Path) -> None:
    provider, _, exporter = ddscope_pipeline()
    sink_before = OtelSink(provider, MeterProvider(shutdown_on_exit=False))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    del sink_before
    feed(provider, record)
    spans = list(memory.get_finished_spans())
    assert all(type(s) is not FinishedSpan for s in spans)
    assert all(type(s) is not FinishedSpan for s in exporter.spans)
    assert span_view(spans) == span_view(replay(record).spans())


def test_a_processor_that_is_not_ddscopes_pipeline_gets_readable_spans(record: Path) -> None:
    exporter = KeepingExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(CountingSpanProcessor(SimpleSpanProcessor(exporter)))
    feed(provider, record)
    assert exporter.spans and all(isinstance(s, ReadableSpan) for s in exporter.spans)


def test_a_span_limit_that_can_bite_means_the_sdks_spans_with_the_limit_applied(
    record: Path,
) -> None:
    provider, _, exporter = ddscope_pipeline(SpanLimits(max_span_attribute_length=3))
    feed(provider, record)
    assert exporter.spans and all(isinstance(s, ReadableSpan) for s in exporter.spans)
    texts = [v for s in exporter.spans for v in s.attributes.values() if isinstance(v, str)]
    assert texts and max(len(text) for text in texts) == 3


@pytest.mark.parametrize(
    ("receiver_type", "exporter_type"),
    [(GrpcReceiver, GrpcSpanExporter), (HttpReceiver, HttpSpanExporter)],
)
def test_the_exporters_sdk_path_sends_finished_spans_as_readable_ones(
    record: Path, receiver_type: type, exporter_type: type
) -> None:
    """After the fast path has given up (an SDK that changed under us), finished spans still
    reach the collector, through the SDK's own encoder, with the same bytes."""
    provider, _, kept = ddscope_pipeline()
    feed(provider, record)
    spans = kept.spans[:200]
    assert any(type(s) is FinishedSpan for s in spans)
    with receiver_type() as receiver:
        suffix = "/v1/traces" if receiver_type is HttpReceiver else ""
        exporter = exporter_type(endpoint=receiver.endpoint + suffix, timeout=5)
        exporter.fast = False
        if exporter_type is GrpcSpanExporter:
            exporter._use_sdk_path(RuntimeError("as if the SDK changed"))
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        (request,) = receiver.trace_requests
    assert request.SerializeToString() == encode_spans(readable_spans(spans)).SerializeToString()


def test_finished_spans_reach_the_sdk_batch_processors_queue_and_are_counted(
    record: Path,
) -> None:
    """``take_finished`` puts a span on a ``BatchSpanProcessor``'s queue directly (the step
    after its sampling check); every span is exported and counted once."""
    exporter = KeepingExporter()
    counting = CountingSpanProcessor(
        BatchSpanProcessor(exporter, max_queue_size=100_000), takes_finished_spans=True
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(counting)
    feed(provider, record)
    provider.shutdown()
    assert any(type(s) is FinishedSpan for s in exporter.spans)
    assert counting.ended == len(exporter.spans)
    assert span_view(readable_spans(exporter.spans)) == span_view(replay(record).spans())


def sdk_batch_pipeline(queue: int, batch: int) -> tuple[CountingSpanProcessor, Any, list[Any]]:
    """ddscope's counting processor over the SDK's batch processor (no timed export), with the
    batch processor's ``emit`` recording what goes through it."""
    exporter = KeepingExporter()
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=queue,
        max_export_batch_size=batch,
        schedule_delay_millis=3_600_000,
    )
    emitted: list[Any] = []
    inner = processor._batch_processor
    sdk_emit = inner.emit

    def emit(span: Any) -> None:
        emitted.append(span)
        sdk_emit(span)

    inner.emit = emit  # type: ignore[method-assign]
    return CountingSpanProcessor(processor, takes_finished_spans=True), exporter, emitted


def test_finished_spans_handed_over_together_are_exported_in_the_order_they_ended() -> None:
    counting, exporter, emitted = sdk_batch_pipeline(queue=1_000, batch=100)
    spans = [object() for _ in range(250)]
    for start in range(0, 250, 50):  # five hand-overs, as five batches of events
        counting.take_finished(spans[start : start + 50])
    counting.shutdown()
    assert exporter.spans == spans  # every span once, oldest first, as emit would queue them
    assert counting.ended == 250
    assert emitted == []  # none needed the batch processor's own emit


def test_spans_that_would_overflow_the_queue_go_through_the_sdks_emit_which_counts_drops() -> None:
    counting, exporter, emitted = sdk_batch_pipeline(queue=8, batch=8)
    inner: Any = counting.inner
    metrics = inner._batch_processor._metrics
    dropped: list[int] = []
    sdk_drop = metrics.drop_items
    metrics.drop_items = lambda count, *args: (dropped.append(count), sdk_drop(count, *args))
    first, second = [object() for _ in range(5)], [object() for _ in range(5)]
    counting.take_finished(first)
    assert emitted == []
    counting.take_finished(second)  # 5 + 5 > 8: span by span through the SDK's emit
    assert emitted == second
    counting.shutdown()
    # The queue holds 8: what the export thread had not taken by then (it is woken at 8 and
    # may or may not have run) was dropped, and the SDK counted each drop as it does for a
    # span its own on_end queues (its check of a full queue races with the export thread, so
    # it can count one it did not drop, never the other way round).
    exported = set(map(id, exporter.spans))
    assert len(exported) == len(exporter.spans) and exported <= set(map(id, first + second))
    assert sum(dropped) >= 10 - len(exported)
    assert counting.ended == 10  # ended − delivered = dropped


def test_after_shutdown_handed_over_spans_go_to_the_sdks_emit_and_are_not_exported() -> None:
    counting, exporter, emitted = sdk_batch_pipeline(queue=100, batch=10)
    counting.shutdown()
    late = [object() for _ in range(3)]
    counting.take_finished(late)
    assert emitted == late
    assert exporter.spans == []


class KeepingProcessor(SpanProcessor):
    """A span processor with no batch queue: keeps what ``on_end`` gets."""

    def __init__(self) -> None:
        self.ended: list[Any] = []

    def on_end(self, span: Any) -> None:
        self.ended.append(span)


def test_a_processor_without_the_sdks_queue_gets_each_finished_span_through_on_end() -> None:
    inner = KeepingProcessor()
    counting = CountingSpanProcessor(inner, takes_finished_spans=True)
    spans = [object() for _ in range(7)]
    counting.take_finished(spans)
    assert inner.ended == spans
    assert counting.ended == 7


@pytest.mark.parametrize("as_tuple", [True, False], ids=["built_as_tuple", "constructor"])
@pytest.mark.parametrize("new_id", [0x1234, 0], ids=["valid_id", "invalid_id"])
def test_a_child_context_equals_the_one_spancontext_builds(
    monkeypatch: pytest.MonkeyPatch, as_tuple: bool, new_id: int
) -> None:
    """Same trace, flags and state as the parent, the id generator's id, not remote, and valid
    exactly when ``SpanContext`` says so (an id generator may hand out an invalid id)."""
    monkeypatch.setattr(direct_module, "_CONTEXT_AS_TUPLE", as_tuple)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("t")
    direct = DirectSpans.of(provider, tracer._instrumentation_scope)
    assert direct is not None
    monkeypatch.setattr(direct, "_new_span_id", lambda: new_id)
    monkeypatch.setattr(direct, "_span_id_bits", None)  # as for any other id generator
    state = TraceState([("vendor", "x")])
    parent = SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED), state)
    child = direct.child_context(parent)
    expected = SpanContext(0xABC, new_id, False, parent.trace_flags, state)
    assert type(child) is SpanContext
    assert child == expected and child.is_valid == expected.is_valid == (new_id != 0)


def test_with_the_sdks_random_id_generator_span_ids_are_drawn_directly_and_never_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default generator's ids are drawn with ``random.getrandbits(64)`` directly; a 0
    drawn goes back to the generator, which draws until it is not 0."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    direct = DirectSpans.of(provider, provider.get_tracer("t")._instrumentation_scope)
    assert direct is not None and direct._span_id_bits is not None
    parent = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    ids = {direct.child_context(parent).span_id for _ in range(1000)}
    assert len(ids) == 1000 and 0 not in ids and all(0 < i < 2**64 for i in ids)
    draws = iter([0, 0x77])
    monkeypatch.setattr(direct, "_span_id_bits", lambda bits: next(draws))
    monkeypatch.setattr(direct, "_new_span_id", lambda: 0x99)
    assert direct.child_context(parent).span_id == 0x99  # the 0 was redrawn by the generator
    assert direct.child_context(parent).span_id == 0x77
