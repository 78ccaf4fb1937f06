"""``ddtrace report``: a run (or two runs side by side) as one self-contained HTML page.

Entry points: :func:`build_report` (one run) and :func:`build_comparison` (before/after). The
data come from one streaming pass per record (:mod:`.collect`: the health analyzer plus bounded
time series, :mod:`.series`); the page inlines the vendored uPlot (``vendor/``), so it needs no
network when viewed.
"""

from ddscope.exporters.report.compare import build_comparison
from ddscope.exporters.report.single import ReportResult, build_report

__all__ = ["ReportResult", "build_comparison", "build_report"]
