"""Events → OpenTelemetry spans and metrics, live (an event sink on the run's bus) and replayed
from a record; OTLP over gRPC or HTTP, and a Prometheus pull endpoint.

Entry points: :func:`build_otel_sink` (configuration from arguments, ``OTEL_*``, defaults),
:class:`OtelSink`, :func:`replay_to_otlp`. Loaded lazily: ``setup`` imports no OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports

if TYPE_CHECKING:
    from ddscope.exporters.otel.replay import replay_to_otlp
    from ddscope.exporters.otel.setup import build_otel_sink
    from ddscope.exporters.otel.sink import OtelSink

__all__ = ["OtelSink", "build_otel_sink", "replay_to_otlp"]
_LAZY = {
    "OtelSink": "ddscope.exporters.otel.sink",
    "build_otel_sink": "ddscope.exporters.otel.setup",
    "replay_to_otlp": "ddscope.exporters.otel.replay",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
