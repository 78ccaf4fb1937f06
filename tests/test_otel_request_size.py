"""OTLP requests of at most 4 MiB (``otlp.sized_batches``): a batch of spans too large for one
request — spans carrying prompts and completions — is cut into requests a receiver with the
default limits takes, instead of being refused whole. Real receivers on 127.0.0.1: gRPC with its
default 4 MiB limit, OTLP/HTTP with a body limit as a collector's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_receiver import GrpcReceiver, HttpReceiver, attributes

from ddscope.cli.main import cli
from ddscope.exporters.otel.batching import MAX_REQUEST_BYTES, MAX_REQUEST_BYTES_ENV
from ddscope.exporters.otel.delivery import CountingSpanExporter
from ddscope.exporters.otel.otlp import (
    EncodedBatch,
    GrpcSpanExporter,
    HttpSpanExporter,
    sized_batches,
)
from ddscope.exporters.otel.sdk import otlp_span_exporter
from ddscope.exporters.otel.setup import resolve_config
from ddscope.mock.server import MockServer

KIB = 1024
TEXT_BYTES = 64 * KIB  # one completion-sized attribute a span: 200 spans ≈ 13 MB


def _spans(sizes: Sequence[int]) -> list[ReadableSpan]:
    """One finished span per size, named ``s0``, ``s1``…, each with a text attribute of that
    many bytes (0: none)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i, size in enumerate(sizes):
        attributes = {"gen_ai.output.messages": "x" * size} if size else {}
        tracer.start_span(f"s{i}", context=Context(), attributes=attributes).end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


class _Lengths:
    """An encoder for the pure logic: a request is one byte per unit of its items."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, items: Sequence[int]) -> bytes:
        self.calls.append(len(items))
        return b"x" * sum(items)


def test_a_batch_that_fits_is_one_request_encoded_once() -> None:
    encode = _Lengths()
    (batch,) = sized_batches(encode, [3, 4, 5], limit=12)
    assert list(batch) == [3, 4, 5]
    assert batch.request == b"x" * 12
    assert encode.calls == [3]


def test_a_batch_too_large_is_cut_in_order_into_requests_under_the_limit() -> None:
    items = [5, 1, 7, 2, 2, 9, 3, 4, 6, 1, 8]
    batches = sized_batches(_Lengths(), items, limit=12)
    assert [item for batch in batches for item in batch] == items
    assert all(len(batch.request) <= 12 for batch in batches)
    assert all(batch.request == b"x" * sum(batch) for batch in batches)
    assert len(batches) > 1


def test_a_span_larger_than_the_limit_goes_alone_and_the_rest_still_fit() -> None:
    batches = sized_batches(_Lengths(), [1, 2, 50, 3, 4], limit=10)
    assert [list(batch) for batch in batches if 50 in batch] == [[50]]
    assert [item for batch in batches for item in batch] == [1, 2, 50, 3, 4]
    assert all(len(batch.request) <= 10 for batch in batches if 50 not in batch)


def test_an_empty_batch_is_one_empty_request() -> None:
    (batch,) = sized_batches(_Lengths(), [], limit=10)
    assert list(batch) == []
    assert batch.request == b""


def _receiver(protocol: str) -> Any:
    if protocol == "grpc":
        return GrpcReceiver()
    return HttpReceiver(max_body_bytes=MAX_REQUEST_BYTES)


def _exporter(protocol: str, receiver: Any, timeout: float = 10) -> Any:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=receiver.endpoint, timeout=timeout)
    return HttpSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=timeout)


@pytest.mark.parametrize("sdk_path", [False, True], ids=["fast_path", "sdk_path"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_batch_over_4_mib_reaches_a_default_receiver_in_requests_under_it(
    protocol: str, sdk_path: bool
) -> None:
    """Either path: the fast one, or the SDK's own (what OTLP/HTTP on SDK 1.43 always takes)."""
    spans = _spans([TEXT_BYTES] * 200)
    with _receiver(protocol) as receiver:
        inner = _exporter(protocol, receiver)
        if sdk_path:  # as after the fast path failed: the SDK's own stub and encoder
            inner._use_sdk_path(RuntimeError("the test takes the SDK's path"))
        counting = CountingSpanExporter(inner)
        try:
            assert counting.export(spans) is SpanExportResult.SUCCESS
        finally:
            counting.shutdown()
        requests = list(receiver.trace_requests)
    assert counting.delivered == 200
    assert counting.failed == 0
    assert [span.name for span in receiver.spans()] == [f"s{i}" for i in range(200)]
    assert len(requests) >= 4  # ≈ 13 MB: at least four requests of at most 4 MiB
    assert all(request.ByteSize() <= MAX_REQUEST_BYTES for request in requests)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_receiver_refuses_the_same_batch_sent_whole(protocol: str) -> None:
    """The control for the test above: uncut, the request is refused and every span is lost."""
    spans = _spans([TEXT_BYTES] * 200)
    with _receiver(protocol) as receiver:
        inner = _exporter(protocol, receiver, timeout=1)
        inner.max_request_bytes = 2**62  # never cut
        counting = CountingSpanExporter(inner)
        try:
            assert counting.export(spans) is SpanExportResult.FAILURE
        finally:
            counting.shutdown()
        assert receiver.spans() == []
    assert (counting.delivered, counting.failed) == (0, 200)


