"""SpanEncoder writes the same bytes as the SDK's OTLP encoder, and the exporters built on it
deliver the same requests over real gRPC and HTTP as the SDK's own exporters."""

from __future__ import annotations

from typing import Any

import pytest
from engine_records import engine_events
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkGrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as SdkHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from otel_support import ENGINE_SPEC, InMemoryOtel
from otlp_receiver import GrpcReceiver, HttpReceiver

from ddscope.exporters.otel.encode import SpanEncoder
from ddscope.exporters.otel.otlp import GrpcSpanExporter, HttpSpanExporter

REMOTE = SpanContext(
    trace_id=0x0123456789ABCDEF0123456789ABCDEF,
    span_id=0x1122334455667788,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value"), ("other", "x")]),
)
ODD_ATTRIBUTES: dict[str, Any] = {
    "str": "text",
    "empty": "",
    "unicode": "naïve – 日本",
    "true": True,
    "false": False,
    "zero": 0,
    "small": 7,
    "big": 2**40 + 3,
    "negative": -5,
    "min": -(2**63),
    "float": 0.25,
    "nan_free_negative": -1.5e300,
    "strs": ("a", "", "c"),
    "ints": (1, -2, 2**62),
    "floats": (0.5, 2.0),
    "bools": (True, False),
    "empty_tuple": (),
}


