"""OTel set-up: precedence (explicit > OTEL_* environment > default), exact errors for bad
explicit values, warnings for bad environment values, the click options, the resource, delivery
accounting and its warning lines."""

from __future__ import annotations

import socket

import click
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ddscope.cli.otel_options import otel_options
from ddscope.errors import ConfigError
from ddscope.exporters.otel.batching import SpanBatching
from ddscope.exporters.otel.delivery import CountingSpanExporter, InlineBatchSpanProcessor
from ddscope.exporters.otel.sdk import DeliveryStats, resource
from ddscope.exporters.otel.setup import (
    OtelConfig,
    build_otel_sink,
    capture_text,
    delivery_warnings,
    normalize_endpoint,
    resolve_config,
)

ENV_ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def test_nothing_is_configured_unless_asked() -> None:
    assert resolve_config(None, None, None, environ={}) == (None, [])
    env = {"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert resolve_config(None, None, None, environ=env) == (None, [])
    sink, finish = build_otel_sink(None, None, None)
    assert sink is None and finish() == []


def test_the_standard_bsp_variables_size_the_live_span_export() -> None:
    env = {
        **ENV_ENDPOINT,
        "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_SCHEDULE_DELAY": " 50 ",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "7",
    }
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and warnings == []
    assert config.batching == SpanBatching(queue_size=100, schedule_delay_ms=50, batch_size=7)
    unset, _ = resolve_config(None, None, None, environ=ENV_ENDPOINT)
    assert unset is not None and unset.batching == SpanBatching(8192, 1000, 512)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "", "\u0661\u0662"])
