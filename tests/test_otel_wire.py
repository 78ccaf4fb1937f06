"""OpenTelemetry over the wire: a real OTLP receiver on 127.0.0.1 (gRPC and HTTP/protobuf)
decodes what a real run against the mock endpoint sends, and what a replay of its run.jsonl
sends; a collector that is down or hangs never stalls or fails the run; the Prometheus pull
endpoint is scraped during a run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from engine_records import write_engine_record
from otel_support import ENGINE_SPEC, REAL_MOCK, reference_pipeline, reference_pipeline_file
from otlp_receiver import GrpcReceiver, HttpReceiver, SilentCollector, attributes, closed_port
from scheduler_support import MemoryWriter

from ddscope.cli.main import cli
from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus, EventSink, ListSink
from ddscope.exporters.otel.metrics import ATTEMPT_OUTCOMES
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.mock.server import MockServer
from ddscope.record.jsonl import JsonlRecorder, RunReader

RECEIVERS = [GrpcReceiver, HttpReceiver]
METRIC_NAMES = {
    "ddscope.request.limit",
    "ddscope.request.in_flight",
    "ddscope.request.waiters",
    "ddscope.request.cooldown.active",
    "ddscope.queue.depth",
    "ddscope.task.leases",
    "ddscope.row_groups.in_flight",
    "ddscope.request.attempts",
    "ddscope.request.rate_limited",
    "ddscope.request.admission_timeouts",
    "ddscope.rows.completed",
    "ddscope.rows.dropped",
    "ddscope.salvage.rounds",
    "ddscope.breaker.openings",
    "ddscope.cooldown.time",
    "ddscope.request.wait.duration",
    "gen_ai.client.operation.duration",
    "ddscope.cooldown.duration",
    "gen_ai.client.token.usage",
}
DEADLINE_S = 15.0  # "never hangs": generous; the set-up's own bound is 5 s


def live_run(
    record: Path,
    endpoint: str | None,
    protocol: str | None,
    prometheus_port: int | None = None,
    extra_sinks: tuple[EventSink, ...] = (),
) -> tuple[list[str], ListSink]:
    """What ``ddtrace run`` does with the OTel flags, on the reference scenario."""
    sink, finish = build_otel_sink(endpoint, protocol, prometheus_port)
    assert sink is not None
    events = ListSink()
    bus = EventBus([JsonlRecorder(record), events, sink, *extra_sinks])
    with MockServer(latency_ms=5, **REAL_MOCK) as server:
        asyncio.run(
            run_pipeline(reference_pipeline(server.base_url), bus=bus, output=MemoryWriter())
        )
    return finish(), events


def check_received(receiver: Any, events: list[Any], metrics_receiver: Any = None) -> None:
    """The receiver decoded every span the events imply and every metric of docs/METRICS.md
    (the metrics at ``metrics_receiver`` when they go elsewhere)."""
    spans = receiver.spans()
    kinds = Counter(e.kind for e in events)
    names = Counter(span.name for span in spans)
    assert names["run"] == 1 and names["domain mock/mock-model"] == 1
    assert names["chat mock-model"] == kinds["attempt_started"]
    assert names["cooldown"] == kinds["cooldown_started"] and names["salvage_round 1"] == 1
    assert sum(n for name, n in names.items() if name.startswith("task ")) == kinds["lease_started"]
    chats = [attributes(s.attributes) for s in spans if s.name == "chat mock-model"]
    assert {c["gen_ai.provider.name"] for c in chats} == {"mock"}
    assert Counter(c.get("error.type") for c in chats)["rate_limited"] == sum(
        1 for e in events if e.kind == "attempt_finished" and e.outcome == "rate_limited"
    )
    (cooldown, *_) = [s for s in spans if s.name == "cooldown"]
    assert len(cooldown.links) == 1 and cooldown.links[0].span_id in {s.span_id for s in spans}
    # Every instrument, counters with no event in this run too (exported at 0).
    metrics_receiver = metrics_receiver or receiver
    assert set(metrics_receiver.metrics()) == METRIC_NAMES
    attempts = metrics_receiver.metrics()["ddscope.request.attempts"].sum.data_points
    outcomes = {attributes(p.attributes)["ddscope.outcome"]: p.as_int for p in attempts}
    counted = Counter(e.outcome for e in events if e.kind == "attempt_finished")
    assert outcomes == {outcome: counted.get(outcome, 0) for outcome in ATTEMPT_OUTCOMES}
    assert receiver.resource_attributes()["service.name"] == "ddscope"


@pytest.mark.parametrize("receiver_type", RECEIVERS)
def test_a_live_run_sends_its_spans_and_metrics(receiver_type: type, tmp_path: Path) -> None:
    with receiver_type() as receiver:
        warnings, events = live_run(tmp_path / "run.jsonl", receiver.endpoint, receiver.protocol)
        assert warnings == []
        check_received(receiver, events.events)
        (run,) = [s for s in receiver.spans() if s.name == "run"]
        header = RunReader(tmp_path / "run.jsonl").header
        assert run.start_time_unix_nano == header.started_at_unix_ns


@pytest.mark.parametrize("receiver_type", RECEIVERS)
def test_a_replay_sends_the_recorded_spans_and_final_metrics(
    receiver_type: type, tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    with receiver_type() as live:
        _, events = live_run(record, live.endpoint, live.protocol)
    with receiver_type() as receiver:
        args = [
            "export",
            str(record),
            "--otlp",
            receiver.endpoint,
            "--otlp-protocol",
            receiver.protocol,
        ]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert f"sent {len(events.events)} events to {receiver.endpoint}" in result.output
        check_received(receiver, events.events)
        assert Counter(s.name for s in receiver.spans()) == Counter(s.name for s in live.spans())
        assert sorted(s.end_time_unix_nano for s in receiver.spans()) == sorted(
            s.end_time_unix_nano for s in live.spans()
        )


def test_export_otlp_without_an_endpoint_uses_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    events = write_engine_record(record, ENGINE_SPEC)
    with HttpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        result = CliRunner().invoke(cli, ["export", str(record), "--otlp"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"sent {events} events to {receiver.endpoint}"
        assert "salvage_round 1" in receiver.span_names()


def test_a_collector_that_is_down_costs_a_warning_not_the_run(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    warnings, events = live_run(tmp_path / "run.jsonl", endpoint, "grpc")
    assert time.monotonic() - started < DEADLINE_S
    assert events.of_kind("run_finished")[0].outcome == "complete"
    (spans, metrics) = warnings
    assert spans.startswith("OTLP: ") and f"spans did not reach {endpoint}" in spans
    assert "failed to export" in spans and "ddtrace export run.jsonl --otlp" in spans
    assert metrics.startswith("OTLP: ") and "metric exports" in metrics
    assert RunReader(tmp_path / "run.jsonl").header.run_id  # the record is intact


def test_a_collector_that_hangs_is_given_up_on_in_bounded_time(tmp_path: Path) -> None:
    with SilentCollector() as collector:
        started = time.monotonic()
        warnings, events = live_run(tmp_path / "run.jsonl", collector.endpoint, "http/protobuf")
        assert time.monotonic() - started < DEADLINE_S
    assert events.of_kind("run_finished")[0].outcome == "complete"
    assert warnings and "spans did not reach" in warnings[0]


def test_replaying_to_a_collector_that_is_down_exits_1_with_the_reason(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    write_engine_record(record, ENGINE_SPEC)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    args = ["export", str(record), "--otlp", endpoint, "--otlp-protocol", "http/protobuf"]
    result = CliRunner().invoke(cli, args)
    assert time.monotonic() - started < DEADLINE_S
    assert result.exit_code == 1
    assert result.stderr.startswith("OtlpExportError: OTLP: ")
    assert (
        f"spans did not reach {endpoint}" in result.stderr and "Connection refused" in result.stderr
    )


class _ScrapeDuringRun:
    """Scrapes the pull endpoint when the first row group is checkpointed (mid-run)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.body: str | None = None

    def open(self, header: object) -> None:
        pass

    def handle(self, event: Any) -> None:
        if event.kind == "row_group_finished" and self.body is None:
            self.body = httpx.get(self.url, timeout=5).text

    def close(self) -> None:
        pass


