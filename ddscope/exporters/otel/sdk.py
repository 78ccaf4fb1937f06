"""OpenTelemetry SDK plumbing for ddscope: providers, OTLP and Prometheus exporters, delivery
accounting and a shutdown that never hangs.

A collector that is down or slow must never stall or fail the run, so:

- spans leave through a ``BatchSpanProcessor`` with a bounded queue (full → the oldest are
  dropped, the engine never waits); a replay instead exports inline in batches (back-pressure,
  no drops: a replay has nothing else to do);
- exports have a short timeout (``EXPORT_TIMEOUT_S``), and once an export has failed during
  shutdown or replay the rest are counted as failed at once instead of retried;
- shutdown runs in helper threads joined against one deadline (``SHUTDOWN_TIMEOUT_S``): the SDK's
  own ``BatchSpanProcessor.shutdown()`` may wait 30 s;
- every span is accounted for (``otel_delivery``: ended = delivered + failed + dropped) and
  :meth:`OtelSdk.shutdown` returns the figures for one warning line. The SDK's own log lines
  are held back while this set-up is live; the first error of its exporting code is quoted in
  that line (its other lines, e.g. about a bad variable, are not the export's cause:
  ``setup.resolve_config`` warns about those variables itself).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NoOpTracerProvider

from ddscope import __version__
from ddscope.errors import ConfigError
from ddscope.exporters.otel.batching import MAX_REQUEST_BYTES, SpanBatching
from ddscope.exporters.otel.delivery import (
    CountingMetricExporter,
    CountingSpanExporter,
    CountingSpanProcessor,
    InlineBatchSpanProcessor,
)
from ddscope.exporters.otel.signals import METRIC_INTERVAL_MS, SIGNALS, signal_url

EXPORT_TIMEOUT_S = 2.0  # per OTLP export request, retries included
SHUTDOWN_TIMEOUT_S = 5.0  # flushing spans and metrics at the end, together
# Events per span (AIMD limit changes pile up on a domain's span); OTEL_SPAN_EVENT_COUNT_LIMIT wins.
SPAN_EVENT_LIMIT = 1024
# Held while the set-up is live. opentelemetry.util.re parses the header variables (its line
# about a malformed entry would reach the terminal through logging's last resort, once per
# exporter, beside ddscope's own warning about that variable).
_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk", "opentelemetry.util.re")
# Of those, the code that exports (the exporters, the span and metric processors and readers):
# only its lines may be a failed export's cause.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics.export",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk._shared_internal",  # the batch processor behind BatchSpanProcessor
)


class _HeldLogs(logging.Handler):
    """Keeps the SDK's log lines off the terminal; remembers the first one of the exporting
    code's about each signal, so that the warning about spans quotes a span export's cause, not
    a metric's, nor a line about something else (the sampler's "Couldn't recognize sampler" is
    logged by ``opentelemetry.sdk.trace.sampling``, which a name-based signal would put to
    spans)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first_errors: dict[str, str] = {}  # "spans", "metrics" or "other" → first line
        self._saved: list[tuple[logging.Logger, bool]] = []
        self._lifted: list[tuple[logging.Logger, Any]] = []  # (logger, the filter lifted)

    def emit(self, record: logging.LogRecord) -> None:
        # The first line at WARNING or above names the cause ("Connection refused", a status
        # code); later ones are retries and summaries of the same failure.
        if not _about_exporting(record):
            return
        signal = _signal_of(record)
        if signal not in self.first_errors:
            self.first_errors[signal] = record.getMessage().splitlines()[0][:300]

    def first_error(self, signal: str) -> str | None:
        """The first line about ``signal``, else the first that named neither signal."""
        return self.first_errors.get(signal) or self.first_errors.get("other")

    def install(self) -> None:
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.propagate))
            logger.addHandler(self)
            logger.propagate = False

    def lift_duplicate_filters(self) -> None:
        """The SDK's exporter loggers drop a line equal to the previous one (same template)
        within 20 s (its ``DuplicateFilter``), even when that one came from an earlier run in
        this process, or from the other signal ("Failed to export %s …" serves both): the cause
        of a failure would go missing from the warning. While these lines are held (none
        reaches the terminal, so there is no spam to spare it), the filters are lifted;
        :meth:`uninstall` puts them back. Called once the exporters exist (their modules add
        the filters when imported)."""
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and name.startswith(_LOGGERS):
                for log_filter in list(logger.filters):
                    if type(log_filter).__name__ == "DuplicateFilter":
                        logger.removeFilter(log_filter)
                        self._lifted.append((logger, log_filter))

    def uninstall(self) -> None:
        for logger, propagate in self._saved:
            logger.removeHandler(self)
            logger.propagate = propagate
        self._saved.clear()
        for logger, log_filter in self._lifted:
            logger.addFilter(log_filter)
        self._lifted.clear()


