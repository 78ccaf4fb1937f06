"""What OpenTelemetry to set up for a run: explicit arguments, then the standard ``OTEL_*``
environment, then defaults; and :func:`build_otel_sink`. (The ``ddtrace run`` options that feed it
are in :mod:`ddscope.cli.otel_options`: click stays under ``cli/``.)

Nothing is configured unless asked: OTLP export starts when ``--otlp-endpoint`` or
``--otlp-protocol`` is given or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a per-signal
``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT``) is set; the Prometheus pull endpoint when
``--prometheus-port`` is given. ``OTEL_SDK_DISABLED=true`` turns everything off.

Per signal, as the OTLP exporter specification says: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
and ``…_METRICS_ENDPOINT`` take that signal elsewhere, used as given (for OTLP/HTTP the whole
URL, ``/v1/traces`` included; for gRPC its host and port), and
``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL`` its protocol; a signal without one follows the
general variables or their defaults. ``--otlp-endpoint`` and ``--otlp-protocol`` are for every
signal and win over all of them.

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
span export batches            ``OTEL_BSP_MAX_QUEUE_SIZE``,           8,192 spans queued,
                               ``OTEL_BSP_SCHEDULE_DELAY``,           every 1,000 ms,
                               ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``     512 spans a request
bytes per export request       ``DDSCOPE_OTLP_MAX_REQUEST_BYTES``     4 MiB (larger batches
                                                                      go as several requests)
compression                    ``OTEL_EXPORTER_OTLP_COMPRESSION``     none
                               (+ ``…_{TRACES,METRICS}_…``)
metric export interval         ``OTEL_METRIC_EXPORT_INTERVAL`` (ms)   10,000 ms (a live run)
span limits                    ``OTEL_ATTRIBUTE_*``,                  the SDK's (1,024 events
                               ``OTEL_SPAN_*``, ``OTEL_EVENT_*``,     a span)
                               ``OTEL_LINK_*``
prompt/completion text         ``record_text`` / ``OTEL_INSTRUMENTA-  off
in spans (if the run           TION_GENAI_CAPTURE_MESSAGE_CONTENT``
recorded it)                   (the GenAI instrumentations' opt-in)
=============================  =====================================  ========================

A bad explicit value raises :class:`ConfigError` naming the option; a bad environment value is
skipped with a warning naming the variable (as the OTel SDKs do), so a stray variable never stops
a run. The SDK reads some variables itself and raises on a bad one (span limits, the gRPC
exporters' compression and per-signal timeouts), or logs a line that would be taken for an export
error (the sampler): those are checked here too (:func:`_check_sdk_variables`), and a bad one is
hidden from the SDK while it is imported and set up (:func:`sdk_environment`; ``os.environ`` is
restored at once), so the SDK uses its default. Compression is worked out here and handed to the
exporters, which then read none of its variables (gRPC's exporters refuse even ``none``).

Credentials stay inside: the values of ``OTEL_EXPORTER_OTLP_HEADERS`` (and the per-signal
``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_HEADERS``) and userinfo in an endpoint URL go to the
exporters only. Messages and warnings show an endpoint as ``http://***@host:port``
(:func:`redact_url`), name a malformed header variable without its value, and have every such
value redacted from the exporters' own complaints (:func:`redact_credentials`); the SDK's log
line for a malformed header, which quotes the entry, is reworded without it. This module
imports no OpenTelemetry at load time: ``ddtrace`` commands that do not use it stay fast.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ddscope.credentials import (
    header_value_credentials,
    longest_first,
    proxy_credentials,
    url_credentials,
)
from ddscope.errors import ConfigError
from ddscope.exporters.otel.batching import SpanBatching, span_batching
from ddscope.exporters.otel.signals import METRIC_INTERVAL_MS, SIGNALS, signal_url
from ddscope.safe_text import escape_controls

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
HEADER_VARIABLES = tuple(
    f"OTEL_EXPORTER_OTLP_{signal}HEADERS" for signal in ("", "TRACES_", "METRICS_", "LOGS_")
)
ENDPOINT_VARIABLES = tuple(
    f"OTEL_EXPORTER_OTLP_{signal}ENDPOINT" for signal in ("", "TRACES_", "METRICS_", "LOGS_")
)
_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")
# What each protocol's exporter takes (the specification names gzip and none; OTLP/HTTP in the
# Python SDK also deflate).
COMPRESSIONS = {"grpc": ("gzip", "none"), "http/protobuf": ("gzip", "deflate", "none")}
# The span limits the SDK reads (a non-negative whole number, or empty for no limit). It raises
# on anything else: in TracerProvider(), and for OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT when
# opentelemetry.sdk.trace is imported.
SPAN_LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
TIMEOUT_VARIABLES = tuple(
    f"OTEL_EXPORTER_OTLP_{signal}TIMEOUT" for signal in ("", "TRACES_", "METRICS_")
)


@dataclass(frozen=True)
class OtelConfig:
    endpoint: str | None  # OTLP base URL, e.g. http://127.0.0.1:4317; None: no OTLP export
    protocol: str
    prometheus_port: int | None
    traces: bool = True  # spans over OTLP (OTEL_TRACES_EXPORTER=none turns them off)
    metrics: bool = True  # metrics over OTLP (OTEL_METRICS_EXPORTER=none: e.g. for Jaeger)
    batching: SpanBatching = field(default_factory=SpanBatching)  # span export (OTEL_BSP_*)
    # (signal, URL as the exporter takes it, protocol) from the per-signal variables
    per_signal: tuple[tuple[str, str, str], ...] = ()
    # (signal, "gzip" or "deflate") for a signal sent compressed; the others go uncompressed
    compression: tuple[tuple[str, str], ...] = ()
    # Variables with a bad value the SDK would read itself: hidden from it (sdk_environment).
    # Not compared: which variables were bad is not what was configured.
    hidden: frozenset[str] = field(default=frozenset(), compare=False)

    def _own(self, signal: str) -> tuple[str, str] | None:
        """(URL, protocol) the per-signal variables give ``signal``, if they do."""
        return next(((u, p) for name, u, p in self.per_signal if name == signal), None)

    def target(self, signal: str) -> tuple[str, str] | None:
        """(URL, protocol) the exporter of ``signal`` sends to; None: no OTLP export."""
        own = self._own(signal)
        if own is not None:
            return own
        if self.endpoint is None:
            return None
        return signal_url(self.endpoint, self.protocol, signal), self.protocol

    def targets(self) -> dict[str, tuple[str, str]]:
        return {s: t for s in SIGNALS if (t := self.target(s)) is not None}

    def compressions(self) -> dict[str, str]:
        """Signal → the compression its exporter is given, for every signal sent over OTLP
        (given one, an exporter reads none of the compression variables)."""
        chosen = dict(self.compression)
        return {signal: chosen.get(signal, "none") for signal in self.targets()}

    def url(self, signal: str) -> str | None:
        """Where the signal goes, as the user gave it: its per-signal URL, else the endpoint.
        Credentials included: for :func:`delivery_warnings` (which hides them); :meth:`shown`
        for anything else."""
        own = self._own(signal)
        return own[0] if own is not None else self.endpoint

    def shown(self, signal: str) -> str | None:
        """The signal's URL for a message: its userinfo hidden."""
        url = self.url(signal)
        return redact_url(url) if url is not None else None