def test_the_prometheus_endpoint_serves_limit_and_outcome_metrics_during_a_run(
    tmp_path: Path,
) -> None:
    port = closed_port()
    scraper = _ScrapeDuringRun(port)
    warnings, events = live_run(tmp_path / "run.jsonl", None, None, port, (scraper,))
    assert warnings == [] and scraper.body is not None
    labels = 'gen_ai_provider_name="mock",gen_ai_request_model="mock-model"'
    assert f"ddscope_request_limit{{{labels}" in scraper.body
    assert 'ddscope_request_attempts_total{ddscope_outcome="ok",' + labels in scraper.body
    assert "gen_ai_client_operation_duration_seconds_bucket{" in scraper.body
    assert events.of_kind("row_group_finished")  # scraped before the run was over
    assert len(events.of_kind("row_group_finished")) > 1
    with pytest.raises(httpx.TransportError):  # finish() closed the endpoint
        httpx.get(scraper.url, timeout=2)


def test_otlp_from_the_standard_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with HttpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "datagen")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        warnings, _ = live_run(tmp_path / "run.jsonl", None, None)
        assert warnings == []
        assert receiver.spans() == []  # sampled out
        assert "ddscope.request.attempts" in receiver.metrics()  # metrics are not sampled
        resource = receiver.resource_attributes()
        assert (resource["service.name"], resource["deployment.environment"]) == ("datagen", "ci")


