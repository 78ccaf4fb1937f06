"""``ddtrace report`` without a browser: the downsampled series against figures computed here
from the events (and against the health report they are built on), bounded bins, escaping of
record text, the comparison's better side, and the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from engine_records import DOMAIN, EngineSpec, engine_events
from perfetto_support import write_record
from report_support import cut_record

from ddscope.cli.main import cli
from ddscope.events import LimitChanged, RowDropped, RunFinished, RunStarted
from ddscope.exporters.report import build_comparison, build_report, series
from ddscope.exporters.report.collect import collect
from ddscope.exporters.report.compare import comparison_rows
from ddscope.exporters.report.view import run_view

SPEC = EngineSpec(
    rows=60, buffer_size=10, max_parallel=4, rate_limit_every=7, defer_every=11, drop_rows=(5,)
)
S = 1e9


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "run.jsonl"
    return write_record(path, *engine_events(SPEC))


def dicts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def peak(items: list[dict[str, Any]], start: str, finish: str) -> int:
    """The most intervals open at once (a finish at the same instant closes first)."""
    now = best = 0
    for e in items:
        if e["kind"] == finish:
            now -= 1
        elif e["kind"] == start:
            now += 1
            best = max(best, now)
    return best


def test_series_end_where_the_health_report_ends(record: Path) -> None:
    run = collect(record)
    view = run_view(run)
    (domain,) = run.series.domains.values()
    idle = run.health.domains[0].idle
    last = domain.cumulative[-1]
    parts = dict(zip(series.IDLE_PARTS, last, strict=False))
    assert parts["cooldown"] / S == pytest.approx(idle.ready_work_waiting.cooldown_slot_s)
    assert parts["limit"] / S == pytest.approx(idle.ready_work_waiting.limit_slot_s)
    assert parts["horizon"] / S == pytest.approx(idle.no_ready_work.horizon_slot_s)
    assert view.series["rows_done"][-1] == run.health.totals.rows_completed
    assert view.series["rows_dropped"][-1] == len(SPEC.drop_rows)


def test_series_match_figures_computed_from_the_events(record: Path) -> None:
    items = dicts(record)
    view = run_view(collect(record))
    (d,) = view.domains
    rate_limited = sum(1 for e in items if e.get("outcome") == "rate_limited")
    assert rate_limited > 0 and sum(v or 0 for v in d.series["r429"]) == rate_limited
    assert d.peak_in_flight == peak(items, "attempt_started", "attempt_finished")
    assert d.peak_waiters == peak(items, "wait_started", "wait_finished")
    # mean in flight integrates to the time attempts spent on the wire (slot-seconds)
    on_wire: dict[tuple[int, int], int] = {}
    busy = 0
    for e in items:
        key = (e.get("request_id"), e.get("attempt"))
        if e["kind"] == "attempt_started":
            on_wire[key] = e["t_ns"]
        elif e["kind"] == "attempt_finished":
            busy += e["t_ns"] - on_wire.pop(key)
    widths = [b - a for a, b in zip(view.x, view.x[1:], strict=False)]
    integral = sum(m * w for m, w in zip(d.series["in_flight_mean"], widths, strict=False))
    assert integral == pytest.approx(busy / S, rel=1e-3)
    limits = [e["new"] for e in items if e["kind"] == "limit_changed"]
    assert min(v for v in d.series["limit_min"] if v is not None) == min(limits)


def test_bins_stay_bounded_and_exact_when_the_run_outgrows_them(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fine = run_view(collect(record))
    monkeypatch.setattr(series, "MAX_BINS", 16)
    coarse_run = collect(record)
    coarse = run_view(coarse_run)
    assert len(coarse.x) <= 17 < len(fine.x)
    assert coarse_run.series.width > series.START_WIDTH_NS
    (d_fine,), (d_coarse,) = fine.domains, coarse.domains
    assert d_coarse.peak_in_flight == d_fine.peak_in_flight  # extremes survive merging
    assert d_coarse.peak_waiters == d_fine.peak_waiters
    assert sum(v or 0 for v in d_coarse.series["r429"]) == sum(
        v or 0 for v in d_fine.series["r429"]
    )
    assert coarse.series["rows_done"][-1] == fine.series["rows_done"][-1]


def test_record_text_is_escaped_and_long_messages_are_cut(tmp_path: Path) -> None:
    spec = EngineSpec(rows=6, buffer_size=6, drop_rows=(2,))
    evil = "</script><script>alert(1)</script>\x1b[31m" + "x" * 5000
    items = []
    header, events = engine_events(spec)
    for event in events:
        if isinstance(event, RowDropped):
            event = event.model_copy(update={"message": evil})
        if isinstance(event, RunFinished):
            event = event.model_copy(update={"message": evil})
        items.append(event)
    path = write_record(tmp_path / "run.jsonl", header, items)
    out = tmp_path / "report.html"
    build_report(path, out, trace=False)
    html = out.read_text()
    assert "<script>alert(1)" not in html and "\x1b" not in html
    assert html.count("<script") == 3  # our data block, uPlot, our script
    assert f"cut: {len(evil):,} characters" in html


def test_comparison_marks_the_run_with_fewer_429s(tmp_path: Path) -> None:
    with_429 = EngineSpec(rows=30, rate_limit_every=5)
    without = EngineSpec(rows=30)
    a = write_record(tmp_path / "a.jsonl", *engine_events(with_429))
    b = write_record(tmp_path / "b.jsonl", *engine_events(without))
    ra, rb = collect(a), collect(b)
    rows = {r.label: r for r in comparison_rows(ra, rb, run_view(ra), run_view(rb))}
    assert rows["429 answers"].a > 0 and rows["429 answers"].winner() == "B"
    assert rows["rows completed"].winner() is None  # a tie marks neither side
    assert rows[f"{DOMAIN}: idle, ready work waiting"].winner() == "B"
    assert rows["requests/s"].winner() is None  # not judged
    out = tmp_path / "cmp.html"
    result = build_comparison(a, b, out)
    assert result.bytes_written == out.stat().st_size and 'class="better"' in out.read_text()


def test_cli_report_writes_beside_the_record_and_says_what_next(record: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(record)])
    assert result.exit_code == 0, result.output
    out = record.with_suffix(".report.html")
    assert out.exists() and f"{out}  ({out.stat().st_size:,} bytes" in result.output
    assert "trace embedded" in result.output
    assert out.resolve().as_uri() in result.output and "open " in result.output


def test_cli_report_compares_two_records(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "ab.html"
    result = CliRunner().invoke(cli, ["report", str(record), str(record), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "comparison" in result.output and 'table class="compare"' in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "missing.jsonl"], r"^RecordError: missing.jsonl: cannot open"),
        (["report", "a.jsonl", "b.jsonl", "c.jsonl"], r"give one record, or two"),
    ],
)
def test_cli_report_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert re.search(message, result.output, re.MULTILINE), result.output


def test_cli_report_without_trace(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(record), "--no-trace", "-o", str(out)])
    assert result.exit_code == 0 and "no trace" in result.output
    assert 'id="ddscope-trace"' not in out.read_text()


def test_a_report_leaves_no_partial_file(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    build_report(record, out)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_quota_headers_are_plotted_when_the_record_has_them(record: Path, tmp_path: Path) -> None:
    """Attempts that carry the provider's x-ratelimit-remaining-* (newer records): the lowest
    value per bin is plotted; records without them get no quota plot."""
    lines = record.read_text().splitlines()
    remaining = 1000
    for i, line in enumerate(lines):
        data = json.loads(line)
        if data.get("kind") == "attempt_finished":
            remaining -= 1
            data["ratelimit_remaining_requests"] = remaining
            data["ratelimit_remaining_tokens"] = remaining * 100
            lines[i] = json.dumps(data)
    with_quota = tmp_path / "quota.jsonl"
    with_quota.write_text("\n".join(lines) + "\n")
    (d,) = run_view(collect(with_quota)).domains
    values = [v for v in d.series["quota_requests"] if v is not None]
    assert min(values) == remaining and values == sorted(values, reverse=True)
    assert min(v for v in d.series["quota_tokens"] if v is not None) == remaining * 100
    assert "quota_requests" not in run_view(collect(record)).domains[0].series


def test_a_startup_ramp_is_plotted_from_its_first_limit(tmp_path: Path) -> None:
    """The header says 4 slots, but a ramp starts at 1: the first limit_changed's ``old`` is
    the limit until then (as in the health analyzer), also for bins already sampled."""
    header = engine_events(EngineSpec(rows=1, buffer_size=1, max_parallel=4))[0]
    items = [
        RunStarted(t_ns=0, num_records=1, row_groups=1),
        LimitChanged(t_ns=int(1 * S), domain=DOMAIN, old=1, new=2, reason="ramp"),
        LimitChanged(t_ns=int(2 * S), domain=DOMAIN, old=2, new=4, reason="ramp_end"),
        RunFinished(t_ns=int(3 * S), outcome="complete", rows_completed=1, rows_dropped=0),
    ]
    view = run_view(collect(write_record(tmp_path / "ramp.jsonl", header, items)))
    (d,) = view.domains
    widths = [b - a for a, b in zip(view.x, view.x[1:], strict=False)]
    integral = sum(m * w for m, w in zip(d.series["limit_mean"], widths, strict=False))
    assert integral == pytest.approx(1 + 2 + 4, rel=1e-6)  # limit-seconds over the 3 s
    assert d.series["limit_min"][0] == 1 and d.series["limit_mean"][-1] == 4


def test_a_cut_off_record_still_gives_a_report(record: Path, tmp_path: Path) -> None:
    """A killed run: the last line is half written. The report says so and is still made."""
    cut = cut_record(record, tmp_path / "cut.jsonl")
    out = tmp_path / "cut.html"
    result = build_report(cut, out)
    assert any("truncated last line" in w for w in result.warnings)
    html = out.read_text()
    assert "no_run_finished" in html and "truncated last line" in html
    assert result.trace_embedded


def test_runs_of_different_sizes_are_compared_by_share(tmp_path: Path) -> None:
    small, large = EngineSpec(rows=10), EngineSpec(rows=30, drop_rows=(3,))
    a = write_record(tmp_path / "a.jsonl", *engine_events(small))
    b = write_record(tmp_path / "b.jsonl", *engine_events(large))
    ra, rb = collect(a), collect(b)
    rows = {r.label: r for r in comparison_rows(ra, rb, run_view(ra), run_view(rb))}
    # B completed more rows (29 > 10) but a smaller share of its own (29/30 < 10/10)
    assert rows["rows completed"].cells() == ("10/10", "29/30")
    assert rows["rows completed"].winner() == "A"
    assert rows["rows dropped"].winner() == "A"