def test_one_span_over_the_limit_is_the_only_one_lost_and_is_not_sent() -> None:
    sizes = [KIB] * 10 + [MAX_REQUEST_BYTES + KIB] + [KIB] * 10
    spans = _spans(sizes)
    with GrpcReceiver() as receiver:
        inner = _exporter("grpc", receiver, timeout=1)
        sent = _spy_on_requests(inner)
        counting = CountingSpanExporter(inner)
        try:
            assert counting.export(spans) is SpanExportResult.FAILURE
        finally:
            counting.shutdown()
        names = [span.name for span in receiver.spans()]
    assert (counting.delivered, counting.failed, counting.failed_too_large) == (20, 1, 1)
    assert names == [f"s{i}" for i in range(21) if i != 10]
    assert sum(sent) == 20 and len(sent) >= 2  # the large span was never offered to gRPC


def _spy_on_requests(exporter: Any) -> list[int]:
    """The number of spans in each request ``exporter`` sends (its ``_export_batch``)."""
    sent: list[int] = []
    export_batch = exporter._export_batch

    def spied(spans: Sequence[Any]) -> SpanExportResult:
        sent.append(len(spans))
        result: SpanExportResult = export_batch(spans)
        return result

    exporter._export_batch = spied
    return sent


def test_the_exporter_alone_does_not_send_a_span_too_large_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans = _spans([KIB, MAX_REQUEST_BYTES + KIB, KIB])
    with GrpcReceiver() as receiver:
        exporter = _exporter("grpc", receiver, timeout=1)
        sent = _spy_on_requests(exporter)
        try:
            assert exporter.export(spans) is SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
        names = [span.name for span in receiver.spans()]
    assert names == ["s0", "s2"] and sum(sent) == 2
    assert "over the 4194304-byte OTLP request limit on its own; not sent" in caplog.text


def test_the_exporter_alone_cuts_too() -> None:
    """Without a delivery counter in front, the exporter's own ``export`` sends the parts."""
    spans = _spans([TEXT_BYTES] * 100)
    with GrpcReceiver() as receiver:
        exporter = _exporter("grpc", receiver)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert len(receiver.trace_requests) >= 2
        assert len(receiver.spans()) == 100


def test_a_batch_already_cut_is_sent_as_encoded() -> None:
    spans = _spans([KIB] * 3)
    with GrpcReceiver() as receiver:
        exporter = _exporter("grpc", receiver)
        (batch,) = exporter.batches(spans)
        assert type(batch) is EncodedBatch
        assert exporter.batches(batch) == [batch]
        exporter._encoder = None  # the request must come from the batch, not a new encoding
        try:
            assert exporter.export(batch) is SpanExportResult.SUCCESS
            assert exporter.fast  # not delivered by falling back to the SDK's encoder
        finally:
            exporter.shutdown()
        (request,) = receiver.trace_requests
    assert request.SerializeToString() == batch.request