def normalize_endpoint(value: str) -> str:
    """``host:port`` or a URL → ``scheme://host:port`` (a signal path such as /v1/traces is
    stripped: the exporters add their own). Raises ValueError if it is not such a URL."""
    text = value.strip()
    url = text if "://" in text else f"http://{text}"
    parsed = urlparse(url)
    shown = redact_url(value)  # a URL may carry credentials
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or any(char.isspace() for char in parsed.netloc)
    ):
        raise ValueError(f"{shown!r} is not a URL like http://127.0.0.1:4317")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{shown!r} has a port that is not a number") from None
    path = parsed.path.rstrip("/")
    for signal in _SIGNAL_PATHS:
        path = path.removesuffix(signal)
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def redact_url(text: str) -> str:
    """``text`` with the userinfo of every URL in it shown as ``***``."""
    return _USERINFO.sub("***@", text)


def otlp_credentials(env: Mapping[str, str], endpoints: Iterable[str | None] = ()) -> list[str]:
    """Every credential the OTLP set-up holds, in every form a collector may quote it
    (``ddscope.credentials``): header values from the header variables and the token inside
    them, the userinfo of ``endpoints`` and of the endpoint variables with its ``Basic`` form
    (the SDK sends URL credentials that way), and the proxy variables' credentials."""
    found: set[str] = set()
    for variable in HEADER_VARIABLES:
        for entry in env.get(variable, "").split(","):
            _, sep, value = entry.partition("=")
            if sep and value.strip():
                found |= header_value_credentials(value)
    for url in [*endpoints, *(env.get(v) for v in ENDPOINT_VARIABLES)]:
        found |= url_credentials(url)
    return longest_first(found | proxy_credentials(env))


