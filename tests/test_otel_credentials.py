"""Credentials handed to the OpenTelemetry set-up (OTLP header variables, userinfo in an endpoint
URL) never appear in a message, a warning or a log line: the option is named, not the value."""

from __future__ import annotations

import base64
import http.server
import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otel_support import REAL_MOCK, reference_pipeline_file

from ddscope.cli.main import cli
from ddscope.errors import ConfigError
from ddscope.exporters.otel.sdk import DeliveryStats
from ddscope.exporters.otel.setup import (
    delivery_warnings,
    hide_credentials_in_sdk_logs,
    otlp_credentials,
    redact_url,
    resolve_config,
)
from ddscope.mock.server import MockServer

TOKEN = "tok-5e3c1d9b7a"
PASSWORD = "pw-88a1f0"


def test_userinfo_is_hidden_in_urls_and_text() -> None:
    url = f"http://svc:{PASSWORD}@collector.local:4318/v1"
    assert redact_url(url) == "http://***@collector.local:4318/v1"
    assert redact_url(f"failed to reach {url} twice") == (
        "failed to reach http://***@collector.local:4318/v1 twice"
    )
    assert redact_url("http://127.0.0.1:4317") == "http://127.0.0.1:4317"


def test_a_bad_endpoint_with_credentials_names_the_option_not_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(f"http://svc:{PASSWORD}@host:notaport", None, None, environ={})
    message = str(caught.value)
    assert message.startswith("--otlp-endpoint:") and PASSWORD not in message
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://svc:{PASSWORD}@host:bad"}
    _, warnings = resolve_config(None, None, None, environ=env)
    assert warnings and all(PASSWORD not in w for w in warnings)
    assert warnings[0].startswith("OTEL_EXPORTER_OTLP_ENDPOINT:")


def test_a_malformed_header_variable_is_named_without_its_value() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"authorization=Bearer%20{TOKEN},{TOKEN}",
    }
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is not None
    assert warnings == [
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 2 is not name=value; skipped (value not shown)"
    ]


def test_credentials_are_collected_raw_and_decoded() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={TOKEN}, authorization=Basic%20{PASSWORD}",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"https://u:{PASSWORD}@m.example:4318",
    }
    found = otlp_credentials(env, [f"http://only-token-{TOKEN}@h:1"])
    assert TOKEN in found and f"Basic {PASSWORD}" in found and PASSWORD in found
    assert f"only-token-{TOKEN}" in found and f"u:{PASSWORD}" in found


def test_delivery_warnings_hide_the_endpoint_userinfo_and_header_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={TOKEN}")
    stats = DeliveryStats(
        spans_ended=3,
        spans_failed=3,
        first_span_error=f"401 for key {TOKEN} at svc:{PASSWORD}@collector:4318",
    )
    lines = delivery_warnings(stats, f"http://svc:{PASSWORD}@collector:4318")
    text = "\n".join(lines)
    assert lines and TOKEN not in text and PASSWORD not in text
    assert "http://***@collector:4318" in text and "[redacted]" in text


def test_the_sdk_log_line_for_a_malformed_header_does_not_quote_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.util.re import parse_env_headers

    hide_credentials_in_sdk_logs()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.util.re"):
        parse_env_headers(f"Bearer {TOKEN}")
    assert caplog.records, "the SDK no longer warns: this guard may be dropped"
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_grpc_refuses_url_credentials_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--otlp-endpoint: credentials in the URL") as caught:
        resolve_config(f"http://svc:{PASSWORD}@127.0.0.1:4317", "grpc", None, environ={})
    assert PASSWORD not in str(caught.value)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://svc:{PASSWORD}@127.0.0.1:4317"}
    config, warnings = resolve_config(None, None, None, environ=env)
    assert config is None  # no OTLP export rather than a target named after the password
    assert warnings[0].startswith("OTEL_EXPORTER_OTLP_ENDPOINT: credentials in the URL")
    url = f"http://svc:{PASSWORD}@127.0.0.1:4318"
    config, _ = resolve_config(url, "http/protobuf", None, environ={})
    assert config is not None and config.endpoint == url  # HTTP sends them as Basic auth


def test_every_form_a_collector_may_quote_is_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    """URL credentials travel as ``Basic base64(user:password)``; a header's token comes back
    without its scheme word; a proxy's credentials are the client's too."""
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{TOKEN}",
        "HTTPS_PROXY": f"http://proxy-user:{PASSWORD}x@127.0.0.1:3128",
    }
    found = otlp_credentials(env, [f"http://svc:{PASSWORD}@collector:4318"])
    assert TOKEN in found  # alone, not only as "Bearer tok-…"
    assert base64.b64encode(f"svc:{PASSWORD}".encode()).decode() in found
    assert f"{PASSWORD}x" in found
    assert base64.b64encode(f"proxy-user:{PASSWORD}x".encode()).decode() in found
    assert found == sorted(found, key=len, reverse=True)


class _EchoingHttpCollector(http.server.BaseHTTPRequestHandler):
    """Refuses every export with 401, quoting the Authorization header it got."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(401, f"bad credentials {self.headers.get('authorization', '')}")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _EchoingGrpcTraces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        token = dict(context.invocation_metadata()).get("authorization", "")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid token {token.split()[-1]}")


def _run(tmp_path: Path, *options: str) -> Any:
    with MockServer(latency_ms=1, **REAL_MOCK) as server:
        pipeline = reference_pipeline_file(server.base_url, tmp_path / "p.json")
        args = ["run", str(pipeline), "-q", "-o", str(tmp_path / "out"), *options]
        return CliRunner().invoke(cli, args)


def test_url_credentials_a_collector_quotes_as_basic_auth_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHttpCollector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://svc:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
        result = _run(tmp_path, "--otlp-endpoint", endpoint, "--otlp-protocol", "http/protobuf")
    finally:
        server.shutdown()
        server.server_close()
    basic = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    assert result.exit_code == 0, result.output
    assert "bad credentials Basic [redacted]" in result.stderr  # the cause, without the secret
    assert PASSWORD not in result.stderr and basic not in result.stderr


def test_a_token_a_collector_quotes_without_its_scheme_word_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_EchoingGrpcTraces(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = _run(tmp_path, "--otlp-endpoint", f"http://127.0.0.1:{port}")
    finally:
        server.stop(grace=None).wait(5)
    assert result.exit_code == 0, result.output
    assert "invalid token [redacted]" in result.stderr
    assert TOKEN not in result.stderr
