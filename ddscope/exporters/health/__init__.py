"""``ddtrace health``: the post-mortem of a run record (verdict, findings, figures, idle time).

Entry points: :func:`analyze` (record → :class:`HealthReport`), :func:`render` (text) and
``HealthReport.to_json()`` (the ``ddscope.health/1`` document).
"""

from ddscope.exporters.health.analysis import analyze
from ddscope.exporters.health.render import render
from ddscope.exporters.health.report import HealthReport, Thresholds

__all__ = ["HealthReport", "Thresholds", "analyze", "render"]