def _recorded(provider: TracerProvider, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _provider(resource: Resource, limits: SpanLimits | None = None) -> tuple[Any, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _odd_spans() -> list[ReadableSpan]:
    """Remote parents, trace state, links, events, every attribute type, statuses, limits."""
    resource = Resource({"service.name": "svc", "deployment": "test"}, schema_url="https://r/1")
    limits = SpanLimits(max_attributes=64, max_events=2, max_links=1)
    provider, exporter = _provider(resource, limits)
    tracer = provider.get_tracer("scope-a", "1.2", schema_url="https://s/1", attributes={"k": 1})
    remote_parent = set_span_in_context(NonRecordingSpan(REMOTE))
    span = tracer.start_span(
        "odd",
        context=remote_parent,
        kind=SpanKind.SERVER,
        attributes=ODD_ATTRIBUTES,
        links=[Link(REMOTE, {"why": "remote", "n": 3}), Link(REMOTE)],
        start_time=1,
    )
    span.add_event("first", {"a": 1}, timestamp=5)
    span.add_event("no attributes", timestamp=6)
    span.add_event("dropped", timestamp=7)
    span.set_status(Status(StatusCode.ERROR, "went wrong"))
    span.end(end_time=10)
    root = tracer.start_span("root", context=Context(), kind=SpanKind.PRODUCER, start_time=2)
    child = tracer.start_span("", context=set_span_in_context(root), kind=SpanKind.CONSUMER)
    child.set_status(Status(StatusCode.OK))
    child.end(end_time=3)
    root.end(end_time=4)
    other = provider.get_tracer("scope-b")  # no version, no schema
    other.start_span("b", context=Context(), start_time=0).end(end_time=0)
    return _recorded(provider, exporter)


def _assert_same_bytes(spans: list[ReadableSpan]) -> None:
    expected = encode_spans(spans).SerializeToString()
    assert SpanEncoder().encode(spans) == expected


def test_the_bytes_equal_the_sdk_encoders_for_a_run() -> None:
    spans = InMemoryOtel().feed(*engine_events(ENGINE_SPEC)).spans()
    assert {s.kind for s in spans} == {SpanKind.INTERNAL, SpanKind.CLIENT}
    assert any(s.links for s in spans) and any(s.events for s in spans)
    encoder = SpanEncoder()
    for start in range(0, len(spans), 50):  # several batches through one encoder's caches
        batch = spans[start : start + 50]
        assert encoder.encode(batch) == encode_spans(batch).SerializeToString()


def test_the_bytes_equal_the_sdk_encoders_for_every_kind_of_field() -> None:
    spans = _odd_spans()
    (odd,) = [s for s in spans if s.name == "odd"]
    assert odd.dropped_events == 1 and odd.dropped_links == 1 and odd.parent.is_remote
    _assert_same_bytes(spans)
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    (resource_spans,) = decoded.resource_spans
    assert [s.scope.name for s in resource_spans.scope_spans] == ["scope-a", "scope-b"]


def test_dropped_attributes_and_only_dropped_events_are_counted_as_the_sdk_does() -> None:
    """The counts the SDK keeps in its bounded containers (read from the span's fields on the
    fast path), also when every event was dropped; and a span class of its own (read through
    the properties) encodes the same."""
    limits = SpanLimits(max_attributes=2, max_events=0, max_links=0)
    provider, exporter = _provider(Resource({"service.name": "svc"}), limits)
    span = provider.get_tracer("t").start_span(
        "limited", context=Context(), attributes={"a": 1, "b": "x", "c": True}, start_time=1
    )
    span.add_event("gone", timestamp=2)
    span.end(end_time=3)
    (limited,) = _recorded(provider, exporter)
    assert (limited.dropped_attributes, limited.dropped_events, limited.events) == (1, 1, ())
    _assert_same_bytes([limited])

    class OwnSpan(ReadableSpan):
        pass

    own = OwnSpan(
        name="own",
        context=limited.context,
        attributes=dict(limited.attributes or {}),
        start_time=1,
        end_time=3,
        resource=limited.resource,
        instrumentation_scope=limited.instrumentation_scope,
    )
    _assert_same_bytes([own, limited])


def test_keys_with_many_distinct_values_and_a_cleared_cache_encode_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids (a new value in every span) stop being cached once a key has shown more distinct
    values than the limit; repeating values stay cached; a cache cleared when full, statuses
    that change between spans and ids above two varint bytes: the bytes stay the SDK's."""
    monkeypatch.setattr("ddscope.exporters.otel.encode._PAIR_CACHE_SIZE", 64)
    monkeypatch.setattr("ddscope.exporters.otel.encode._DISTINCT_PER_KEY", 16)
    provider, exporter = _provider(Resource({"service.name": "svc"}))
    tracer = provider.get_tracer("t")
    root = tracer.start_span("root", context=Context(), start_time=1)
    for n in range(300):
        attributes = {
            "ddscope.task_id": f"summary:{n}",  # unique
            "ddscope.lease_id": n * 997,  # unique, past 16,384 soon
            "ddscope.outcome": "ok" if n % 3 else "dropped",  # repeats
            "ddscope.attempt": 1 + n % 2,
            "flag": n % 5 == 0,
        }
        child = tracer.start_span(
            f"task {n % 4}", context=set_span_in_context(root), attributes=attributes
        )
        if n % 7 == 0:
            child.set_status(Status(StatusCode.ERROR, f"failed {n}"))
        child.end(end_time=10 + n)
    root.end(end_time=1_000)
    spans = _recorded(provider, exporter)
    encoder = SpanEncoder()
    for start in range(0, len(spans), 40):  # one encoder's caches across batches
        batch = spans[start : start + 40]
        assert encoder.encode(batch) == encode_spans(batch).SerializeToString()
    assert {"ddscope.task_id", "ddscope.lease_id"} <= encoder._busy_keys
    assert "ddscope.outcome" not in encoder._busy_keys


def test_one_key_with_equal_values_of_different_types_encodes_each_as_its_type() -> None:
    """``1 == True == 1.0`` and they hash alike: a cached pair for one must not be taken for
    another, in any order, in spans and in span events."""
    provider, exporter = _provider(Resource({"service.name": "svc"}))
    tracer = provider.get_tracer("t")
    values: list[Any] = [1, True, "1", 1.0, 0, False, 1, True, "1", 1.0]
    for n, value in enumerate(values + values[::-1]):
        span = tracer.start_span("s", context=Context(), attributes={"v": value}, start_time=n + 1)
        span.add_event("e", {"v": value}, timestamp=n + 2)
        span.end(end_time=n + 3)
    spans = _recorded(provider, exporter)
    _assert_same_bytes(spans)
    encoder = SpanEncoder()
    for start in range(0, len(spans), 3):  # one encoder's caches across batches
        batch = spans[start : start + 3]
        assert encoder.encode(batch) == encode_spans(batch).SerializeToString()


@pytest.mark.parametrize("key_length", [1, 60, 122, 123, 200])
def test_ints_at_the_varint_boundaries_encode_as_the_sdks(key_length: int) -> None:
    """Ints below 16,384 take a short path (a prefix per key and tag, then the varint bytes):
    the boundaries, a key too long for it, and one key used by spans, span events and the
    resource in turn (each with its own tag)."""
    key = "k" * key_length
    values = [0, 1, 127, 128, 129, 16383, 16384, 16385, 2**21, -1, -128, 2**63 - 1]
    provider, exporter = _provider(Resource({"service.name": "svc", key: 5}))
    tracer = provider.get_tracer("t")
    for n, value in enumerate(values * 3):  # past the distinct-value limit's count too
        span = tracer.start_span("s", context=Context(), attributes={key: value}, start_time=1)
        span.add_event("e", {key: values[-1 - n % len(values)]}, timestamp=2)
        span.end(end_time=3)
    spans = _recorded(provider, exporter)
    encoder = SpanEncoder()
    for start in range(0, len(spans), 5):
        batch = spans[start : start + 5]
        assert encoder.encode(batch) == encode_spans(batch).SerializeToString()


def test_an_int_outside_int64_is_left_out_as_the_sdk_does(caplog: pytest.LogCaptureFixture) -> None:
    provider, exporter = _provider(Resource({"service.name": "svc"}))
    tracer = provider.get_tracer("t")
    tracer.start_span("s", attributes={"huge": 2**64, "ok": 1}, start_time=1).end(end_time=2)
    spans = _recorded(provider, exporter)
    _assert_same_bytes(spans)
    (span,) = (
        ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
        .resource_spans[0]
        .scope_spans[0]
        .spans
    )
    assert [kv.key for kv in span.attributes] == ["ok"]
    assert "Failed to encode key huge" in caplog.text


def test_spans_are_grouped_by_equal_resource_and_scope_in_order_of_appearance() -> None:
    equal_a, equal_b = Resource({"service.name": "one"}), Resource({"service.name": "one"})
    providers = [_provider(r) for r in (equal_a, Resource({"service.name": "two"}), equal_b)]
    for index, (provider, _) in enumerate(providers):
        for scope in ("x", "y"):
            tracer = provider.get_tracer(scope)
            tracer.start_span(f"{index}{scope}", start_time=1).end(end_time=2)
    spans = [span for provider, exporter in providers for span in _recorded(provider, exporter)]
    spans = spans[::-1] + spans  # interleaved: groups must merge, first appearance first
    _assert_same_bytes(spans)
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert len(decoded.resource_spans) == 2


def test_an_empty_batch_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == encode_spans([]).SerializeToString() == b""


@pytest.mark.parametrize(
    ("receiver_type", "exporter_type", "sdk_type"),
    [
        (GrpcReceiver, GrpcSpanExporter, SdkGrpcSpanExporter),
        (HttpReceiver, HttpSpanExporter, SdkHttpSpanExporter),
    ],
)
def test_the_exporters_deliver_what_the_sdk_exporters_deliver(
    receiver_type: type, exporter_type: type, sdk_type: type
) -> None:
    spans = _odd_spans()
    with receiver_type() as receiver:
        suffix = "/v1/traces" if receiver_type is HttpReceiver else ""
        fast = exporter_type(endpoint=receiver.endpoint + suffix, timeout=5)
        sdk = sdk_type(endpoint=receiver.endpoint + suffix, timeout=5)
        # gRPC is fast on every supported SDK; HTTP from the SDK whose client posts bytes.
        assert fast.fast == (exporter_type is GrpcSpanExporter or _http_client_posts_bytes(sdk))
        try:
            assert fast.export(spans) is SpanExportResult.SUCCESS
            assert sdk.export(spans) is SpanExportResult.SUCCESS
        finally:
            fast.shutdown()
            sdk.shutdown()
        ours, theirs = receiver.trace_requests
    assert ours == theirs
    assert ours.SerializeToString() == encode_spans(spans).SerializeToString()


def _http_client_posts_bytes(exporter: Any) -> bool:
    return callable(getattr(getattr(exporter, "_client", None), "export", None))


class _BrokenEncoder:
    """Stands for an SDK change that breaks the fast path: every encoding raises."""

    calls = 0

    def encode(self, spans: Any) -> bytes:
        self.calls += 1
        raise RuntimeError("the SDK changed under us")


@pytest.mark.parametrize(
    ("receiver_type", "exporter_type"),
    [(GrpcReceiver, GrpcSpanExporter), (HttpReceiver, HttpSpanExporter)],
)
def test_any_exception_on_the_fast_path_falls_back_to_the_sdk_exporter(
    receiver_type: type, exporter_type: type
) -> None:
    spans = _odd_spans()
    with receiver_type() as receiver:
        suffix = "/v1/traces" if receiver_type is HttpReceiver else ""
        exporter = exporter_type(endpoint=receiver.endpoint + suffix, timeout=5)
        broken = exporter._encoder = _BrokenEncoder()
        try:
            # The batch that broke the fast path is delivered by the SDK's own path, and so
            # is every later one, without trying the fast path again.
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert not exporter.fast
        # Tried once — to encode on the fast path, or to size the batch on the SDK's — and
        # never again.
        assert broken.calls == 1
        first, second = receiver.trace_requests
    expected = encode_spans(spans).SerializeToString()
    assert first.SerializeToString() == second.SerializeToString() == expected


def test_a_grpc_channel_without_the_expected_internals_uses_the_sdk_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A later SDK whose exporter has no ``_stub``: the SDK's own stub and encoder."""
    spans = _odd_spans()
    monkeypatch.setattr(
        "ddscope.exporters.otel.otlp._BytesTraceStub.__init__",
        lambda self, channel: (_ for _ in ()).throw(AttributeError("no unary_unary")),
    )
    with GrpcReceiver() as receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, timeout=5)
        try:
            assert not exporter.fast
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        (request,) = receiver.trace_requests
    assert request.SerializeToString() == encode_spans(spans).SerializeToString()
