"""One pass over a run record that yields both the health report and the report's time series.

The health analyzer reads the record as it does for ``ddtrace health``; a
:class:`~ddscope.exporters.report.series.SeriesCollector` looks at each event just before the
analyzer handles it and samples the analyzer's state at bin edges. One read of the file, memory
bounded by the bins and by what the analyzer keeps open.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddscope.events import RunHeader
from ddscope.exporters.health.analyzer import HealthAnalyzer
from ddscope.exporters.health.build import build_report
from ddscope.exporters.health.report import HealthReport, Thresholds
from ddscope.exporters.report.series import SeriesCollector
from ddscope.record.detect import open_record
from ddscope.record.jsonl import bad_values_located


@dataclass
class RunData:
    """What a report shows about one run."""

    path: Path
    header: RunHeader
    health: HealthReport
    analyzer: HealthAnalyzer  # finished: its trackers hold the latency histograms
    series: SeriesCollector


def collect(record: str | Path, *, lenient: bool = False) -> RunData:
    """Reads ``record`` once. Raises RecordError (``file:line: reason``) like ``analyze``."""
    path = Path(record)
    reader = open_record(path, lenient=lenient)  # run.jsonl or DataDesigner events
    analyzer = HealthAnalyzer(reader.header)
    series = SeriesCollector(analyzer)
    with bad_values_located(reader):
        analyzer.consume(_watched(reader.iter_dicts(), series))
    analyzer.finish()
    series.finish()
    warnings = reader.finish_warnings() + analyzer.warnings
    health = build_report(analyzer, path, None, Thresholds(), warnings)
    return RunData(path, reader.header, health, analyzer, series)


def _watched(
    events: Iterable[tuple[int, dict[str, Any]]], series: SeriesCollector
) -> Iterator[tuple[int, dict[str, Any]]]:
    # SeriesCollector.observe, inlined: this runs once per event of the record
    handlers, advance = series.handlers, series.advance
    for item in events:
        data = item[1]
        t = data["t_ns"]
        if t >= series.next_edge:
            advance(t)
        handler = handlers.get(data["kind"])
        if handler is not None:
            handler(data, t)
        yield item
