"""``ddtrace report A.jsonl B.jsonl``: the before/after table and the time plots of both runs on
one time axis (seconds since each run started).

Each row of the table says which way is better (``higher``, ``lower`` or not judged) and the
better cell is marked. Requests per second is not judged: more requests can mean more retries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ddscope.exporters.health.report import DomainReport, HealthReport, verdict_rank
from ddscope.exporters.report.collect import RunData, collect
from ddscope.exporters.report.page import document, plot_slots
from ddscope.exporters.report.plots import COLOR, Spec, series
from ddscope.exporters.report.sections import esc, table
from ddscope.exporters.report.single import ReportResult, write_html
from ddscope.exporters.report.view import DomainView, Numbers, RunView, run_view

Better = Literal["higher", "lower", "none"]
B_COLOR = {"A": None, "B": [6, 3]}  # run B is drawn dashed in the same colours


@dataclass(frozen=True)
class Row:
    label: str
    a: float
    b: float
    better: Better
    fmt: str = "{:,.0f}"
    shown: tuple[str, str] | None = None  # the cells' text when not just ``fmt`` of a and b

    def cells(self) -> tuple[str, str]:
        return self.shown or (self.fmt.format(self.a), self.fmt.format(self.b))

    def winner(self) -> str | None:
        if self.better == "none" or self.a == self.b:
            return None
        a_wins = self.a > self.b if self.better == "higher" else self.a < self.b
        return "A" if a_wins else "B"


def comparison_rows(a: RunData, b: RunData, va: RunView, vb: RunView) -> list[Row]:
    ha, hb = a.health, b.health
    ta, tb = ha.totals, hb.totals
    rows = [  # judged by share of the run's rows: the two runs may differ in size
        Row(
            "rows completed",
            _share(ta.rows_completed, ta.num_records),
            _share(tb.rows_completed, tb.num_records),
            "higher",
            shown=(
                f"{ta.rows_completed}/{ta.num_records}",
                f"{tb.rows_completed}/{tb.num_records}",
            ),
        ),
        Row(
            "rows dropped",
            _share(ta.rows_dropped, ta.num_records),
            _share(tb.rows_dropped, tb.num_records),
            "lower",
            shown=(str(ta.rows_dropped), str(tb.rows_dropped)),
        ),
    ]
    for reason in sorted(set(ta.drops_by_reason) | set(tb.drops_by_reason)):
        rows.append(
            Row(
                f"  dropped: {reason}",
                ta.drops_by_reason.get(reason, 0),
                tb.drops_by_reason.get(reason, 0),
                "lower",
            )
        )
    rows += [
        Row("admission timeouts", _sum(ha, _timeouts), _sum(hb, _timeouts), "lower"),
        Row("429 answers", _sum(ha, _r429), _sum(hb, _r429), "lower"),
        Row("max waiters", _peak_waiters(va), _peak_waiters(vb), "lower"),
        Row("wall time (s)", ta.duration_s, tb.duration_s, "lower", "{:,.2f}"),
        Row("rows/s", ta.rows_per_s, tb.rows_per_s, "higher", "{:,.2f}"),
        Row("requests/s", ta.requests_per_s, tb.requests_per_s, "none", "{:,.1f}"),
    ]
    for name in _domain_names(ha, hb):
        da, db = _domain(ha, name), _domain(hb, name)
        rows += _domain_rows(name, da, db)
    return rows


def _domain_rows(name: str, da: DomainReport | None, db: DomainReport | None) -> list[Row]:
    def share(d: DomainReport | None, part: Callable[[DomainReport], float]) -> float:
        if d is None or d.idle.capacity_slot_s <= 0:
            return 0.0
        return part(d) / d.idle.capacity_slot_s

    parts: list[tuple[str, Callable[[DomainReport], float]]] = [
        ("model-slot utilization", lambda d: d.idle.busy_slot_s),
        ("idle, ready work waiting", lambda d: d.idle.ready_work_waiting.total_slot_s),
        ("  waiting: 429 cooldown", lambda d: d.idle.ready_work_waiting.cooldown_slot_s),
        ("  waiting: breaker", lambda d: d.idle.ready_work_waiting.breaker_slot_s),
        ("  waiting: AIMD limit", lambda d: d.idle.ready_work_waiting.limit_slot_s),
        ("  waiting: hand-off", lambda d: d.idle.ready_work_waiting.waiters_ahead_slot_s),
        ("idle, no ready work", lambda d: d.idle.no_ready_work.total_slot_s),
        ("  no work: inputs not done", lambda d: d.idle.no_ready_work.dependencies_slot_s),
        ("  no work: awaiting salvage", lambda d: d.idle.no_ready_work.awaiting_salvage_slot_s),
        ("  no work: nothing admitted", lambda d: d.idle.no_ready_work.horizon_slot_s),
    ]
    rows = []
    for label, part in parts:
        better: Better = "higher" if label.startswith("model-slot") else "lower"
        rows.append(Row(f"{name}: {label}", share(da, part), share(db, part), better, "{:.1%}"))
    return rows


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _sum(h: HealthReport, figure: Callable[[DomainReport], int]) -> int:
    return sum(figure(d) for d in h.domains)


def _timeouts(d: DomainReport) -> int:
    return d.admission_timeouts


def _r429(d: DomainReport) -> int:
    return d.attempts.get("rate_limited", 0)


def _peak_waiters(view: RunView) -> int:
    return max((d.peak_waiters for d in view.domains), default=0)


def _domain_names(ha: HealthReport, hb: HealthReport) -> list[str]:
    names = [d.domain for d in ha.domains]
    return names + [d.domain for d in hb.domains if d.domain not in names]


def _domain(h: HealthReport, name: str) -> DomainReport | None:
    return next((d for d in h.domains if d.domain == name), None)


def _verdict_row(ha: HealthReport, hb: HealthReport) -> tuple[str, str, str]:
    cells = [esc(ha.verdict), esc(hb.verdict)]
    ra, rb = verdict_rank(ha.verdict), verdict_rank(hb.verdict)
    if ra != rb:
        i = 0 if ra < rb else 1
        cells[i] = f"<b>{cells[i]}</b> ✓"
    return ("verdict", cells[0], cells[1])


def table_html(rows: Sequence[Row], ha: HealthReport, hb: HealthReport) -> str:
    cells = [_verdict_row(ha, hb)]
    classes = []
    for row in rows:
        win = row.winner()
        a, b = row.cells()
        cells.append((esc(row.label), esc(a), esc(b)))
        classes.append(win)
    html_rows = []
    for i, (label, a, b) in enumerate(cells):
        win = classes[i - 1] if i else None
        ca = ' class="better"' if win == "A" else ""
        cb = ' class="better"' if win == "B" else ""
        html_rows.append(f"<tr><td>{label}</td><td{ca}>{a}</td><td{cb}>{b}</td></tr>")
    head = "<tr><th></th><th>A</th><th>B</th></tr>"
    body = "".join(html_rows)
    return f'<table class="compare"><thead>{head}</thead><tbody>{body}</tbody></table>'


# -- aligned plots ----------------------------------------------------------------------------


def join(
    xa: list[float], ya: list[Numbers], xb: list[float], yb: list[Numbers]
) -> tuple[list[float], list[Numbers], list[Numbers]]:
    """Both runs' series on the union of their x values (None where a run has no point)."""
    x = sorted(set(xa) | set(xb))
    where = {v: i for i, v in enumerate(x)}

    def spread(xs: list[float], ys: list[Numbers]) -> list[Numbers]:
        out: list[Numbers] = []
        for y in ys:
            full: Numbers = [None] * len(x)
            for xv, yv in zip(xs, y, strict=True):
                full[where[xv]] = yv
            out.append(full)
        return out

    return x, spread(xa, ya), spread(xb, yb)


