"""A bad standard OTel environment variable never stops a run nor prints a traceback: it is
skipped with one ``warning:`` line naming it, and the SDK's default is used (README: a bad
explicit option is a config error, a bad environment value a warning). Through the real CLI
(``ddtrace demo`` for a live run, ``ddtrace export --otlp`` for a replay) against a real OTLP
receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from otlp_receiver import GrpcReceiver, HttpReceiver, closed_port

from ddscope.cli.main import cli
from ddscope.exporters.otel.sdk import _HeldLogs
from ddscope.exporters.otel.setup import resolve_config

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run record to replay (``ddtrace demo``, no OTel)."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "-q", "-n", "6", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out / "run.jsonl"


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as receiver:
        yield receiver


def _export(record: Path) -> Any:
    return CliRunner().invoke(cli, ["export", str(record), "--otlp"])


def _warnings(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), stderr  # no traceback, no raw log
    return lines


@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstdx", {}),  # InvalidCompressionValueException
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "deflate", {}),  # not with gRPC
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "-3", {}),  # ValueError in SpanLimits
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "abc", {}),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "1.5", {}),
        ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "x", {}),
        ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "-1", {}),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "abc", {}),  # float() in the gRPC exporter
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "abc", {}),
        ("OTEL_TRACES_SAMPLER_ARG", "2", {"OTEL_TRACES_SAMPLER": "traceidratio"}),  # raises
        # ignored silently by the SDK before
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", {}),
        ("OTEL_TRACES_SAMPLER_ARG", "abc", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}),
        ("OTEL_SDK_DISABLED", "maybe", {}),
    ],
)
def test_a_bad_variable_the_sdk_reads_is_one_warning_and_the_replay_arrives(
    record: Path,
    grpc_receiver: GrpcReceiver,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    extra: dict[str, str],
) -> None:
    monkeypatch.setenv(ENDPOINT, grpc_receiver.endpoint)
    monkeypatch.setenv(variable, value)
    for name, other in extra.items():
        monkeypatch.setenv(name, other)
    result = _export(record)
    assert result.exit_code == 0, result.output
    [line] = _warnings(result.stderr)
    assert line.startswith(f"warning: {variable}={value!r} ")
    assert grpc_receiver.span_names() and grpc_receiver.metric_requests
    assert os.environ[variable] == value  # hidden from the SDK only while it was set up


@pytest.mark.parametrize("value", ["0", "-5", "abc"])
def test_a_bad_metric_export_interval_in_a_live_run_is_a_warning(
    tmp_path: Path, grpc_receiver: GrpcReceiver, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENDPOINT, grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", value)
    result = CliRunner().invoke(cli, ["demo", "-q", "-n", "4", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert _warnings(result.stderr) == [
        f"warning: OTEL_METRIC_EXPORT_INTERVAL={value!r} is not a positive number of "
        "milliseconds; using 10000"
    ]
    assert grpc_receiver.span_names() and grpc_receiver.metric_requests


def test_otlp_http_compression_per_signal_wins_and_a_bad_one_is_named(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traces' own variable (gzip) is used; the general one (zstdx), which metrics would
    follow, is named once and metrics go uncompressed."""
    with HttpReceiver() as receiver:
        monkeypatch.setenv(ENDPOINT, receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "zstdx")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
        result = _export(record)
    assert result.exit_code == 0, result.output
    assert _warnings(result.stderr) == [
        "warning: OTEL_EXPORTER_OTLP_COMPRESSION='zstdx' is not supported with http/protobuf "
        "(gzip, deflate, none); ignored"
    ]
    encodings = {h.get("content-encoding") for h in receiver.headers}
    assert encodings == {"gzip", None}
    assert receiver.span_names() and receiver.metric_requests