_SIGNAL_WORDS = frozenset({"traces", "spans", "span", "metrics", "logs"})


def _about_exporting(record: logging.LogRecord) -> bool:
    """Whether the line comes from the code that exports (and may name a failure's cause)."""
    return any(record.name == n or record.name.startswith(f"{n}.") for n in _EXPORT_LOGGERS)


def _signal_of(record: logging.LogRecord) -> str:
    """Which signal an SDK exporter's log line is about. Its template and arguments say so
    ("Failed to export %s to %s" with "traces" or "metrics"; SDK 1.43's HTTP exporters:
    "Failed to export span batch", "… metrics batch"), as does its logger's name; the
    collector's own words (the formatted details) are not looked at."""
    args = record.args if isinstance(record.args, tuple) else ()
    words = [arg for arg in args if arg in _SIGNAL_WORDS]
    text = " ".join([record.name, str(record.msg), *words]).lower()
    if "metric" in text:
        return "metrics"
    if "trace" in text or "span" in text:
        return "spans"
    return "other"


def resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES first, then service.name=ddscope and the
    version. The run id is not here: it is a span attribute (a resource attribute would make
    every run a new metric series)."""
    detected = Resource.create()
    extra: dict[str, str] = {}
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        extra["service.name"] = "ddscope"
    if "service.version" not in detected.attributes:
        extra["service.version"] = __version__
    return detected.merge(Resource(extra))


@dataclass
class DeliveryStats:
    """What reached the collector. ``spans_dropped`` = queue overflow or shutdown timeout."""

    spans_ended: int = 0
    spans_delivered: int = 0
    spans_failed: int = 0
    spans_too_large: int = 0  # of spans_failed: each over the request limit on its own
    request_limit_bytes: int | None = None
    metric_exports: int = 0
    metric_failures: int = 0
    first_span_error: str | None = None  # the exporter's first complaint about spans
    first_metric_error: str | None = None

    @property
    def spans_dropped(self) -> int:
        return max(0, self.spans_ended - self.spans_delivered - self.spans_failed)


def run_bounded(calls: Sequence[Callable[[], object]], timeout_s: float) -> bool:
    """Runs ``calls`` in parallel daemon threads; True if all ended within ``timeout_s``."""
    threads = [threading.Thread(target=c, name="ddscope-otel-shutdown", daemon=True) for c in calls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


def tracer_provider(processor: SpanProcessor, res: Resource | None = None) -> TracerProvider:
    limits = None if os.environ.get("OTEL_SPAN_EVENT_COUNT_LIMIT") else SPAN_EVENT_LIMIT
    # OTEL_TRACES_SAMPLER, if set, is read by the SDK. Unset, the SDK's default is
    # parentbased_always_on; the sink starts every run as a root, so that samples exactly what
    # always_on does, and always_on costs ~1.4 µs less per span.
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER", "").strip() else ALWAYS_ON
    provider = TracerProvider(
        sampler=sampler,
        resource=res or resource(),
        shutdown_on_exit=False,  # we shut down, bounded; the SDK's atexit hook could wait 30 s
        span_limits=SpanLimits(max_events=limits),
    )
    provider.add_span_processor(processor)
    return provider


def batch_processor(
    exporter: SpanExporter, *, inline: bool, batching: SpanBatching | None = None
) -> SpanProcessor:
    """Sized by ``batching`` (ddscope's defaults or ``OTEL_BSP_*``). Replay (``inline``):
    spans exported on the caller's thread, ``batching.batch_size`` at a time. Live: the SDK's
    batch processor."""
    batching = batching or SpanBatching()
    if inline:
        return InlineBatchSpanProcessor(exporter, batching.batch_size)
    return BatchSpanProcessor(
        exporter,
        max_queue_size=batching.queue_size,
        schedule_delay_millis=batching.schedule_delay_ms,
        max_export_batch_size=batching.batch_size,
        export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
    )


def periodic_reader(exporter: MetricExporter, *, final_only: bool) -> MetricReader:
    """Live: every METRIC_INTERVAL_MS (or OTEL_METRIC_EXPORT_INTERVAL). Replay: only when
    flushed, so the backend gets the run's final values once."""
    if final_only:
        interval: float | None = math.inf
    else:
        interval = None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else METRIC_INTERVAL_MS
    return PeriodicExportingMetricReader(
        exporter, export_interval_millis=interval, export_timeout_millis=EXPORT_TIMEOUT_S * 1000
    )


def meter_provider(readers: list[MetricReader], res: Resource | None = None) -> MeterProvider:
    return MeterProvider(readers, resource=res or resource(), shutdown_on_exit=False)


def held_logs() -> _HeldLogs:
    handler = _HeldLogs()
    handler.install()
    return handler


def _compression(protocol: str, name: str | None) -> Any:
    """The exporter's ``compression`` argument for ``name`` ("gzip", "deflate", "none"; as
    ``setup.resolve_config`` checked it for the protocol). None: the exporter reads the
    OTEL_EXPORTER_OTLP_*COMPRESSION variables itself."""
    if name is None:
        return None
    if protocol == "grpc":
        grpc = importlib.import_module("grpc")  # so: grpcio ships no type information
        return grpc.Compression.Gzip if name == "gzip" else grpc.Compression.NoCompression
    from opentelemetry.exporter.otlp.proto.http import Compression

    return Compression(name)


def otlp_span_exporter(
    url: str,
    protocol: str,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    compression: str | None = None,
) -> SpanExporter:
    """OTLP span exporter sending to ``url`` (``setup.signal_url``: for gRPC a base URL such as
    ``http://127.0.0.1:4317``, for OTLP/HTTP the whole URL, ``…/v1/traces``). Headers and TLS
    files still come from the OTEL_EXPORTER_OTLP_* variables, and so does the compression unless
    ``compression`` is given (:func:`_compression`). The SDK's exporters with a faster span
    encoder and requests of at most ``max_request_bytes`` (``otel/otlp.py``)."""
    from ddscope.exporters.otel.otlp import GrpcSpanExporter, HttpSpanExporter

    kind = GrpcSpanExporter if protocol == "grpc" else HttpSpanExporter
    exporter = kind(
        endpoint=url, timeout=EXPORT_TIMEOUT_S, compression=_compression(protocol, compression)
    )
    exporter.max_request_bytes = max_request_bytes
    return exporter


def otlp_metric_exporter(url: str, protocol: str, compression: str | None = None) -> MetricExporter:
    """OTLP metric exporter sending to ``url`` (as :func:`otlp_span_exporter`'s)."""
    chosen = _compression(protocol, compression)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S, compression=chosen)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S, compression=chosen)


