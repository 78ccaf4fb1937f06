"""How the span export batches: ddscope's defaults, or the standard ``OTEL_BSP_*`` variables
when they are set (``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_SCHEDULE_DELAY`` in milliseconds,
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), as the SDK's ``BatchSpanProcessor`` reads them when it is
given no values. A replay (``ddtrace export --otlp``) exports on its own thread as it reads and
uses only the batch size. ``DDSCOPE_OTLP_MAX_REQUEST_BYTES`` bounds one export request's size
(``otlp.sized_batches`` cuts a batch that would be larger): 4 MiB, gRPC's default receive limit,
unless the collector's own limit, or a proxy's in front of it, is another.

ddscope passes its own values to the SDK, so without this the variables would be ignored. A bad
value is skipped with a one-line warning naming the variable (the SDK logs a traceback and uses
its own defaults); a batch larger than the queue, which the SDK refuses, is cut to the queue.
Imports no OpenTelemetry (``setup`` reads this at the start of every command that might export).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SPAN_QUEUE_SIZE = 8192  # spans waiting for export; beyond this the oldest are dropped
SPAN_SCHEDULE_DELAY_MS = 1000  # a batch leaves at least this often
SPAN_BATCH_SIZE = 512  # spans per export request (the SDK's default)
# Bytes per export request: gRPC's default receive limit, kept by the Collector, Jaeger and Tempo
# unless configured otherwise; well under OTLP/HTTP receivers' default body limits.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES_ENV = "DDSCOPE_OTLP_MAX_REQUEST_BYTES"


@dataclass(frozen=True)
class SpanBatching:
    queue_size: int = SPAN_QUEUE_SIZE
    schedule_delay_ms: int = SPAN_SCHEDULE_DELAY_MS
    batch_size: int = SPAN_BATCH_SIZE
    max_request_bytes: int = MAX_REQUEST_BYTES


def span_batching(env: Mapping[str, str], warnings: list[str]) -> SpanBatching:
    """The batching ``env`` asks for; a warning for each value not used."""
    defaults = SpanBatching()
    queue = _positive_int("OTEL_BSP_MAX_QUEUE_SIZE", defaults.queue_size, env, warnings)
    delay = _positive_int("OTEL_BSP_SCHEDULE_DELAY", defaults.schedule_delay_ms, env, warnings)
    batch = _positive_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", defaults.batch_size, env, warnings)
    if batch > queue:
        warnings.append(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is larger than the export queue "
            f"({queue} spans); using {queue}"
        )
        batch = queue
    request_bytes = _positive_int(MAX_REQUEST_BYTES_ENV, defaults.max_request_bytes, env, warnings)
    return SpanBatching(queue, delay, batch, request_bytes)


def _positive_int(variable: str, default: int, env: Mapping[str, str], warnings: list[str]) -> int:
    text = env.get(variable, "").strip()
    if not text:
        return default
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    warnings.append(f"{variable}={text!r} is not a positive whole number; using {default}")
    return default
