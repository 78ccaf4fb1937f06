"""Views of a run, each a consumer of the event stream (never of engine internals):

* :mod:`~ddscope.exporters.otel` — live and replayed OpenTelemetry spans and metrics (OTLP,
  Prometheus);
* :mod:`~ddscope.exporters.health` — the post-mortem verdict (``ddtrace health``);
* :mod:`~ddscope.exporters.trace` — Perfetto and Chrome JSON traces (``ddtrace export``).
"""
