"""``analyze()``: a run record → its :class:`HealthReport`, in one streaming pass.

The pass itself is :class:`~ddscope.exporters.health.analyzer.HealthAnalyzer`; the report's
figures are assembled by :mod:`~ddscope.exporters.health.build` and judged by
:mod:`~ddscope.exporters.health.findings`.
"""

from __future__ import annotations

from pathlib import Path

from ddscope.exporters.health.analyzer import HealthAnalyzer
from ddscope.exporters.health.build import build_report
from ddscope.exporters.health.report import HealthReport, Thresholds
from ddscope.record.detect import open_record
from ddscope.record.jsonl import bad_values_located


def analyze(
    record: str | Path,
    *,
    at_s: float | None = None,
    lenient: bool = False,
    thresholds: Thresholds | None = None,
) -> HealthReport:
    """Reads ``record`` once and returns its health snapshot (as of ``at_s`` if given).

    Raises RecordError (``file:line: reason``) for a record that cannot be read; ``lenient``
    skips corrupt lines (listed in ``report.record.warnings``).
    """
    reader = open_record(record, lenient=lenient)  # run.jsonl or DataDesigner events
    at_ns = None if at_s is None else max(0, int(at_s * 1e9))
    analyzer = HealthAnalyzer(reader.header, at_ns=at_ns)
    with bad_values_located(reader):
        analyzer.consume(reader.iter_dicts())
    analyzer.finish()
    warnings = reader.finish_warnings() + analyzer.warnings
    return build_report(analyzer, Path(record), at_s, thresholds or Thresholds(), warnings)