class OtelSdk:
    """The providers behind one ``OtelSink``: OTLP spans and/or metrics (``traces``,
    ``metrics``) when ``endpoint`` is set, a Prometheus pull endpoint on 127.0.0.1 when
    ``prometheus_port`` is. ``replay=True`` exports spans inline and metrics only when flushed.
    ``targets``: signal → (URL, protocol) where it goes instead (``OtelConfig.targets``, from
    the per-signal variables); a signal not in it follows ``endpoint`` and ``protocol``.
    ``compression``: signal → its compression (``OtelConfig.compressions``); a signal not in it
    is compressed as the OTEL_EXPORTER_OTLP_*COMPRESSION variables say, read by the SDK."""

    def __init__(
        self,
        endpoint: str | None,
        protocol: str,
        prometheus_port: int | None,
        *,
        replay: bool = False,
        traces: bool = True,
        metrics: bool = True,
        batching: SpanBatching | None = None,
        targets: Mapping[str, tuple[str, str]] | None = None,
        compression: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        compression = compression or {}
        targets = dict(targets or {})
        if endpoint is not None:
            for signal in SIGNALS:
                targets.setdefault(signal, (signal_url(endpoint, protocol, signal), protocol))
        self._logs = held_logs()
        self._server: Any = None
        self._spans: CountingSpanProcessor | None = None
        self._span_exporter: CountingSpanExporter | None = None
        self._metric_exporter: CountingMetricExporter | None = None
        try:
            readers: list[MetricReader] = []
            if prometheus_port is not None:
                readers.append(self._start_prometheus(prometheus_port))
            if "traces" in targets and traces:
                request_bytes = (batching or SpanBatching()).max_request_bytes
                inner = otlp_span_exporter(
                    *targets["traces"], request_bytes, compression.get("traces")
                )
                self._span_exporter = CountingSpanExporter(inner)
                self._span_exporter.give_up_after_failure = replay
                processor = batch_processor(self._span_exporter, inline=replay, batching=batching)
                # ddscope's OTLP exporters take the sink's FinishedSpans (otel/direct.py).
                self._spans = CountingSpanProcessor(processor, takes_finished_spans=True)
            if "metrics" in targets and metrics:
                exporter = CountingMetricExporter(
                    otlp_metric_exporter(*targets["metrics"], compression.get("metrics"))
                )
                self._metric_exporter = exporter
                readers.append(periodic_reader(exporter, final_only=replay))
            res = resource()  # once: the SDK logs a bad OTEL_RESOURCE_ATTRIBUTES each time
            self.tracer_provider: Any = (
                tracer_provider(self._spans, res)
                if self._spans is not None
                else NoOpTracerProvider()
            )
            # No reader (spans only, e.g. to Jaeger): a no-op provider, so the sink's histogram
            # measurements cost nothing instead of ~3.5 µs each for nobody.
            self.meter_provider: Any = (
                meter_provider(readers, res) if readers else NoOpMeterProvider()
            )
            self._has_readers = bool(readers)
            self._logs.lift_duplicate_filters()
        except BaseException:
            self._stop_prometheus()
            self._logs.uninstall()
            raise

    def _start_prometheus(self, port: int) -> MetricReader:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=True)  # ours alone: no global state
        try:
            self._server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"--prometheus-port {port}: cannot listen on 127.0.0.1:{port} ({reason})"
            ) from exc
        return PrometheusMetricReader(registry=registry)

    def _stop_prometheus(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def flush(self) -> None:
        """Replay: export what is left of the spans, then the metrics' final values."""
        if self._spans is not None:
            self._spans.force_flush()
        if self._has_readers:
            self.meter_provider.force_flush(timeout_millis=SHUTDOWN_TIMEOUT_S * 1000)

    def shutdown(self) -> DeliveryStats:
        """Flushes and stops everything within SHUTDOWN_TIMEOUT_S; says what did not arrive."""
        exporter = self._span_exporter
        if exporter is not None:
            exporter.give_up_after_failure = True
            if exporter.failed:  # the collector already failed us: do not wait on retries
                exporter.give_up()
        calls: list[Callable[[], object]] = []
        if self._has_readers:
            calls.append(
                lambda: self.meter_provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_S * 1000)
            )
        if self._spans is not None:
            calls.append(self.tracer_provider.shutdown)
        if not run_bounded(calls, SHUTDOWN_TIMEOUT_S) and exporter is not None:
            exporter.give_up()
        self._stop_prometheus()
        self._logs.uninstall()
        return self.stats()

    def stats(self) -> DeliveryStats:
        stats = DeliveryStats(
            first_span_error=self._logs.first_error("spans"),
            first_metric_error=self._logs.first_error("metrics"),
        )
        if self._spans is not None and self._span_exporter is not None:
            stats.spans_ended = self._spans.ended
            stats.spans_delivered = self._span_exporter.delivered
            stats.spans_failed = self._span_exporter.failed
            stats.spans_too_large = self._span_exporter.failed_too_large
            stats.request_limit_bytes = getattr(
                self._span_exporter.inner, "max_request_bytes", None
            )
        if self._metric_exporter is not None:
            stats.metric_exports = self._metric_exporter.exports
            stats.metric_failures = self._metric_exporter.failed
        return stats