def redact_credentials(text: str, credentials: Iterable[str]) -> str:
    """``text`` with URL userinfo and every credential replaced (for messages and warnings)."""
    text = redact_url(text)
    for credential in credentials:
        text = text.replace(credential, "[redacted]")
    return text


def _check_headers(env: Mapping[str, str], warnings: list[str]) -> None:
    """Names a header variable with a malformed entry; never shows the entry (it may be a token)."""
    for variable in HEADER_VARIABLES:
        _check_pairs(variable, "name=value", env, warnings)


def _check_pairs(variable: str, form: str, env: Mapping[str, str], warnings: list[str]) -> None:
    """Names the entries of a comma-separated ``variable`` that are not ``form`` (``k=v``) by
    their place, never their text: the SDK skips them, and logs them verbatim."""
    entries = [e.strip() for e in env.get(variable, "").split(",")]
    bad = [i for i, e in enumerate(entries, 1) if e and "=" not in e]
    if bad:
        where = ", ".join(str(i) for i in bad)
        warnings.append(f"{variable}: entry {where} is not {form}; skipped (value not shown)")


class _HideHeaderValues(logging.Filter):
    """The SDK logs a malformed header entry verbatim: reworded without the entry."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Header format invalid" in str(record.msg):
            record.msg = "OTLP header variable has an entry that is not name=value (not shown)"
            record.args = ()
        return True


def hide_credentials_in_sdk_logs() -> None:
    """Installs the filter on the SDK's header parser logger (once)."""
    logger = logging.getLogger("opentelemetry.util.re")
    if not any(isinstance(f, _HideHeaderValues) for f in logger.filters):
        logger.addFilter(_HideHeaderValues())


def _no_grpc_userinfo(explicit: bool, warnings: list[str]) -> tuple[bool, None]:
    """gRPC has no place for URL credentials: its exporter would use ``user:pass@host`` as the
    target name, and gRPC's own logging (outside Python's) would print it. Refused, unseen."""
    why = (
        "credentials in the URL are sent only with http/protobuf (as Basic auth); "
        "for gRPC put them in OTEL_EXPORTER_OTLP_HEADERS"
    )
    if explicit:
        raise ConfigError(f"--otlp-endpoint: {why}")
    warnings.append(f"OTEL_EXPORTER_OTLP_ENDPOINT: {why}; no OTLP export")
    return False, None