def _pair_plot(
    pid: str, title: str, help_: str, va: RunView, vb: RunView, picks: list[tuple[str, str, str]]
) -> Spec:
    """``picks``: (label, colour, key) where key names a run-level series or ``domain:key``."""
    ya = [_pick(va, key) for _, _, key in picks]
    yb = [_pick(vb, key) for _, _, key in picks]
    x, ja, jb = join(va.x, ya, vb.x, yb)
    out = []
    for (label, color, _), a_values, b_values in zip(picks, ja, jb, strict=True):
        out.append(series(f"A {label}", a_values, color, "line", span=True))
        out.append(series(f"B {label}", b_values, color, "line", span=True, dash=B_COLOR["B"]))
    return {"id": pid, "title": title, "help": help_, "kind": "time", "x": x, "series": out}


def _pick(view: RunView, key: str) -> Numbers:
    if ":" not in key:
        return view.series[key]
    name, _, field = key.rpartition(":")
    d: DomainView | None = next((d for d in view.domains if d.name == name), None)
    return d.series[field] if d is not None else [None] * len(view.x)


def comparison_plots(va: RunView, vb: RunView) -> list[Spec]:
    dashed = "A solid, B dashed; seconds since each run started."
    specs = [
        _pair_plot("rows", "Rows done", dashed, va, vb, [("rows", COLOR["rows"], "rows_done")]),
        _pair_plot(
            "throughput",
            "Throughput",
            dashed,
            va,
            vb,
            [
                ("requests/s", COLOR["requests"], "requests_per_s"),
                ("429/s", COLOR["r429"], "rate_limited_per_s"),
            ],
        ),
    ]
    names = [d.name for d in va.domains] + [
        d.name for d in vb.domains if d.name not in {x.name for x in va.domains}
    ]
    for name in names:
        specs.append(
            _pair_plot(
                f"{name}:concurrency",
                f"{name}: limit, in flight, waiters",
                dashed,
                va,
                vb,
                [
                    ("limit", COLOR["limit"], f"{name}:limit_mean"),
                    ("in flight", COLOR["in_flight"], f"{name}:in_flight_mean"),
                    ("waiters", COLOR["waiters"], f"{name}:waiters_mean"),
                ],
            )
        )
    return specs


