"""The OTLP signals ddscope sends, where each goes from a base endpoint, and the metric export
interval: shared by the set-up (``setup.py``, which imports no OpenTelemetry) and the SDK wiring
(``sdk.py``), so neither imports the other at load time."""

from __future__ import annotations

SIGNALS = ("traces", "metrics")
METRIC_INTERVAL_MS = 10_000  # a live run's metric exports, unless OTEL_METRIC_EXPORT_INTERVAL


def signal_url(endpoint: str, protocol: str, signal: str) -> str:
    """Where an exporter of ``signal`` sends, given a base endpoint: OTLP/HTTP posts to the
    signal's path under it, gRPC calls the endpoint itself."""
    return endpoint if protocol == "grpc" else f"{endpoint}/v1/{signal}"