def test_traces_only_for_a_backend_without_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # what Jaeger needs
    with GrpcReceiver() as receiver:
        warnings, events = live_run(tmp_path / "run.jsonl", receiver.endpoint, "grpc")
        assert warnings == [] and receiver.metric_requests == []
        starts = ("attempt", "lease", "wait", "cooldown", "row_group", "salvage")
        intervals = sum(len(events.of_kind(f"{kind}_started")) for kind in starts)
        assert len(receiver.spans()) == intervals + 2  # + the run and the domain


def test_without_a_metric_reader_the_meter_provider_is_a_no_op() -> None:
    """Spans only: the sink's histogram measurements go to a no-op meter (no SDK work)."""
    from opentelemetry.metrics import NoOpMeterProvider

    from ddscope.exporters.otel.sdk import OtelSdk

    with GrpcReceiver() as receiver:
        sdk = OtelSdk(receiver.endpoint, "grpc", None, metrics=False)
        assert isinstance(sdk.meter_provider, NoOpMeterProvider)
        assert sdk.shutdown().metric_exports == 0


def test_otel_bsp_max_export_batch_size_sizes_the_requests_a_live_run_sends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real run to a real gRPC receiver: every span arrives, in requests of at most 7."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "7")
    record = tmp_path / "run.jsonl"
    with GrpcReceiver() as receiver:
        warnings, events = live_run(record, receiver.endpoint, "grpc")
        assert warnings == []
        check_received(receiver, events.events)
        assert max(_request_sizes(receiver)) == 7 and len(receiver.spans()) > 7
    with GrpcReceiver() as replayed:  # the replay of its record, 7 spans a request too
        result = CliRunner().invoke(cli, ["export", str(record), "--otlp", replayed.endpoint])
        assert result.exit_code == 0, result.output
        check_received(replayed, events.events)
        assert max(_request_sizes(replayed)) == 7


def _request_sizes(receiver: Any) -> list[int]:
    """Spans in each trace export request the receiver got."""
    return [
        sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
        for request in receiver.trace_requests
    ]


def test_otel_sdk_disabled_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with GrpcReceiver() as receiver:
        sink, finish = build_otel_sink(receiver.endpoint, "grpc", None)
        assert sink is None
        assert finish() == ["OTEL_SDK_DISABLED=true: no OpenTelemetry export for this run"]


def _run_has_otel_options() -> bool:
    from ddscope.cli.run import run_command

    return any(param.name == "otlp_endpoint" for param in run_command.params)


@pytest.mark.skipif(not _run_has_otel_options(), reason="ddtrace run has no --otlp-endpoint yet")
@pytest.mark.parametrize("receiver_type", RECEIVERS)
def test_ddtrace_run_sends_to_the_receiver(receiver_type: type, tmp_path: Path) -> None:
    with MockServer(latency_ms=5, **REAL_MOCK) as server, receiver_type() as receiver:
        pipeline = reference_pipeline_file(server.base_url, tmp_path / "p.json")
        args = ["run", str(pipeline), "-q", "-o", str(tmp_path / "out"), "--otlp-endpoint",
                receiver.endpoint, "--otlp-protocol", receiver.protocol]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
        check_received(receiver, list(RunReader(tmp_path / "out" / "run.jsonl")))


@pytest.mark.skipif(not _run_has_otel_options(), reason="ddtrace run has no --otlp-endpoint yet")
def test_ddtrace_run_exits_0_with_a_warning_when_the_collector_is_down(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with MockServer(latency_ms=5, **REAL_MOCK) as server:
        pipeline = reference_pipeline_file(server.base_url, tmp_path / "p.json")
        started = time.monotonic()
        args = [
            "run",
            str(pipeline),
            "-q",
            "-o",
            str(tmp_path / "out"),
            "--otlp-endpoint",
            endpoint,
        ]
        result = CliRunner().invoke(cli, args)
    assert time.monotonic() - started < DEADLINE_S
    assert result.exit_code == 0, result.output
    assert "warning: OTLP: " in result.stderr and f"did not reach {endpoint}" in result.stderr


def test_each_signal_goes_where_its_own_variables_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` over OTLP/HTTP, used as given (a gateway's path,
    nothing added), and ``…_METRICS_ENDPOINT`` over gRPC: no general endpoint at all."""
    with HttpReceiver(prefix="/tenant-a") as traces, GrpcReceiver() as metrics:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{traces.endpoint}/tenant-a/v1/traces"
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", metrics.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
        warnings, events = live_run(tmp_path / "run.jsonl", None, None)
        assert warnings == []
        check_received(traces, events.events, metrics_receiver=metrics)
        assert not metrics.spans()
        assert traces.spans() and not traces.metrics()