def build_comparison(
    record_a: str | Path, record_b: str | Path, out: str | Path, *, lenient: bool = False
) -> ReportResult:
    a, b = collect(record_a, lenient=lenient), collect(record_b, lenient=lenient)
    va, vb = run_view(a), run_view(b)
    title = f"ddscope comparison: {a.header.run_id} (A) vs {b.header.run_id} (B)"
    specs = comparison_plots(va, vb)
    body = (
        table(
            ("", "record", "run", "pipeline", "events"),
            [
                (
                    esc(side),
                    f"<code>{esc(r.path)}</code>",
                    esc(r.header.run_id),
                    esc(r.header.pipeline_name),
                    esc(f"{r.health.record.events:,}"),
                )
                for side, r in (("A", a), ("B", b))
            ],
        )
        + "<h2>Before / after</h2>"
        + table_html(comparison_rows(a, b, va, vb), a.health, b.health)
        + "<p class='muted'>✓ marks the better side; requests/s is not judged (more requests "
        "can mean more retries). Idle shares are of each domain's capacity.</p>"
        + f"<h2>Over time</h2>{plot_slots(specs, 0)}"
    )
    data = {"title": title, "plots": specs}
    size = write_html(Path(out), document(title, body, data, None))
    return ReportResult(
        out=Path(out),
        bytes_written=size,
        events=a.health.record.events + b.health.record.events,
        trace_embedded=False,
        warnings=[*a.health.record.warnings, *b.health.record.warnings],
    )