MIB = 1024 * KIB


@pytest.mark.parametrize(
    ("protocol", "limit"),
    [("grpc", MAX_REQUEST_BYTES), ("http/protobuf", MIB)],
    ids=["grpc_default_4_mib", "http_behind_a_1_mib_proxy"],
)
def test_ddtrace_run_with_long_prompts_delivers_every_span_in_requests_under_the_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str, limit: int
) -> None:
    """The user's case end to end: ``ddtrace run --record-text`` with the GenAI capture opt-in
    and prompts of 48 KiB — to a gRPC receiver with its default 4 MiB limit, and to an OTLP/HTTP
    receiver behind a 1 MiB body limit (an nginx ingress's default) with
    ``DDSCOPE_OTLP_MAX_REQUEST_BYTES`` set to match. The batch processor waits 30 s between
    batches, so the run's spans (≈ 6 MB) leave in one batch at the end. Then ``ddtrace export
    run.jsonl --otlp`` replays the record to the same kind of receiver."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "30000")
    if limit != MAX_REQUEST_BYTES:
        monkeypatch.setenv("DDSCOPE_OTLP_MAX_REQUEST_BYTES", str(limit))
    records = 120
    preamble = "Follow the house style guide. " * (48 * KIB // 30)
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver(max_body_bytes=limit)
    with MockServer(latency_ms=5) as server, receiver:
        pipeline = {
            "name": "long-prompts",
            "providers": [{"name": "mock", "endpoint": server.base_url}],
            "models": [
                {
                    "alias": "writer",
                    "provider": "mock",
                    "model": "mock-model",
                    "max_parallel_requests": 32,
                }
            ],
            "columns": [
                {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a"]},
                {
                    "name": "summary",
                    "type": "llm_text",
                    "model": "writer",
                    "prompt": preamble + "Summarise topic {{ topic }}.",
                },
            ],
            "run": {"num_records": records, "buffer_size": 40},
        }
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps(pipeline), encoding="utf-8")
        args = ["run", str(path), "-q", "--record-text", "-o", str(tmp_path / "out"),
                "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", protocol]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
        spans = receiver.spans()
        requests = list(receiver.trace_requests)
    chats = [span for span in spans if span.name == "chat mock-model"]
    assert len(chats) == records
    assert all(
        len(attributes(span.attributes)["gen_ai.input.messages"]) > 48 * KIB for span in chats
    )
    assert len([span for span in spans if span.name == "task summary"]) == records
    assert len(requests) >= (2 if limit == MAX_REQUEST_BYTES else 6)
    assert all(request.ByteSize() <= limit for request in requests)
    # The replay of the run's record sends the same spans within the same limit.
    replayed = GrpcReceiver() if protocol == "grpc" else HttpReceiver(max_body_bytes=limit)
    with replayed:
        args = ["export", str(tmp_path / "out" / "run.jsonl"), "--otlp", replayed.endpoint,
                "--otlp-protocol", protocol]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        chats = [span for span in replayed.spans() if span.name == "chat mock-model"]
        assert len(chats) == records
        assert all(
            len(attributes(span.attributes)["gen_ai.input.messages"]) > 48 * KIB for span in chats
        )
        assert all(request.ByteSize() <= limit for request in replayed.trace_requests)


@pytest.mark.parametrize("value", ["1048576", " 65536 "])
def test_ddscope_otlp_max_request_bytes_sets_the_limit_of_the_exporter(value: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", MAX_REQUEST_BYTES_ENV: value}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and warnings == []
    assert config.batching.max_request_bytes == int(value)
    exporter = otlp_span_exporter(
        "http://127.0.0.1:4317", "grpc", config.batching.max_request_bytes
    )
    try:
        assert exporter.max_request_bytes == int(value)  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("value", ["1M", "0", "-5", "4.5"])
def test_a_bad_max_request_bytes_is_skipped_with_a_warning_naming_it(value: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", MAX_REQUEST_BYTES_ENV: value}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None
    assert config.batching.max_request_bytes == MAX_REQUEST_BYTES
    assert warnings == [
        f"DDSCOPE_OTLP_MAX_REQUEST_BYTES={value!r} is not a positive whole number; "
        f"using {MAX_REQUEST_BYTES}"
    ]


def _run_with_one_huge_prompt(tmp_path: Path, endpoint: str) -> Any:
    """``ddtrace run --record-text`` with the GenAI capture opt-in and a 4.5 MiB prompt: each
    chat span is larger than a request may be on its own."""
    with MockServer(latency_ms=1) as server:
        pipeline = {
            "name": "huge-prompt",
            "providers": [{"name": "mock", "endpoint": server.base_url}],
            "models": [{"alias": "writer", "provider": "mock", "model": "mock-model"}],
            "columns": [
                {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a"]},
                {
                    "name": "summary",
                    "type": "llm_text",
                    "model": "writer",
                    "prompt": "y" * (MAX_REQUEST_BYTES + MIB // 2) + " {{ topic }}",
                },
            ],
            "run": {"num_records": 2, "buffer_size": 2},
        }
        tmp_path.mkdir()
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps(pipeline), encoding="utf-8")
        args = ["run", str(path), "-q", "--record-text", "-o", str(tmp_path / "out"),
                "--otlp-endpoint", endpoint, "--otlp-protocol", "grpc"]  # fmt: skip
        return CliRunner().invoke(cli, args)


def test_a_span_too_large_alone_is_named_in_the_warning_with_the_variable_that_caps_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No cut can save a span over the limit on its own: the warning says how many were, and
    names the variable that caps attribute values. Set, it is what gets every span through."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    with GrpcReceiver() as receiver:
        result = _run_with_one_huge_prompt(tmp_path / "a", receiver.endpoint)
        names = [span.name for span in receiver.spans()]
    assert result.exit_code == 0, result.output
    assert (
        "2 of 7 spans did not reach" in result.stderr
        and "2 failed to export (2 of them not sent, each larger than the 4194304-byte request "
        "limit on its own"
        in result.stderr
    )
    assert "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT" in result.stderr
    assert "chat mock-model" not in names and names.count("task summary") == 2
    # The replay of that record: the same two spans left out, the rest delivered, and no hint
    # that the collector is to blame (a replay gives up on the rest when the collector fails).
    with GrpcReceiver() as receiver:
        args = ["export", str(tmp_path / "a" / "out" / "run.jsonl"), "--otlp", receiver.endpoint]
        replayed = CliRunner().invoke(cli, args)
        names = [span.name for span in receiver.spans()]
    assert replayed.exit_code == 1
    assert "2 of them not sent, each larger than the 4194304-byte" in replayed.stderr
    assert "listening" not in replayed.stderr
    assert "chat mock-model" not in names and names.count("task summary") == 2

    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", str(64 * KIB))
    with GrpcReceiver() as receiver:
        result = _run_with_one_huge_prompt(tmp_path / "b", receiver.endpoint)
        chats = [span for span in receiver.spans() if span.name == "chat mock-model"]
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert len(chats) == 2
    assert all(
        len(attributes(span.attributes)["gen_ai.input.messages"]) == 64 * KIB for span in chats
    )


def test_spans_refused_for_another_reason_are_not_called_too_large() -> None:
    """Only a span over the limit on its own is counted so: not a batch of small spans, nor a
    single small span, lost to a collector that is not there."""
    spans = _spans([KIB] * 3)
    absent = GrpcReceiver()  # a free port with nothing listening
    counting = CountingSpanExporter(_exporter("grpc", absent, timeout=1))
    try:
        counting.export(spans)
        counting.export(spans[:1])
    finally:
        counting.shutdown()
    assert (counting.failed, counting.failed_too_large) == (4, 0)
