"""Delivery accounting for OTLP export: exporters that count what reached the collector and what
failed, a processor that counts ended spans (ended − delivered − failed = dropped), and an inline
batch processor for replay (back-pressure instead of drops).

A counting exporter can *give up*: every later batch fails at once (counted) and a retry that is
waiting stops. The set-up does that once the collector has failed during shutdown or replay, so
a collector that is down costs one export timeout, not one per batch.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ddscope.exporters.otel.batching import SPAN_BATCH_SIZE


class CountingSpanExporter(SpanExporter):
    """Counts what ``inner`` delivered and what failed; can be told to give up."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.delivered = 0
        self.failed = 0
        self.failed_too_large = 0  # of ``failed``: spans each over the request limit alone
        self.give_up_after_failure = False  # set for replay and for shutdown
        self._gave_up = False
        self._inner_shut = threading.Lock()
        self._inner_is_shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Exports ``spans`` as the requests ``inner`` would send (ddscope's OTLP exporters cut
        a batch too large for one request, ``otlp.sized_batches``), counting each: a refused
        request fails its own spans, not the whole batch."""
        outcome = SpanExportResult.SUCCESS
        for part in self._requests(spans):
            if self._export_part(part) is not SpanExportResult.SUCCESS:
                outcome = SpanExportResult.FAILURE
        return outcome

    def _requests(self, spans: Sequence[ReadableSpan]) -> list[Sequence[ReadableSpan]]:
        batches = getattr(self.inner, "batches", None)
        if batches is None or self._gave_up:
            return [spans]
        try:
            parts: list[Sequence[ReadableSpan]] = batches(spans)
        except Exception:  # an exporter bug: the batch as it is
            return [spans]
        return parts

    def _export_part(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._too_large_alone(spans):
            # Not sent: it would be refused, and the refusal would say nothing about the
            # collector, so it must not make a shutdown or a replay give up on the rest.
            self.failed += len(spans)
            self.failed_too_large += len(spans)
            return SpanExportResult.FAILURE
        if self._gave_up:
            self.failed += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.delivered += len(spans)
        else:
            self.failed += len(spans)
            self._gave_up = self.give_up_after_failure
        return result

    def _too_large_alone(self, spans: Sequence[ReadableSpan]) -> bool:
        too_large_alone = getattr(self.inner, "too_large_alone", None)
        return too_large_alone is not None and bool(too_large_alone(spans))

    def give_up(self) -> None:
        """Every later batch fails at once; an export retrying now stops waiting."""
        self._gave_up = True
        self.shutdown()

    def shutdown(self) -> None:
        with self._inner_shut:
            if self._inner_is_shut:
                return
            self._inner_is_shut = True
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Counts metric exports and failed ones."""

    def __init__(self, inner: MetricExporter) -> None:
        # Private on every SDK from 1.43 to 1.45; None (the SDK's defaults) if that changes.
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner = inner
        self.exports = 0
        self.failed = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.failed += 1
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class CountingSpanProcessor(SpanProcessor):
    """Counts ended (sampled) spans in front of ``inner``: ended − delivered − failed = dropped.

    ``takes_finished_spans``: set by whoever builds it over exporters that take the sink's
    ``FinishedSpan`` (ddscope's OTLP exporters); ``direct.DirectSpans`` then hands those over
    instead of building a ``ReadableSpan`` for each."""

    def __init__(self, inner: SpanProcessor, *, takes_finished_spans: bool = False) -> None:
        self.inner = inner
        self.ended = 0
        self.takes_finished_spans = takes_finished_spans
        self._enqueue_all = _queue_of(inner)

    def take_finished(self, spans: list[Any]) -> None:
        """Finished spans whose trace the caller knows is sampled (``direct.DirectSpans``
        hands them over once per batch of events), in the order they ended."""
        self.ended += len(spans)
        self._enqueue_all(spans)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _queue_of(processor: SpanProcessor) -> Callable[[list[Any]], None]:
    """What puts a list of sampled finished spans on ``processor``: for the SDK's batch span
    processor, its queue directly, the whole list at once — what its ``on_end`` does per span
    after the sampling check (``emit``: ~0.35 µs a span more, an ``os.getpid()`` each); for
    any other processor, ``on_end`` per span.

    Guarded: the queue and its fields are internal (the same on SDK 1.43 to 1.45). Whenever
    the batch processor has something to say — it is shut down, the process forked, or the
    list would not fit in its bounded queue — the spans go through its own ``emit`` one at a
    time, which logs and counts what it drops as it always does."""
    batch: Any = getattr(processor, "_batch_processor", None)
    fields = ("_shutdown", "_pid", "_queue", "_max_queue_size", "_max_export_batch_size")
    usable = (
        batch is not None
        and callable(getattr(batch, "emit", None))
        and all(hasattr(batch, name) for name in fields)
        and isinstance(batch._queue, deque)
        and isinstance(getattr(batch, "_worker_awaken", None), threading.Event)
    )
    if not usable:
        on_end = processor.on_end

        def each_on_end(spans: list[Any]) -> None:
            for span in spans:
                on_end(span)

        return each_on_end

    def enqueue_all(spans: list[Any]) -> None:
        queue = batch._queue
        if (
            batch._shutdown
            or batch._pid != os.getpid()
            or (len(queue) + len(spans) > batch._max_queue_size)
        ):
            for span in spans:
                batch.emit(span)
            return
        queue.extendleft(spans)  # emit's appendleft, span after span
        awaken = batch._worker_awaken
        if len(queue) >= batch._max_export_batch_size and not awaken.is_set():
            awaken.set()

    return enqueue_all


class InlineBatchSpanProcessor(SpanProcessor):
    """Exports on the caller's thread every ``batch_size`` spans: for replay, where waiting for
    the collector is the job and dropping spans would be wrong."""

    def __init__(self, exporter: SpanExporter, batch_size: int = SPAN_BATCH_SIZE) -> None:
        self._exporter = exporter
        self._batch_size = batch_size
        self._batch: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self._batch.append(span)
        if len(self._batch) >= self._batch_size:
            self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        batch, self._batch = self._batch, []
        if batch:
            self._exporter.export(batch)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._exporter.shutdown()
