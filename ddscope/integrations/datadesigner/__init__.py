"""NVIDIA NeMo DataDesigner as a source of ddscope events.

* a recorded ``scheduler_events.jsonl`` (``RunConfig(write_scheduler_events=True)``), plain or
  gzipped, read as a ddscope run: :func:`.reader.open_datadesigner`
  (what ``ddtrace health`` and ``ddtrace export`` use when they detect such a file);
* live: :func:`~ddscope.integrations.datadesigner.live.observe` around ``DataDesigner.create()`` /
  ``preview()``, feeding the same sinks ``ddtrace run`` uses (run.jsonl, OTLP, Prometheus).

The mapping from DataDesigner's events to ddscope's is in :mod:`.translate` (scheduler events),
:mod:`.snapshots` (health snapshots) and :mod:`.requests` (request-admission events, live only);
the README's DataDesigner section has it as a table. Names load lazily, so reading a file never
imports DataDesigner or OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports

if TYPE_CHECKING:
    from ddscope.integrations.datadesigner.live import LiveRun, observe
    from ddscope.integrations.datadesigner.reader import DataDesignerReader, open_datadesigner

_LAZY: dict[str, str] = {
    "observe": "ddscope.integrations.datadesigner.live",
    "LiveRun": "ddscope.integrations.datadesigner.live",
    "DataDesignerReader": "ddscope.integrations.datadesigner.reader",
    "open_datadesigner": "ddscope.integrations.datadesigner.reader",
}

__all__ = ["DataDesignerReader", "LiveRun", "observe", "open_datadesigner"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
