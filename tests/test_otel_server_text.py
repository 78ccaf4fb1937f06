"""A collector's refusal is quoted in ddscope's warnings and errors, and what it sent reaches the
terminal with its control characters as visible escapes: a real gRPC collector on 127.0.0.1 that
refuses every export with terminal escape sequences in its status message."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otel_support import REAL_MOCK, reference_pipeline_file

from ddscope.cli.main import cli
from ddscope.exporters.otel.sdk import DeliveryStats
from ddscope.exporters.otel.setup import delivery_warnings
from ddscope.mock.server import MockServer

# Clears the screen, sets the window title, rings the bell: what a hostile collector might send.
HOSTILE = "refused \x1b[2J\x1b]0;owned\x07 \u202eright-to-left"


class _RefusingTraces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, message: str) -> None:
        self.message = message

    def Export(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.message)


class _RefusingMetrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, message: str) -> None:
        self.message = message

    def Export(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.message)


@contextmanager
def refusing_collector(traces: str = HOSTILE, metrics: str = HOSTILE) -> Iterator[str]:
    """Refuses every export, with ``traces`` or ``metrics`` as its status message."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_RefusingTraces(traces), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_RefusingMetrics(metrics), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


def _assert_quoted_and_escaped(stderr: str) -> None:
    assert "refused" in stderr  # the collector's own words are there, for the user
    assert "\\x1b[2J" in stderr and "\\x07" in stderr and "\\u202e" in stderr
    assert not any(char in stderr for char in "\x1b\x07\u202e")


def test_run_and_replay_quote_a_refusing_collector_with_its_controls_escaped(
    tmp_path: Path,
) -> None:
    """In one process, within seconds: the SDK's exporter logger would drop the replay's
    "Failed to export …" line as a duplicate of the run's, and the cause with it."""
    import opentelemetry.exporter.otlp.proto.grpc.exporter as grpc_exporter

    exporter_logger = logging.getLogger(grpc_exporter.__name__)
    filters_before = list(exporter_logger.filters)
    with MockServer(latency_ms=5, **REAL_MOCK) as server, refusing_collector() as endpoint:
        pipeline = reference_pipeline_file(server.base_url, tmp_path / "p.json")
        run = ["run", str(pipeline), "-q", "-o", str(tmp_path / "out"), "--otlp-endpoint", endpoint]
        live = CliRunner().invoke(cli, run)
        record = tmp_path / "out" / "run.jsonl"
        replay = CliRunner().invoke(cli, ["export", str(record), "--otlp", endpoint])
    assert live.exit_code == 0, live.output  # a collector never fails a run: a warning
    assert "warning: OTLP: " in live.stderr
    _assert_quoted_and_escaped(live.stderr)
    assert replay.exit_code == 1, replay.output  # a replay's only job is sending: an error
    assert "OtlpExportError: " in replay.stderr
    _assert_quoted_and_escaped(replay.stderr)
    assert exporter_logger.filters == filters_before  # the SDK's filters are put back


def test_delivery_warnings_escape_the_collectors_words_for_any_caller() -> None:
    """The warnings a caller of the Python API gets (the DataDesigner adapter's ``warnings``)
    are escaped too, not only what the CLI prints."""
    stats = DeliveryStats(spans_ended=3, spans_failed=3, first_span_error=f"details: {HOSTILE}")
    (line,) = delivery_warnings(stats, "http://127.0.0.1:4317")
    _assert_quoted_and_escaped(line)


def test_each_signal_s_warning_quotes_its_own_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metrics are refused first (exported every 50 ms while spans wait for the end of the
    run): the spans' line still quotes the traces' refusal, not the metrics'."""
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "50")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "30000")
    with (
        MockServer(latency_ms=20, **REAL_MOCK) as server,
        refusing_collector(traces="no traces today", metrics="no metrics today") as endpoint,
    ):
        pipeline = reference_pipeline_file(server.base_url, tmp_path / "p.json")
        run = ["run", str(pipeline), "-q", "-o", str(tmp_path / "out"), "--otlp-endpoint", endpoint]
        live = CliRunner().invoke(cli, run)
    assert live.exit_code == 0, live.output
    spans_line, metrics_line = live.stderr.strip().splitlines()
    assert "spans did not reach" in spans_line and "metric exports" in metrics_line
    assert "no traces today" in spans_line and "no metrics today" not in spans_line
    assert "no metrics today" in metrics_line


@pytest.mark.parametrize(
    ("logger", "template", "args", "signal"),
    [
        ("opentelemetry.exporter.otlp.proto.grpc.exporter",
         "Failed to export %s to %s, error code: %s, error details: %s",
         ("traces", "h:4317", "INVALID_ARGUMENT", "bad metrics field"), "spans"),
        ("opentelemetry.exporter.otlp.proto.grpc.exporter",
         "Failed to export %s to %s, error code: %s, error details: %s",
         ("metrics", "h:4317", "INVALID_ARGUMENT", "bad span"), "metrics"),
        ("opentelemetry.exporter.otlp.common.http",
         "Failed to export %s batch code: %s, reason: %s", ("spans", 400, "no"), "spans"),
        ("opentelemetry.exporter.otlp.proto.http.metric_exporter",
         "Failed to export metrics batch code: %s, reason: %s", (400, "span"), "metrics"),
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
         "Failed to export batch code: %s, reason: %s", (400, "metrics?"), "spans"),
        ("opentelemetry.exporter.otlp.proto.grpc.exporter",
         "Shutdown in progress, aborting retry.", (), "other"),
    ],
)  # fmt: skip
def test_a_log_line_is_put_to_its_signal_by_its_template_and_logger_not_the_details(
    logger: str, template: str, args: tuple[Any, ...], signal: str
) -> None:
    from ddscope.exporters.otel.sdk import _signal_of

    record = logging.LogRecord(logger, logging.ERROR, __file__, 1, template, args, None)
    assert _signal_of(record) == signal