def test_a_bad_bsp_value_is_skipped_with_a_warning_naming_it(value: str) -> None:
    env = {**ENV_ENDPOINT, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": value, "OTEL_BSP_SCHEDULE_DELAY": "9"}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None
    assert config.batching == SpanBatching(8192, 9, 512)
    if value:
        assert warnings == [
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={value!r} is not a positive whole number; using 512"
        ]
    else:
        assert warnings == []


def test_a_bsp_batch_larger_than_the_queue_is_cut_to_it() -> None:
    env = {**ENV_ENDPOINT, "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and config.batching == SpanBatching(64, 1000, 64)
    assert warnings == [
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=100 is larger than the export queue (64 spans); using 64"
    ]


def test_bsp_variables_are_not_read_when_no_spans_are_exported() -> None:
    env = {**ENV_ENDPOINT, "OTEL_TRACES_EXPORTER": "none", "OTEL_BSP_MAX_QUEUE_SIZE": "abc"}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and not config.traces and warnings == []


def test_explicit_arguments_win_over_the_environment() -> None:
    env = {**ENV_ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    config, warnings = resolve_config("127.0.0.1:4317", "grpc", None, environ=env)
    assert config == OtelConfig("http://127.0.0.1:4317", "grpc", None) and warnings == []
    config, _ = resolve_config(None, None, None, environ=env)
    assert config == OtelConfig("http://collector:4318", "http/protobuf", None)


@pytest.mark.parametrize(
    ("protocol", "endpoint"),
    [(None, "http://localhost:4317"), ("grpc", "http://localhost:4317"),
     ("http/protobuf", "http://localhost:4318")],
)  # fmt: skip
def test_a_protocol_alone_asks_for_otlp_at_its_default_port(
    protocol: str | None, endpoint: str
) -> None:
    env = {} if protocol else {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    config, _ = resolve_config(None, protocol, None, environ=env)
    assert config == OtelConfig(endpoint, protocol or "grpc", None)


def test_a_replay_asks_for_otlp_even_without_an_endpoint() -> None:
    config, _ = resolve_config(None, None, None, environ={}, otlp_requested=True)
    assert config == OtelConfig("http://localhost:4317", "grpc", None)


def test_prometheus_alone_configures_no_otlp() -> None:
    assert resolve_config(None, None, 9464, environ={}) == (OtelConfig(None, "grpc", 9464), [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ftp://x:1", None, None),
         "--otlp-endpoint: 'ftp://x:1' is not a URL like http://127.0.0.1:4317"),
        (("http://x:port", None, None),
         "--otlp-endpoint: 'http://x:port' has a port that is not a number"),
        ((None, "http/json", None),
         "--otlp-protocol: 'http/json' is not one of grpc, http/protobuf"),
        ((None, None, 70000), "--prometheus-port: 70000 is not a port (1-65535)"),
    ],
)  # fmt: skip
def test_a_bad_explicit_value_raises_with_an_exact_message(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_config(*args, environ={})
    assert str(raised.value) == message


def test_bad_environment_values_warn_and_fall_back() -> None:
    env = {
        **ENV_ENDPOINT,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_TRACES_SAMPLER": "sometimes",
    }
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config == OtelConfig("http://collector:4318", "grpc", None)
    assert warnings == [
        "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported (grpc, http/protobuf); "
        "using grpc",
        "OTEL_TRACES_SAMPLER='sometimes' is unknown; parentbased_always_on used",
    ]
    config, warnings = resolve_config(
        None, None, None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "::"}
    )
    assert config is None and warnings[0].startswith("OTEL_EXPORTER_OTLP_ENDPOINT: ")


def test_signals_can_be_turned_off_one_by_one() -> None:
    config, warnings = resolve_config(
        None, None, None, {**ENV_ENDPOINT, "OTEL_METRICS_EXPORTER": "none"}
    )
    assert config is not None and (config.traces, config.metrics) == (True, False) and not warnings
    env = {**ENV_ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin", "OTEL_METRICS_EXPORTER": "none"}
    config, warnings = resolve_config(None, None, None, env)
    assert config is None
    assert warnings == [
        "OTEL_TRACES_EXPORTER='zipkin': only otlp and none are supported; not exported"
    ]
    config, _ = resolve_config(None, None, 9464, {**env, "OTEL_TRACES_EXPORTER": "console,otlp"})
    assert config == OtelConfig("http://collector:4318", "grpc", 9464, True, False)


def test_otel_sdk_disabled_turns_everything_off_with_a_warning() -> None:
    env = {**ENV_ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}
    assert resolve_config("127.0.0.1:4317", None, 9464, environ=env) == (
        None,
        ["OTEL_SDK_DISABLED=true: no OpenTelemetry export for this run"],
    )
    assert resolve_config(None, None, None, environ={"OTEL_SDK_DISABLED": "true"}) == (None, [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:4317", "http://127.0.0.1:4317"),
        ("https://tempo.example:443/", "https://tempo.example:443"),
        ("http://c:4318/v1/traces", "http://c:4318"),
        ("http://c:4318/prefix/v1/metrics", "http://c:4318/prefix"),
    ],
)
def test_endpoints_are_normalized_to_a_base_url(value: str, expected: str) -> None:
    assert normalize_endpoint(value) == expected


def test_text_in_spans_follows_the_genai_capture_opt_in() -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "True"}
    assert capture_text(None, {}) is False and capture_text(None, env) is True
    assert capture_text(False, env) is False and capture_text(True, {}) is True


def test_the_click_options_parse_and_validate() -> None:
    @click.command()
    @otel_options
    def command(
        otlp_endpoint: str | None, otlp_protocol: str | None, prometheus_port: int | None
    ) -> None:
        click.echo(f"{otlp_endpoint}|{otlp_protocol}|{prometheus_port}")

    runner = CliRunner()
    args = [
        "--otlp-endpoint",
        "http://127.0.0.1:4317",
        "--otlp-protocol",
        "http/protobuf",
        "--prometheus-port",
        "9464",
    ]
    result = runner.invoke(command, args)
    assert result.exit_code == 0 and result.output == "http://127.0.0.1:4317|http/protobuf|9464\n"
    assert runner.invoke(command, []).output == "None|None|None\n"
    bad = runner.invoke(command, ["--otlp-protocol", "http/json"])
    assert bad.exit_code == 2 and "'http/json' is not one of 'grpc', 'http/protobuf'" in bad.output
    assert runner.invoke(command, ["--prometheus-port", "0"]).exit_code == 2


def test_the_resource_names_the_service_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    attrs = resource().attributes
    assert attrs["service.name"] == "ddscope" and "ddscope.run_id" not in attrs
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.version=9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "datagen")
    attrs = resource().attributes
    assert (attrs["service.name"], attrs["deployment.environment"], attrs["service.version"]) == (
        "datagen",
        "ci",
        "9",
    )


def test_a_busy_prometheus_port_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as raised:
            build_otel_sink(None, None, port)
    assert str(raised.value).startswith(
        f"--prometheus-port {port}: cannot listen on 127.0.0.1:{port} ("
    )


def _spans(count: int) -> list:
    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    spans = []
    for i in range(count):
        span = tracer.start_span(f"s{i}")
        span.end()
        spans.append(span)
    return spans


def test_a_counting_exporter_counts_and_gives_up_after_a_failure_when_told() -> None:
    inner = InMemorySpanExporter()
    counting = CountingSpanExporter(inner)
    assert counting.export(_spans(3)) is SpanExportResult.SUCCESS
    inner.shutdown()  # the in-memory exporter refuses everything once shut down
    assert counting.export(_spans(2)) is SpanExportResult.FAILURE
    assert counting.export(_spans(2)) is SpanExportResult.FAILURE
    assert (counting.delivered, counting.failed) == (3, 4)
    counting.give_up_after_failure = True
    counting.export(_spans(1))
    inner.clear()
    counting.inner = InMemorySpanExporter()  # even a healthy collector is no longer tried
    assert counting.export(_spans(5)) is SpanExportResult.FAILURE
    assert counting.inner.get_finished_spans() == () and counting.failed == 10


def test_the_inline_processor_exports_in_batches_on_the_callers_thread() -> None:
    inner = InMemorySpanExporter()
    processor = InlineBatchSpanProcessor(inner, batch_size=4)
    for span in _spans(9):
        processor.on_end(span)
    assert len(inner.get_finished_spans()) == 8
    processor.force_flush()
    assert len(inner.get_finished_spans()) == 9


def test_delivery_warnings_say_how_much_did_not_arrive_and_why() -> None:
    assert (
        delivery_warnings(DeliveryStats(spans_ended=5, spans_delivered=5, metric_exports=1), "e")
        == []
    )
    stats = DeliveryStats(
        spans_ended=100, spans_delivered=60, spans_failed=30, metric_exports=4, metric_failures=2,
        first_span_error="StatusCode.UNAVAILABLE",
    )  # fmt: skip
    assert stats.spans_dropped == 10
    assert delivery_warnings(stats, "http://c:4317", "hint") == [
        "OTLP: 40 of 100 spans did not reach http://c:4317: 30 failed to export, 10 dropped "
        "(export queue full or shutdown timeout) (first error: StatusCode.UNAVAILABLE); hint",
        "OTLP: 2 of 4 metric exports to http://c:4317 failed",
    ]


def test_per_signal_endpoints_follow_the_otlp_exporter_specification() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tempo.example/otlp/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and warnings == []
    # Used as given for OTLP/HTTP; the other signal follows the general variables.
    assert config.target("traces") == ("https://tempo.example/otlp/v1/traces", "http/protobuf")
    assert config.target("metrics") == ("http://collector:4317", "grpc")
    # Only a per-signal variable: OTLP is on, and the other signal gets the default.
    only = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4317/ignored/path"}
    config, warnings = resolve_config(None, None, None, environ=only)
    assert config is not None and warnings == []
    assert config.target("metrics") == ("http://m:4317", "grpc")  # gRPC: host and port
    assert config.target("traces") == ("http://localhost:4317", "grpc")
    # The options are for every signal and win.
    config, _ = resolve_config("http://cli:4318", "http/protobuf", None, environ=env)
    assert config is not None
    assert config.target("traces") == ("http://cli:4318/v1/traces", "http/protobuf")
    assert config.target("metrics") == ("http://cli:4318/v1/metrics", "http/protobuf")


@pytest.mark.parametrize(
    ("value", "protocol", "why"),
    [
        ("not a url", "", "is not a URL"),
        ("http://h:port/v1/traces", "http/protobuf", "port that is not a number"),
        ("http://u:SECRET@h:4317", "grpc", "only with http/protobuf"),
    ],
)
def test_a_bad_per_signal_endpoint_is_skipped_with_a_warning_naming_it(
    value: str, protocol: str, why: str
) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": value}
    if protocol:
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = protocol
    config, warnings = resolve_config(None, None, None, environ=env)
    (warning,) = warnings
    assert warning.startswith("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ") and why in warning
    assert warning.endswith("; not used") and "SECRET" not in warning
    assert config is None  # nothing else asked for OTLP