def _protocol(
    explicit: str | None,
    env: Mapping[str, str],
    warnings: list[str],
    *,
    variable: str = "OTEL_EXPORTER_OTLP_PROTOCOL",
) -> str:
    if explicit is not None:
        if explicit not in PROTOCOLS:
            raise ConfigError(f"--otlp-protocol: {explicit!r} is not one of {', '.join(PROTOCOLS)}")
        return explicit
    value = env.get(variable, "").strip()
    if value and value not in PROTOCOLS:
        warnings.append(
            f"{variable}={value!r} is not supported ({', '.join(PROTOCOLS)}); "
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
    # The options are for every signal: with one given, the per-signal variables do not apply.
    explicit = otlp_endpoint is not None or otlp_protocol is not None
    per_signal = () if explicit else _per_signal(protocol, env, warnings)
    wanted = otlp_requested or otlp_protocol is not None or bool(per_signal)
    asked, endpoint = _endpoint(otlp_endpoint, wanted, env, warnings)
    if asked and protocol == "grpc" and _USERINFO.search(endpoint or ""):
        asked, endpoint = _no_grpc_userinfo(otlp_endpoint is not None, warnings)
        asked = asked or bool(per_signal)
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower()
    if disabled == "true":
        if asked or prometheus_port is not None:
            warnings.append("OTEL_SDK_DISABLED=true: no OpenTelemetry export for this run")
        return None, warnings
    if not asked and prometheus_port is None:
        return None, warnings
    if disabled not in ("", "false"):  # the SDK takes anything but "true" as false, silently
        warnings.append(f"OTEL_SDK_DISABLED={disabled!r} is not true or false; taken as false")
    traces = _signal_on("OTEL_TRACES_EXPORTER", env, warnings)
    metrics = _signal_on("OTEL_METRICS_EXPORTER", env, warnings)
    if not (traces or metrics or prometheus_port is not None):
        return None, warnings
    _check_headers(env, warnings)
    hide_credentials_in_sdk_logs()
    if asked and endpoint is None:
        endpoint = DEFAULT_ENDPOINTS[protocol]
    batching = span_batching(env, warnings) if asked and traces else SpanBatching()
    config = OtelConfig(
        endpoint if asked else None,
        protocol,
        prometheus_port,
        traces,
        metrics,
        batching,
        per_signal if asked else (),
    )
    sent = {
        signal: target
        for signal, target in config.targets().items()
        if {"traces": traces, "metrics": metrics}[signal]
    }
    chosen = {signal: _compression(signal, p, env, warnings) for signal, (_, p) in sent.items()}
    compression = tuple((signal, c) for signal, c in chosen.items() if c != "none")
    hidden = _check_sdk_variables(env, warnings, metric_interval="metrics" in sent)
    return replace(config, compression=compression, hidden=hidden), warnings


def _compression(signal: str, protocol: str, env: Mapping[str, str], warnings: list[str]) -> str:
    """The signal's compression: its own variable, else the general one, else none. A value the
    protocol's exporter does not take is skipped with a warning (the gRPC exporter raised on it,
    the HTTP one logged a line and sent uncompressed)."""
    allowed = COMPRESSIONS[protocol]
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_COMPRESSION", _GENERAL_COMPRESSION):
        value = env.get(variable, "").strip().lower()
        if value in allowed:
            return value
        if value:
            warning = (
                f"{variable}={value!r} is not supported with {protocol} "
                f"({', '.join(allowed)}); ignored"
            )
            if warning not in warnings:  # the general variable serves both signals
                warnings.append(warning)
    return "none"


_GENERAL_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


def _check_sdk_variables(
    env: Mapping[str, str], warnings: list[str], *, metric_interval: bool
) -> frozenset[str]:
    """Checks the variables the SDK reads itself; returns those to hide from it
    (:func:`sdk_environment`), each named in a warning. ``metric_interval``: metrics are sent
    over OTLP (a live run's periodic reader reads OTEL_METRIC_EXPORT_INTERVAL)."""
    hidden: set[str] = set()

    def bad(variable: str, why: str) -> None:
        hidden.add(variable)
        warnings.append(f"{variable}={env[variable].strip()!r} {why}")

    for variable in SPAN_LIMIT_VARIABLES:
        text = env.get(variable)
        if text is not None and text.strip() and not _whole_number(text.strip()):
            bad(variable, "is not a whole number of 0 or more; the default limit is used")
    # ddscope's exporters time out on their own (a replay or shutdown must not wait 10 s), so
    # these are not used; but the gRPC exporters parse the per-signal ones and raise on a bad one.
    for variable in TIMEOUT_VARIABLES:
        if env.get(variable, "").strip() and _number(env[variable]) is None:
            bad(variable, "is not a number; ignored")
    if metric_interval and env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip():
        interval = _number(env["OTEL_METRIC_EXPORT_INTERVAL"])
        if interval is None or interval <= 0:
            bad(
                "OTEL_METRIC_EXPORT_INTERVAL",
                f"is not a positive number of milliseconds; using {METRIC_INTERVAL_MS}",
            )
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        # Hidden too: the SDK's own line about it would otherwise be held as an export error.
        bad("OTEL_TRACES_SAMPLER", "is unknown; parentbased_always_on used")
    if sampler in _RATIO_SAMPLERS and env.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
        ratio = _number(env["OTEL_TRACES_SAMPLER_ARG"])
        if ratio is None or not 0 <= ratio <= 1:  # the SDK raises on a ratio outside [0, 1]
            bad("OTEL_TRACES_SAMPLER_ARG", f"is not a ratio from 0 to 1; {sampler} uses 1.0")
    # a resource attribute may be something private: named by its place, as a header is
    _check_pairs("OTEL_RESOURCE_ATTRIBUTES", "key=value", env, warnings)
    return frozenset(hidden)


def _whole_number(text: str) -> bool:
    """As the SDK's span limits take it: ``int(text) >= 0``."""
    try:
        return int(text) >= 0
    except ValueError:
        return False


def _number(text: str) -> float | None:
    """A finite number as the SDK parses it (``float``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_ENVIRONMENT_LOCK = threading.Lock()


@contextmanager
def sdk_environment(hidden: Iterable[str]) -> Iterator[None]:
    """``hidden`` removed from ``os.environ`` while the SDK is imported and set up, then put
    back (unless something set them meanwhile): the SDK reads them there, some when a module is
    imported, and offers no other way to make it ignore a bad one. Only the SDK's constructors
    read them, so nothing after this sees the difference."""
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.pop(name) for name in hidden if name in os.environ}
        try:
            yield
        finally:
            for name, value in saved.items():
                os.environ.setdefault(name, value)


def _per_signal(
    protocol: str, env: Mapping[str, str], warnings: list[str]
) -> tuple[tuple[str, str, str], ...]:
    """The signals that ``OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT`` takes elsewhere: (signal, URL
    as the exporter takes it, protocol). A bad value is skipped with a warning naming it."""
    found: list[tuple[str, str, str]] = []
    for signal in SIGNALS:
        variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        value = env.get(variable, "").strip()
        if not value:
            continue
        own = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
        given = env.get(own, "").strip()
        signal_protocol = _protocol(None, env, warnings, variable=own) if given else protocol
        try:
            url = _signal_endpoint(value, signal_protocol)
        except ValueError as exc:
            warnings.append(f"{variable}: {exc}; not used")
            continue
        found.append((signal, url, signal_protocol))
    return tuple(found)


def _signal_endpoint(value: str, protocol: str) -> str:
    """A per-signal endpoint as its exporter takes it: for OTLP/HTTP the URL as given (the
    specification says so: nothing is added), for gRPC ``scheme://host:port``."""
    base = urlparse(normalize_endpoint(value))  # checks scheme, host and port (ValueError)
    if protocol == "grpc":
        if "@" in base.netloc:
            raise ValueError(
                "credentials in the URL are sent only with http/protobuf; for gRPC put them "
                "in OTEL_EXPORTER_OTLP_HEADERS"
            )
        return f"{base.scheme}://{base.netloc}"  # gRPC calls a host: a path means nothing
    text = value.strip()
    return text if "://" in text else f"http://{text}"


LIVE_HINT = "run.jsonl has every event (`ddtrace export run.jsonl --otlp` sends them again)"


def capture_text(explicit: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether spans may carry prompt/completion text (only ever if the run recorded it)."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def delivery_warnings(
    stats: DeliveryStats,
    endpoint: str | None,
    hint: str = LIVE_HINT,
    *,
    metrics_endpoint: str | None = None,
) -> list[str]:
    """One line per signal that did not fully arrive; empty when everything did. Each line
    quotes the exporter's first complaint about its signal (the cause; the metrics line only
    when it differs from the spans line's), and the first ends with ``hint``."""
    out: list[str] = []
    credentials = otlp_credentials(os.environ, [endpoint, metrics_endpoint])
    metrics_endpoint = redact_url(metrics_endpoint or endpoint or "") or None
    endpoint = redact_url(endpoint) if endpoint is not None else None

    def cause(error: str | None) -> str:
        # The collector's own words (a status message), for a terminal or a caller's log.
        quoted = escape_controls(redact_credentials(error or "", credentials))
        return f" (first error: {quoted})" if quoted else ""

    lost = stats.spans_failed + stats.spans_dropped
    if lost:
        parts = [f"{stats.spans_failed} failed to export"] if stats.spans_failed else []
        if stats.spans_too_large:
            parts[0] += (
                f" ({stats.spans_too_large} of them not sent, each larger than the "
                f"{stats.request_limit_bytes}-byte request limit on its own: "
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT caps attribute values such as prompt "
                "text, DDSCOPE_OTLP_MAX_REQUEST_BYTES raises the limit for a collector that "
                "takes more)"
            )
        if stats.spans_dropped:
            parts.append(f"{stats.spans_dropped} dropped (export queue full or shutdown timeout)")
        what = ", ".join(parts)
        out.append(
            f"OTLP: {lost} of {stats.spans_ended} spans did not reach {endpoint}: {what}"
            + cause(stats.first_span_error)
        )
    if stats.metric_failures:
        said = lost and stats.first_metric_error == stats.first_span_error
        out.append(
            f"OTLP: {stats.metric_failures} of {stats.metric_exports} metric exports to "
            f"{metrics_endpoint} failed" + ("" if said else cause(stats.first_metric_error))
        )
    # Spans too large to send are not the collector's fault: the hint would mislead.
    if out and not (stats.spans_too_large == lost and not stats.metric_failures):
        out[0] += f"; {hint}"
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
    with sdk_environment(config.hidden):  # the SDK reads some variables on import
        from ddscope.exporters.otel.sdk import OtelSdk
        from ddscope.exporters.otel.sink import OtelSink

        sdk = OtelSdk(
            config.endpoint,
            config.protocol,
            config.prometheus_port,
            traces=config.traces,
            metrics=config.metrics,
            batching=config.batching,
            targets=config.targets(),
            compression=config.compressions(),
        )
    text = capture_text(record_text)
    sink = OtelSink(sdk.tracer_provider, sdk.meter_provider, record_text=text)
    finished: list[str] | None = None

    def finish() -> list[str]:
        nonlocal finished
        if finished is None:
            finished = warnings + delivery_warnings(
                sdk.shutdown(), config.url("traces"), metrics_endpoint=config.url("metrics")
            )
        return list(finished)

    return sink, finish
