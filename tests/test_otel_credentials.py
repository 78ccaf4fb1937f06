"""Credentials handed to the OpenTelemetry set-up (OTLP header variables, userinfo in an endpoint
URL) never appear in a message, a warning or a log line: the option is named, not the value."""

from __future__ import annotations

import logging

import pytest

from ddscope.errors import ConfigError
from ddscope.exporters.otel.sdk import DeliveryStats
from ddscope.exporters.otel.setup import (
    delivery_warnings,
    hide_credentials_in_sdk_logs,
    otlp_credentials,
    redact_url,
    resolve_config,
)

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
