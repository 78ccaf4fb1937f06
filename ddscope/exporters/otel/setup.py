"""What OpenTelemetry to set up for a run: explicit arguments, then the standard ``OTEL_*``
environment, then defaults; and :func:`build_otel_sink`. (The ``ddtrace run`` options that feed it
are in :mod:`ddscope.cli.otel_options`: click stays under ``cli/``.)

Nothing is configured unless asked: OTLP export starts when ``--otlp-endpoint`` or
``--otlp-protocol`` is given or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; the Prometheus pull
endpoint when ``--prometheus-port`` is given. ``OTEL_SDK_DISABLED=true`` turns everything off.

=============================  =====================================  ========================
setting                        explicit / environment                 default
=============================  =====================================  ========================
endpoint                       ``--otlp-endpoint`` /                  http://localhost:4317
                               ``OTEL_EXPORTER_OTLP_ENDPOINT``        (grpc), :4318 (http)
protocol                       ``--otlp-protocol`` /                  grpc
                               ``OTEL_EXPORTER_OTLP_PROTOCOL``
service name, resource         ``OTEL_SERVICE_NAME``,                 service.name=ddscope
                               ``OTEL_RESOURCE_ATTRIBUTES``
sampler                        ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``)   parentbased_always_on
signals over OTLP              ``OTEL_TRACES_EXPORTER``,              otlp (``none``: off)
                               ``OTEL_METRICS_EXPORTER``
prompt/completion text         ``record_text`` / ``OTEL_INSTRUMENTA-  off
in spans (if the run           TION_GENAI_CAPTURE_MESSAGE_CONTENT``
recorded it)                   (the GenAI instrumentations' opt-in)
=============================  =====================================  ========================

A bad explicit value raises :class:`ConfigError` naming the option; a bad environment value is
skipped with a warning (as the OTel SDKs do), so a stray variable never stops a run. This module
imports no OpenTelemetry at load time: ``ddtrace`` commands that do not use it stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ddscope.errors import ConfigError

if TYPE_CHECKING:
    from ddscope.exporters.otel.sdk import DeliveryStats
    from ddscope.exporters.otel.sink import OtelSink

PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "grpc"
DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318"}
SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
_SIGNAL_PATHS = ("/v1/traces", "/v1/metrics")
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@dataclass(frozen=True)
class OtelConfig:
    endpoint: str | None  # OTLP base URL, e.g. http://127.0.0.1:4317; None: no OTLP export
    protocol: str
    prometheus_port: int | None
    traces: bool = True  # spans over OTLP (OTEL_TRACES_EXPORTER=none turns them off)
    metrics: bool = True  # metrics over OTLP (OTEL_METRICS_EXPORTER=none: e.g. for Jaeger)


def normalize_endpoint(value: str) -> str:
    """``host:port`` or a URL → ``scheme://host:port`` (a signal path such as /v1/traces is
    stripped: the exporters add their own). Raises ValueError if it is not such a URL."""
    text = value.strip()
    url = text if "://" in text else f"http://{text}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{value!r} is not a URL like http://127.0.0.1:4317")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{value!r} has a port that is not a number") from None
    path = parsed.path.rstrip("/")
    for signal in _SIGNAL_PATHS:
        path = path.removesuffix(signal)
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def _protocol(explicit: str | None, env: Mapping[str, str], warnings: list[str]) -> str:
    if explicit is not None:
        if explicit not in PROTOCOLS:
            raise ConfigError(f"--otlp-protocol: {explicit!r} is not one of {', '.join(PROTOCOLS)}")
        return explicit
    value = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
    if value and value not in PROTOCOLS:
        warnings.append(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r} is not supported ({', '.join(PROTOCOLS)}); "
            f"using {DEFAULT_PROTOCOL}"
        )
        return DEFAULT_PROTOCOL
    return value or DEFAULT_PROTOCOL


def _endpoint(
    explicit: str | None, wanted: bool, env: Mapping[str, str], warnings: list[str]
) -> tuple[bool, str | None]:
    """(OTLP asked for?, base endpoint or None for the protocol's default). ``wanted``: asked
    for even without an endpoint (a protocol was given, or a replay)."""
    if explicit is not None:
        try:
            return True, normalize_endpoint(explicit)
        except ValueError as exc:
            raise ConfigError(f"--otlp-endpoint: {exc}") from None
    value = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not value:
        return wanted, None
    try:
        return True, normalize_endpoint(value)
    except ValueError as exc:
        warnings.append(f"OTEL_EXPORTER_OTLP_ENDPOINT: {exc}; no OTLP export")
        return False, None


def _signal_on(variable: str, env: Mapping[str, str], warnings: list[str]) -> bool:
    """OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: unset or listing "otlp" → on."""
    value = env.get(variable, "").strip().lower()
    names = {name.strip() for name in value.split(",") if name.strip()}
    if not names or "otlp" in names:
        return True
    if names != {"none"}:
        warnings.append(f"{variable}={value!r}: only otlp and none are supported; not exported")
    return False


def resolve_config(
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    environ: Mapping[str, str] | None = None,
    *,
    otlp_requested: bool = False,
) -> tuple[OtelConfig | None, list[str]]:
    """The set-up asked for (None: nothing) and warnings about the environment.
    ``otlp_requested``: OTLP is wanted even with no endpoint anywhere (``export --otlp``)."""
    env = os.environ if environ is None else environ
    warnings: list[str] = []
    if prometheus_port is not None and not 1 <= prometheus_port <= 65535:
        raise ConfigError(f"--prometheus-port: {prometheus_port} is not a port (1-65535)")
    protocol = _protocol(otlp_protocol, env, warnings)
    wanted = otlp_requested or otlp_protocol is not None
    asked, endpoint = _endpoint(otlp_endpoint, wanted, env, warnings)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        if asked or prometheus_port is not None:
            warnings.append("OTEL_SDK_DISABLED=true: no OpenTelemetry export for this run")
        return None, warnings
    if not asked and prometheus_port is None:
        return None, warnings
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        warnings.append(f"OTEL_TRACES_SAMPLER={sampler!r} is unknown; parentbased_always_on used")
    traces = _signal_on("OTEL_TRACES_EXPORTER", env, warnings)
    metrics = _signal_on("OTEL_METRICS_EXPORTER", env, warnings)
    if not (traces or metrics or prometheus_port is not None):
        return None, warnings
    if asked and endpoint is None:
        endpoint = DEFAULT_ENDPOINTS[protocol]
    config = OtelConfig(endpoint if asked else None, protocol, prometheus_port, traces, metrics)
    return config, warnings


LIVE_HINT = "run.jsonl has every event (`ddtrace export run.jsonl --otlp` sends them again)"


def capture_text(explicit: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether spans may carry prompt/completion text (only ever if the run recorded it)."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def delivery_warnings(
    stats: DeliveryStats, endpoint: str | None, hint: str = LIVE_HINT
) -> list[str]:
    """One line per signal that did not fully arrive; empty when everything did. The first
    line quotes the exporter's first complaint (the cause) and ends with ``hint``."""
    out: list[str] = []
    lost = stats.spans_failed + stats.spans_dropped
    if lost:
        parts = [f"{stats.spans_failed} failed to export"] if stats.spans_failed else []
        if stats.spans_dropped:
            parts.append(f"{stats.spans_dropped} dropped (export queue full or shutdown timeout)")
        what = ", ".join(parts)
        out.append(f"OTLP: {lost} of {stats.spans_ended} spans did not reach {endpoint}: {what}")
    if stats.metric_failures:
        out.append(
            f"OTLP: {stats.metric_failures} of {stats.metric_exports} metric exports to "
            f"{endpoint} failed"
        )
    if out:
        cause = f" (first error: {stats.first_error})" if stats.first_error else ""
        out[0] += f"{cause}; {hint}"
    return out


def build_otel_sink(
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    *,
    record_text: bool | None = None,
) -> tuple[OtelSink | None, Callable[[], list[str]]]:
    """The live OTel sink for a run (None if nothing was asked for) and ``finish``: call it once
    the run has ended; it flushes and stops the SDK (bounded) and returns warning lines.
    ``record_text``: see :func:`capture_text`."""
    config, warnings = resolve_config(otlp_endpoint, otlp_protocol, prometheus_port)
    if config is None:
        return None, lambda: list(warnings)
    from ddscope.exporters.otel.sdk import OtelSdk
    from ddscope.exporters.otel.sink import OtelSink

    sdk = OtelSdk(
        config.endpoint,
        config.protocol,
        config.prometheus_port,
        traces=config.traces,
        metrics=config.metrics,
    )
    text = capture_text(record_text)
    sink = OtelSink(sdk.tracer_provider, sdk.meter_provider, record_text=text)
    finished: list[str] | None = None

    def finish() -> list[str]:
        nonlocal finished
        if finished is None:
            finished = warnings + delivery_warnings(sdk.shutdown(), config.endpoint)
        return list(finished)

    return sink, finish
