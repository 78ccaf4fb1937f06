"""OTLP span exporters (gRPC and HTTP/protobuf) that send the bytes of :class:`SpanEncoder`.

They are the SDK's own exporters — same clients, channel, TLS, headers, compression, timeouts,
retries and log lines, all configured by the ``OTEL_EXPORTER_OTLP_*`` variables — with only the
encoding step replaced: the SDK's encoder costs ~30 µs per span, ``encode.SpanEncoder`` ~2.7 µs,
and the bytes on the wire are the same.

How the encoding step is replaced relies on the SDK exporters' internals: the gRPC one calls
``self._client.Export(request=self._translate_data(spans))`` on a stub built by
``self._stub(self._channel)`` (so the stub here takes bytes: no request serializer; the same on
every SDK from 1.43 to 1.45), and the HTTP one (SDK ≥ 1.45) posts ``self._client.export(bytes)``.

Supported: opentelemetry-sdk 1.43 (DataDesigner's pin) to the newest. Internals move between
releases, so every step of the fast path is guarded: a shape not recognised at construction
(e.g. the HTTP exporter of SDK 1.43, which encodes inline in ``export``) means the SDK's own
path from the start, and *any* exception on the fast path switches the exporter to the SDK's
own path for good (logged once) and hands it the same batch. An upgrade costs speed, never spans.

Both take the sink's ``FinishedSpan`` (``direct.py``) beside the SDK's spans: the encoder reads
either, and the SDK's own path gets them as ``ReadableSpan``.

**Requests of at most 4 MiB.** A batch of spans is cut by count
(``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), not by size, and spans that carry prompts and completions
(``--record-text`` with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``) can make a
batch of 512 larger than the 4 MiB a gRPC server takes by default — the Collector, Jaeger and
Tempo keep that limit unless told otherwise. Such a request is refused as a whole
(``RESOURCE_EXHAUSTED``, which the SDK retries until its timeout): every span in it is lost,
small ones too. Both exporters cut such a batch in halves until each request is at most
``max_request_bytes`` (:func:`sized_batches`; 4 MiB, or ``DDSCOPE_OTLP_MAX_REQUEST_BYTES`` for
a collector or a proxy with another limit), in order; on the fast path a batch that fits
is encoded once, as before, and only a batch too large is encoded again, half by half; the SDK's
own path is sized by the same encoder. A single span larger than the limit on its own is not
sent: the server would refuse it (and the SDK retry that until its timeout); it is counted as
failed and the delivery warning names the variable that caps attribute values
(``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``). A delivery counter in front
(``delivery.CountingSpanExporter``) asks for the parts first and counts each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkGrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as SdkHttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from ddscope.exporters.otel.batching import MAX_REQUEST_BYTES
from ddscope.exporters.otel.direct import readable_spans
from ddscope.exporters.otel.encode import SpanEncoder

_logger = logging.getLogger(__name__)
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FALLBACK_MESSAGE = "ddscope's fast OTLP span encoding failed (%r); using the SDK's own exporter"
TOO_LARGE_MESSAGE = "a span of %d bytes is over the %d-byte OTLP request limit on its own; not sent"


class EncodedBatch(list[Any]):
    """Spans with the OTLP request bytes they encode to (made by :func:`sized_batches`)."""

    __slots__ = ("request",)

    def __init__(self, spans: Sequence[Any], request: bytes) -> None:
        super().__init__(spans)
        self.request = request


def sized_batches(
    encode: Callable[[Sequence[Any]], bytes], spans: Sequence[Any], limit: int
) -> list[EncodedBatch]:
    """``spans``, in order, as batches whose encoded request is at most ``limit`` bytes: the
    whole batch when it fits (one encoding, the usual case), else its halves, cut again as
    needed. A span that does not fit alone is a batch of its own."""
    batches: list[EncodedBatch] = []
    waiting = [spans]  # parts not yet encoded, the next one last
    while waiting:
        part = waiting.pop()
        request = encode(part)
        if len(request) <= limit or len(part) <= 1:
            batches.append(EncodedBatch(part, request))
            continue
        middle = len(part) // 2
        waiting += (part[middle:], part[:middle])  # the first half is encoded next
    return batches


class _SizedRequests:
    """What both exporters share: a batch sent as requests of at most ``max_request_bytes``.
    The exporter provides ``fast``, ``_encoder``, ``_export_batch`` (one request, the fast or
    the SDK's path) and ``_use_sdk_path``."""

    max_request_bytes = MAX_REQUEST_BYTES
    fast: bool
    _encoder: SpanEncoder
    _encoder_works = True  # until it raises: then batches go whole, by the SDK's own path

    def batches(self, spans: Sequence[Any]) -> list[Sequence[Any]]:
        """``spans`` as the requests to send: one, unless it is too large. The SDK's own path
        (an exporter whose internals the fast path does not know, e.g. OTLP/HTTP on SDK 1.43)
        is cut the same way — the encoder's bytes are the SDK encoder's, so are their sizes —
        for one more encoding of each batch, ≈ 10 % of what the SDK's encoder costs."""
        if type(spans) is EncodedBatch or not self._encoder_works:
            return [spans]
        try:
            return list(sized_batches(self._encoder.encode, spans, self.max_request_bytes))
        except Exception as error:  # the encoder is broken: the SDK's path, whole batches
            self._encoder_works = False
            if self.fast:
                self._use_sdk_path(error)
            return [spans]

    def too_large_alone(self, spans: Sequence[Any]) -> TypeGuard[EncodedBatch]:
        """Whether ``spans`` (a part from :meth:`batches`) is one span whose request is over
        the limit: no cut makes it fit, so it is not sent."""
        return (
            type(spans) is EncodedBatch
            and len(spans) == 1
            and len(spans.request) > self.max_request_bytes
        )

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        outcome = SpanExportResult.SUCCESS
        for part in self.batches(spans):
            if self.too_large_alone(part):
                _logger.warning(TOO_LARGE_MESSAGE, len(part.request), self.max_request_bytes)
                outcome = SpanExportResult.FAILURE
            elif self._export_batch(part) is not SpanExportResult.SUCCESS:
                outcome = SpanExportResult.FAILURE
        return outcome

    def _request(self, spans: Sequence[Any]) -> bytes:
        """The fast path's request bytes: made already for a batch whose size was checked."""
        if type(spans) is EncodedBatch:
            return spans.request
        return self._encoder.encode(spans)

    def _export_batch(self, spans: Sequence[Any]) -> SpanExportResult:
        raise NotImplementedError

    def _use_sdk_path(self, error: BaseException) -> None:
        raise NotImplementedError


class _BytesTraceStub:
    """``TraceServiceStub`` whose ``Export`` takes the serialized request (gRPC sends bytes
    as they are when a method has no request serializer)."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )


class GrpcSpanExporter(_SizedRequests, SdkGrpcSpanExporter):
    """The SDK's OTLP/gRPC span exporter, encoding with :class:`SpanEncoder`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()
        self.fast = False
        self._sdk_stub: Any = getattr(self, "_stub", None)
        try:
            if all(hasattr(self, name) for name in ("_stub", "_client", "_channel")):
                # The SDK rebuilds the client from _stub when it reconnects: keep ours there.
                client: Any = _BytesTraceStub(self._channel)
                self._stub = _BytesTraceStub
                self._client = client
                self.fast = True
        except Exception as error:  # an unknown channel: the SDK's own stub and encoder
            self._use_sdk_path(error)

    def _export_batch(self, spans: Sequence[Any]) -> SpanExportResult:
        if not self.fast:
            return SdkGrpcSpanExporter.export(self, spans)
        try:
            return SdkGrpcSpanExporter.export(self, spans)
        except Exception as error:  # the SDK catches gRPC errors; anything else is ours
            self._use_sdk_path(error)
            return SdkGrpcSpanExporter.export(self, spans)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        if self.fast:
            return self._request(data)
        return super()._translate_data(readable_spans(data))

    def _use_sdk_path(self, error: BaseException) -> None:
        _logger.warning(FALLBACK_MESSAGE, error)
        self.fast = False
        if self._sdk_stub is not None:
            self._stub = self._sdk_stub
            channel = getattr(self, "_channel", None)
            self._client = self._sdk_stub(channel) if channel is not None else None


class HttpSpanExporter(_SizedRequests, SdkHttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with :class:`SpanEncoder` (SDK ≥ 1.45)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()
        needed = ("_client", "_shutdown", "_metrics", "_max_request_size")
        client = getattr(self, "_client", None)
        self.fast = all(hasattr(self, name) for name in needed) and callable(
            getattr(client, "export", None)
        )

    def _export_batch(self, spans: Sequence[Any]) -> SpanExportResult:
        if self.fast:
            try:
                return self._fast_export(spans)
            except Exception as error:  # the SDK's own exporter, for this batch and the rest
                self._use_sdk_path(error)
        return SdkHttpSpanExporter.export(self, readable_spans(spans))

    def _use_sdk_path(self, error: BaseException) -> None:
        _logger.warning(FALLBACK_MESSAGE, error)
        self.fast = False

    def _fast_export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The SDK 1.45 ``export`` body with the encoder swapped. An exception raised here
        before the request is sent leaves the batch to the SDK's path."""
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            data = self._request(spans)
            if 0 < self._max_request_size < len(data):
                message = (
                    f"Serialized span request size {len(data)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes."
                )
                _logger.warning("Dropping span batch: %s", message)
                result.error = ValueError(message)
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {"http.response.status_code": sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
