"""Replays a recorded ``run.jsonl`` to an OTLP backend: ``ddtrace export run.jsonl --otlp``.

The record's events go through the same :class:`OtelSink` as a live run, so the backend gets the
spans the live run would have sent, with their original timestamps; then the metrics' final
values (cumulative counters and histograms over the whole run, last gauge values), stamped at
replay time. Spans are exported inline in batches: a replay waits for the collector rather than
dropping spans.

Exit status: sending is the replay's only job, so if anything did not arrive (the collector is
down, slow or refuses) it raises :class:`OtlpExportError` (exit 1) after the whole record was
read and the delivery was attempted — at most one export timeout is spent on a collector that is
down. A live run, by contrast, only warns and keeps exit 0. The error is one line, and the CLI
prints no warnings with it: the replay's warnings (a bad variable, which may be why nothing
arrived) are in its message, after the failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ddscope.errors import DdscopeError
from ddscope.exporters.otel.setup import (
    capture_text,
    delivery_warnings,
    resolve_config,
    sdk_environment,
)
from ddscope.exporters.result import ExportResult
from ddscope.record.detect import open_record

REPLAY_HINT = "is an OTLP collector listening there?"


class OtlpExportError(DdscopeError):
    """An OTLP replay could not deliver everything to the collector. ``warnings``: the replay's
    own (also at the end of the message)."""

    def __init__(self, message: str, warnings: Sequence[str] = ()) -> None:
        self.warnings = list(warnings)
        super().__init__("; ".join([message, *(f"warning: {w}" for w in self.warnings)]))


def replay_to_otlp(
    record: Path,
    *,
    endpoint: str | None,
    protocol: str | None,
    lenient: bool = False,
    record_text: bool | None = None,
) -> ExportResult:
    """Sends the run in ``record`` to ``endpoint`` (else OTEL_EXPORTER_OTLP_ENDPOINT, else the
    protocol's default). Recorded prompts and completions are sent only with ``record_text``
    (else OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)."""
    config, warnings = resolve_config(endpoint, protocol, None, otlp_requested=True)
    if config is None or not config.targets():  # OTEL_SDK_DISABLED, or a bad variable
        raise OtlpExportError("; ".join(warnings) or "OpenTelemetry is disabled")
    reader = open_record(record, lenient=lenient)  # raises RecordError before any set-up
    try:
        # Imported here, with the bad variables hidden: the SDK reads some on import.
        with sdk_environment(config.hidden):
            from ddscope.exporters.otel.sdk import OtelSdk
            from ddscope.exporters.otel.sink import OtelSink

            sdk = OtelSdk(
                config.endpoint,
                config.protocol,
                None,
                replay=True,
                traces=config.traces,
                metrics=config.metrics,
                batching=config.batching,
                targets=config.targets(),
                compression=config.compressions(),
            )
    except BaseException:
        reader.close()
        raise
    sink = OtelSink(sdk.tracer_provider, sdk.meter_provider, record_text=capture_text(record_text))
    try:
        sink.open(reader.header)
        for event in reader:
            sink.handle(event)
        sink.close()
        sdk.flush()
    finally:
        reader.close()
        stats = sdk.shutdown()
    warnings += reader.finish_warnings()
    failures = delivery_warnings(
        stats, config.url("traces"), REPLAY_HINT, metrics_endpoint=config.url("metrics")
    )
    if failures:
        raise OtlpExportError("; ".join(failures), warnings)
    shown = config.shown("traces") or config.shown("metrics") or ""  # never the userinfo
    return ExportResult(out=shown, events=reader.stats.events, warnings=warnings)