def test_grpc_takes_compression_none_as_the_specification_says(
    record: Path, grpc_receiver: GrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENDPOINT, grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")  # the SDK's gRPC one raised
    result = _export(record)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert grpc_receiver.span_names()


def test_a_failed_replay_still_shows_the_environment_warnings(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENDPOINT, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "abc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "foo")
    result = _export(record)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("OtlpExportError: OTLP: ")
    assert "warning: OTEL_BSP_MAX_EXPORT_BATCH_SIZE='abc'" in line
    assert "warning: OTEL_EXPORTER_OTLP_PROTOCOL='foo'" in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "bogus"),  # "Couldn't recognize sampler bogus."
        ("OTEL_TRACES_SAMPLER", "traceidratio"),  # no _ARG: "Could not convert …_ARG …"
        ("OTEL_RESOURCE_ATTRIBUTES", "nokey"),  # "Invalid key value resource attribute pair"
    ],
)
def test_an_sdk_line_that_is_not_about_exporting_is_not_quoted_as_the_cause(
    record: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(ENDPOINT, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # spans only: one "first error"
    monkeypatch.setenv(variable, value)
    result = _export(record)
    assert result.exit_code == 1
    assert "(first error: " in result.stderr
    cause = result.stderr.split("(first error: ", 1)[1].split("; is an OTLP collector")[0]
    assert "sampler" not in cause.lower() and "resource" not in cause.lower()
    assert "UNAVAILABLE" in cause  # the connection's failure, as the SDK's exporter logged it


def test_held_logs_remember_only_the_exporting_codes_lines() -> None:
    held = _HeldLogs()
    for name, message in [
        ("opentelemetry.sdk.trace.sampling", "Couldn't recognize sampler bogus."),
        ("opentelemetry.sdk.resources", "Invalid key value resource attribute pair"),
        ("opentelemetry.util.re", "OTLP header variable has an entry that is not name=value"),
    ]:
        held.emit(logging.LogRecord(name, logging.WARNING, __file__, 1, message, (), None))
    assert held.first_error("spans") is None and held.first_error("metrics") is None
    template = "Failed to export %s to %s, error code: %s"
    held.emit(
        logging.LogRecord(
            "opentelemetry.exporter.otlp.proto.grpc.exporter",
            logging.ERROR,
            __file__,
            1,
            template,
            ("traces", "h:4317", "UNAVAILABLE"),
            None,
        )
    )
    assert held.first_error("spans") == "Failed to export traces to h:4317, error code: UNAVAILABLE"


@pytest.mark.parametrize(
    ("variable", "value", "warning"),
    [
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-token-42",
            "OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not name=value; skipped (value not shown)",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=a,secret-project-7",
            "OTEL_RESOURCE_ATTRIBUTES: entry 2 is not key=value; skipped (value not shown)",
        ),
    ],
)
def test_a_malformed_list_variable_is_one_warning_without_its_value(
    record: Path,
    grpc_receiver: GrpcReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
    warning: str,
) -> None:
    """Under pytest, a line of the SDK's that escaped reaches the root logger (caplog), where a
    plain run has only logging's last resort: stderr."""
    monkeypatch.setenv(ENDPOINT, grpc_receiver.endpoint)
    monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.DEBUG):
        result = _export(record)
    assert result.exit_code == 0, result.output
    assert _warnings(result.stderr) == [f"warning: {warning}"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []
    assert value.split(",")[-1] not in result.output
    assert grpc_receiver.span_names()


def test_in_a_fresh_process_bad_variables_print_only_warning_lines(
    record: Path, grpc_receiver: GrpcReceiver
) -> None:
    """The real terminal: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT is read when the SDK's trace module is
    imported (a traceback before any of ddscope's code ran), a malformed header entry was
    logged through logging's last resort."""
    env = {
        **os.environ,
        ENDPOINT: grpc_receiver.endpoint,
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "abc",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token-42",
        "OTEL_RESOURCE_ATTRIBUTES": "nokey",
    }
    script = "from ddscope.cli.main import cli; cli()"
    done = subprocess.run(
        [sys.executable, "-c", script, "export", str(record), "--otlp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(_warnings(done.stderr)) == [
        "warning: OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not name=value; skipped (value not shown)",
        "warning: OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value; skipped (value not shown)",
        "warning: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT='abc' is not a whole number of 0 or more; "
        "the default limit is used",
    ]
    assert grpc_receiver.span_names()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "0"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", " 4096 "),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", ""),  # the SDK: no limit
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2.5"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1500.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_SDK_DISABLED", "False"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=a,,env=b"),
    ],
)
def test_good_values_are_not_warned_about_nor_hidden(variable: str, value: str) -> None:
    env = {
        ENDPOINT: "http://127.0.0.1:4317",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        variable: value,
    }
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None and warnings == [] and config.hidden == frozenset()
