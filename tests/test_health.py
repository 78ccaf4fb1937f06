"""The health analyzer on hand-built and engine-made records: figures, idle split, verdict rules,
``--at``, the JSON schema's key set, and the bounded percentile structure."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing
from pathlib import Path

import pytest
from engine_records import EngineSpec, write_engine_record

from ddscope import events as ev
from ddscope.errors import RecordError
from ddscope.exporters.health import analyze
from ddscope.exporters.health.report import HEALTH_SCHEMA, HealthReport, Thresholds
from ddscope.exporters.health.stats import RELATIVE_ERROR, LogHistogram, TimeBins

S = 1_000_000_000
DOMAIN = "mock/mock-model"


def header(cap: int = 2, rows: int = 1, buffer: int = 1, columns: bool = True) -> ev.RunHeader:
    cols = [
        ev.ColumnInfo(name="topic", type="sampler"),
        ev.ColumnInfo(name="a", type="llm_text", domain=DOMAIN, depends_on=["topic"]),
        ev.ColumnInfo(name="mid", type="expression", depends_on=["a"]),
        ev.ColumnInfo(name="b", type="llm_text", domain=DOMAIN, depends_on=["mid"]),
    ]
    return ev.RunHeader(
        ddscope_version="test",
        run_id="hand",
        started_at_unix_ns=0,
        num_records=rows,
        buffer_size=buffer,
        columns=cols if columns else [],
        domains=[
            ev.DomainInfo(domain=DOMAIN, provider="mock", model="mock-model",
                          max_parallel_requests=cap)
        ],
    )  # fmt: skip


def write(path: Path, head: ev.RunHeader, items: list[ev.Event]) -> Path:
    lines = [head.model_dump_json(by_alias=True, exclude_none=True)]
    lines += [e.model_dump_json(exclude_none=True) for e in items]
    path.write_text("\n".join(lines) + "\n")
    return path


def task(
    column: str,
    row: int,
    lease: int,
    start: int,
    end: int,
    outcome: str = "ok",
    wait_until: int | None = None,
) -> list[ev.Event]:
    """A lease with one attempt (after an optional admission wait) that ends with ``outcome``."""
    out: list[ev.Event] = [
        ev.LeaseStarted(
            t_ns=start,
            lease_id=lease,
            task_id=f"{column}:{row}",
            row_group=0,
            column=column,
            row=row,
        )
    ]
    begin = start
    if wait_until is not None:
        out += [
            ev.WaitStarted(
                t_ns=start,
                request_id=lease,
                attempt=1,
                task_id=f"{column}:{row}",
                lease_id=lease,
                domain=DOMAIN,
            ),
            ev.WaitFinished(
                t_ns=wait_until,
                request_id=lease,
                attempt=1,
                task_id=f"{column}:{row}",
                domain=DOMAIN,
                outcome="admitted",
            ),
        ]
        begin = wait_until
    result = "ok" if outcome == "ok" else "server_error"
    out += [
        ev.AttemptStarted(
            t_ns=begin,
            request_id=lease,
            attempt=1,
            task_id=f"{column}:{row}",
            lease_id=lease,
            domain=DOMAIN,
        ),
        ev.AttemptFinished(
            t_ns=end,
            request_id=lease,
            attempt=1,
            task_id=f"{column}:{row}",
            domain=DOMAIN,
            outcome=result,
            input_tokens=3,
            output_tokens=5,
        ),
        ev.LeaseFinished(
            t_ns=end,
            lease_id=lease,
            task_id=f"{column}:{row}",
            row_group=0,
            column=column,
            outcome=outcome,
        ),
    ]
    return out  # fmt: skip


def one_row_with_cooldown() -> list[ev.Event]:
    """Row 0: a runs 0–1 s; b is ready at 1 s but waits out a cooldown until 3 s, runs 3–4 s."""
    items = [
        ev.RunStarted(t_ns=0, num_records=1, row_groups=1),
        ev.RowGroupStarted(t_ns=0, row_group=0, first_row=0, rows=1),
        *task("a", 0, 1, 0, 1 * S),
        ev.CooldownStarted(t_ns=1 * S, cooldown_id=9, domain=DOMAIN, duration_s=2.0),
        ev.CooldownFinished(t_ns=3 * S, cooldown_id=9, domain=DOMAIN),
        *task("b", 0, 2, 1 * S, 4 * S, wait_until=3 * S),
        ev.RowGroupFinished(t_ns=4 * S, row_group=0, outcome="checkpointed", rows_completed=1,
                            rows_dropped=0),
        ev.RunFinished(t_ns=4 * S, outcome="complete", rows_completed=1, rows_dropped=0),
    ]  # fmt: skip
    return sorted(items, key=lambda e: e.t_ns)  # stable: same-time events keep this order


def test_idle_slot_time_is_split_exactly_by_cause(tmp_path):
    report = analyze(write(tmp_path / "r.jsonl", header(cap=2), one_row_with_cooldown()))
    idle = report.domains[0].idle
    # capacity 2 × 4 s = 8; busy 2 (a, b); idle 6:
    # 0–1 s one idle slot, b not ready (its input a is running) → dependencies 1
    # 1–3 s b ready but in cooldown → cooldown 1×2; the other slot has no work → horizon 2
    # 3–4 s b on the wire, nothing else left → horizon 1
    assert (idle.capacity_slot_s, idle.busy_slot_s, idle.idle_slot_s) == (8.0, 2.0, 6.0)
    assert idle.ready_work_waiting.cooldown_slot_s == 2.0
    assert idle.ready_work_waiting.total_slot_s == 2.0
    assert idle.no_ready_work.dependencies_slot_s == 1.0
    assert idle.no_ready_work.horizon_slot_s == 3.0
    assert idle.utilization == 0.25


def test_longest_no_progress_names_the_cooldown(tmp_path):
    report = analyze(write(tmp_path / "r.jsonl", header(), one_row_with_cooldown()))
    gap = report.scheduler.longest_no_progress
    assert gap is not None and (gap.start_s, gap.end_s) == (1.0, 4.0)
    assert gap.cause == "cooldown" and not gap.open
    assert gap.domains[0].cooldown_share == pytest.approx(2 / 3)
    assert "cooldown" in gap.explanation
    assert "no_progress" not in {f.code for f in report.findings}  # 3 s: no stall by default
    stalled = analyze(tmp_path / "r.jsonl", thresholds=Thresholds(stall_s=2.5))
    # ... at 2.5 s it would be a stall, but the endpoint was cooling down, recovered, and the
    # run completed with its breaker closed: a transient outage the engine sat out (issue 11)
    assert stalled.verdict == "degraded" and "transient_outage" in stalled.reasons
    assert "no_progress" not in {f.code for f in stalled.findings}


def test_figures_of_a_domain(tmp_path):
    report = analyze(write(tmp_path / "r.jsonl", header(), one_row_with_cooldown()))
    d = report.domains[0]
    assert d.attempts == {"ok": 2} and d.share_429 == 0.0
    assert (d.tokens_in, d.tokens_out) == (6, 10)
    assert (d.cooldowns.count, d.cooldowns.total_s, d.cooldowns.longest_s) == (1, 2.0, 2.0)
    assert d.wait.count == 1 and d.wait.max == 2.0
    assert d.wait.p50 == pytest.approx(2.0, rel=RELATIVE_ERROR)
    assert d.attempt_ok.count == 2 and d.attempt_ok.max == 1.0
    assert report.totals.rows_completed == 1 and report.totals.duration_s == 4.0
    assert report.totals.requests_per_s == 0.5


def test_a_deferred_cell_idles_its_slot_as_awaiting_salvage(tmp_path):
    items = [
        ev.RunStarted(t_ns=0, num_records=1, row_groups=1),
        ev.RowGroupStarted(t_ns=0, row_group=0, first_row=0, rows=1),
        *task("a", 0, 1, 0, 1 * S, outcome="deferred"),  # a 5xx at 1 s: deferred
        ev.SalvageStarted(t_ns=2 * S, round=1, tasks=1),
        *task("a", 0, 2, 2 * S, 3 * S),
        ev.SalvageFinished(t_ns=3 * S, round=1, recovered=1, still_deferred=0),
        *task("b", 0, 3, 3 * S, 4 * S),
        ev.RowGroupFinished(t_ns=4 * S, row_group=0, outcome="checkpointed", rows_completed=1,
                            rows_dropped=0),
        ev.RunFinished(t_ns=4 * S, outcome="complete", rows_completed=1, rows_dropped=0),
    ]  # fmt: skip
    report = analyze(write(tmp_path / "r.jsonl", header(cap=1), items))
    idle = report.domains[0].idle
    # 1–2 s the only slot is idle: a waits for salvage (b, blocked on a, does not count twice)
    assert idle.idle_slot_s == 1.0 and idle.no_ready_work.awaiting_salvage_slot_s == 1.0
    assert report.scheduler.salvage_rounds[0].recovered == 1
    assert report.domains[0].attempts == {"server_error": 1, "ok": 2}


def test_without_columns_open_waits_are_the_readiness_signal(tmp_path):
    report = analyze(write(tmp_path / "r.jsonl", header(columns=False), one_row_with_cooldown()))
    idle = report.domains[0].idle
    assert idle.ready_work_waiting.cooldown_slot_s == 2.0  # the wait 1–3 s, in cooldown
    assert idle.idle_slot_s == 6.0


def test_a_record_without_run_finished_is_a_crash(tmp_path):
    items = one_row_with_cooldown()[:-2]
    report = analyze(write(tmp_path / "r.jsonl", header(), items))
    assert report.verdict == "failed" and "no_run_finished" in report.reasons
    assert report.totals.state == "crashed" and report.totals.duration_s == 4.0


def test_at_reports_the_run_as_of_that_moment(tmp_path):
    path = write(tmp_path / "r.jsonl", header(), one_row_with_cooldown())
    report = analyze(path, at_s=2.5)
    assert report.totals.state == "running" and report.verdict != "failed"
    assert report.as_of_s == 2.5 and report.totals.duration_s == 2.5
    d = report.domains[0]
    assert d.cooldowns.active and d.cooldowns.total_s == 1.5 and d.now.waits_open == 1
    gap = report.scheduler.longest_no_progress
    assert gap is not None and gap.open and (gap.start_s, gap.end_s) == (1.0, 2.5)
    assert d.idle.idle_slot_s == pytest.approx(2 * 2.5 - 1.0)  # a ran 0–1 s


def test_at_uses_the_engines_latest_health_event_before_it(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_engine_record(path, EngineSpec(rows=40, buffer_size=10, health_interval_s=0.25))
    full = analyze(path)
    health_times = [h for h in _health_times(path)]
    at = (health_times[1] + health_times[2]) / 2
    report = analyze(path, at_s=at)
    assert report.engine_health is not None and report.engine_health.t_s == health_times[1]
    assert report.record.events == full.record.events  # all read, later ones ignored
    assert report.totals.requests < full.totals.requests


def _health_times(path: Path) -> list[float]:
    out = []
    for line in path.read_text().splitlines()[1:]:
        data = json.loads(line)
        if data["kind"] == "health":
            out.append(data["t_ns"] / S)
    return out


def test_engine_made_429s_make_a_degraded_run_with_its_share(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_engine_record(path, EngineSpec(rows=60, rate_limit_every=7))
    report = analyze(path)
    attempts = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    finished = [a for a in attempts if a["kind"] == "attempt_finished"]
    limited = sum(a["outcome"] == "rate_limited" for a in finished)
    assert report.verdict == "degraded" and "rate_limited" in report.reasons
    assert report.domains[0].share_429 == pytest.approx(limited / len(finished))
    assert report.domains[0].limit.min < report.domains[0].limit.initial


def test_engine_made_drops_make_a_failed_run_naming_the_rows(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_engine_record(path, EngineSpec(rows=30, drop_rows=(4, 11), defer_every=10))
    report = analyze(path)
    assert report.verdict == "failed" and report.reasons == ["rows_dropped"]
    drop = next(f for f in report.findings if f.code == "rows_dropped")
    assert "rows 4, 11" in drop.message and "row 4" in drop.recommendation
    assert report.totals.drops_by_reason == {"client_error": 2}
    rounds = report.scheduler.salvage_rounds
    assert len(rounds) == 1 and rounds[0].recovered == rounds[0].tasks > 0
    assert "tasks_deferred" in {f.code for f in report.findings}


def test_engine_made_idle_matches_an_independent_computation(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_engine_record(path, EngineSpec(rows=50, max_parallel=3, rate_limit_every=9))
    report = analyze(path)
    rows = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    end = rows[-1]["t_ns"]
    started = {(r["request_id"], r["attempt"]): r["t_ns"] for r in rows
               if r["kind"] == "attempt_started"}  # fmt: skip
    busy = sum(r["t_ns"] - started[(r["request_id"], r["attempt"])] for r in rows
               if r["kind"] == "attempt_finished")  # fmt: skip
    idle = (3 * end - busy) / S
    d = report.domains[0].idle
    parts = d.ready_work_waiting.total_slot_s + d.no_ready_work.total_slot_s
    assert d.idle_slot_s == pytest.approx(idle, rel=0.01)
    assert parts == pytest.approx(idle, rel=0.01)


def saturated_at_floor(breaker: bool) -> list[ev.Event]:
    """Limit 2 → 1 at 0 s, then 24 s of 429s (the saturated_floor_s default is 20 s) at
    concurrency 1 (one attempt a second)."""
    items: list[ev.Event] = [
        ev.RunStarted(t_ns=0, num_records=1, row_groups=1),
        ev.RowGroupStarted(t_ns=0, row_group=0, first_row=0, rows=1),
        ev.LimitChanged(t_ns=0, domain=DOMAIN, old=2, new=1, reason="decrease"),
    ]
    for i in range(24):
        items += [
            ev.AttemptStarted(t_ns=i * S, request_id=1, attempt=i + 1, task_id="a:0",
                              lease_id=1, domain=DOMAIN),
            ev.AttemptFinished(t_ns=i * S + S // 2, request_id=1, attempt=i + 1, task_id="a:0",
                               domain=DOMAIN, outcome="rate_limited", status_code=429),
        ]  # fmt: skip
    if breaker:
        items.append(ev.BreakerChanged(t_ns=24 * S, domain=DOMAIN, state="open",
                                       reason="consecutive_429", consecutive_429=8,
                                       share_429=1.0, time_at_floor_s=24.0))  # fmt: skip
    items.append(ev.RunFinished(t_ns=24 * S, outcome="complete", rows_completed=0,
                                rows_dropped=0))  # fmt: skip
    return items


@pytest.mark.parametrize("breaker", [False, True])
def test_a_domain_refusing_at_the_floor_is_saturated(tmp_path, breaker):
    report = analyze(write(tmp_path / "r.jsonl", header(cap=2), saturated_at_floor(breaker)))
    assert report.verdict == "saturated"
    code = "breaker_opened" if breaker else "sustained_429_at_floor"
    assert report.reasons == [code]
    finding = next(f for f in report.findings if f.code == code)
    assert "refused 100% of requests for 24 s at concurrency 1" in finding.recommendation
    d = report.domains[0]
    assert d.time_at_floor_s == 24.0 and d.longest_floor is not None
    assert d.longest_floor.share_429 == 1.0 and d.longest_floor.open


def test_corrupt_line_is_an_error_unless_lenient(tmp_path):
    path = write(tmp_path / "r.jsonl", header(), one_row_with_cooldown())
    lines = path.read_text().splitlines()
    lines.insert(3, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"r\.jsonl:4:"):
        analyze(path)
    report = analyze(path, lenient=True)
    assert any(":4:" in w for w in report.record.warnings)
    assert report.totals.rows_completed == 1


def test_unknown_domain_is_reported_not_fatal(tmp_path):
    items = one_row_with_cooldown()
    items.insert(2, ev.CooldownStarted(t_ns=0, cooldown_id=1, domain="other/x", duration_s=1))
    report = analyze(write(tmp_path / "r.jsonl", header(), items))
    assert any("other/x" in w for w in report.record.warnings)
    assert {d.domain for d in report.domains} == {DOMAIN, "other/x"}


# -- the JSON document ---------------------------------------------------------------------

# Every key path of ddscope.health/1 ("[]" = list items; maps keyed by outcome/reason are
# leaves). A key added is documented in the README; one renamed or removed bumps HEALTH_SCHEMA.
PINNED_KEYS = """
schema record record.path record.run_id record.pipeline_name record.ddscope_version
record.events record.warnings as_of_s verdict reasons findings findings[].code findings[].level
findings[].message findings[].recommendation findings[].domain totals totals.state totals.outcome
totals.reason totals.message totals.duration_s totals.num_records totals.rows_completed
totals.rows_dropped totals.drops_by_reason totals.drop_examples totals.drop_examples[].reason
totals.drop_examples[].count totals.drop_examples[].rows totals.drop_examples[].column
totals.drop_examples[].message totals.rows_per_s totals.requests totals.requests_per_s
totals.row_groups_total totals.row_groups_finished totals.resumes totals.stopped_s
domains domains[].domain domains[].provider
domains[].model domains[].max_parallel_requests domains[].attempts domains[].attempts_total
domains[].share_429 domains[].tokens_in domains[].tokens_out domains[].limit
domains[].limit.initial domains[].limit.min domains[].limit.max domains[].limit.final
domains[].limit.changes domains[].timeline domains[].timeline[].t_s domains[].timeline[].t_end_s
domains[].timeline[].limit_min domains[].timeline[].limit_max domains[].timeline[].limit_end
domains[].timeline[].attempts domains[].timeline[].rate_limited domains[].time_at_floor_s
domains[].longest_floor domains[].longest_floor.start_s domains[].longest_floor.duration_s
domains[].longest_floor.attempts domains[].longest_floor.rate_limited
domains[].longest_floor.share_429 domains[].longest_floor.open domains[].cooldowns
domains[].cooldowns.count domains[].cooldowns.total_s domains[].cooldowns.longest_s
domains[].cooldowns.active domains[].wait domains[].wait.count domains[].wait.p50
domains[].wait.p95 domains[].wait.max domains[].attempt_ok domains[].attempt_ok.count
domains[].attempt_ok.p50 domains[].attempt_ok.p95 domains[].attempt_ok.max
domains[].waits_by_outcome domains[].admission_timeouts domains[].breaker_openings
domains[].breaker_events domains[].breaker_events[].t_s domains[].breaker_events[].state
domains[].breaker_events[].reason domains[].breaker_events[].consecutive_429
domains[].breaker_events[].share_429 domains[].breaker_events[].time_at_floor_s
domains[].breaker_events[].policy domains[].idle domains[].idle.capacity_slot_s
domains[].idle.busy_slot_s domains[].idle.idle_slot_s domains[].idle.utilization
domains[].idle.ready_work_waiting domains[].idle.ready_work_waiting.total_slot_s
domains[].idle.ready_work_waiting.cooldown_slot_s domains[].idle.ready_work_waiting.breaker_slot_s
domains[].idle.ready_work_waiting.shutdown_slot_s domains[].idle.ready_work_waiting.limit_slot_s
domains[].idle.ready_work_waiting.waiters_ahead_slot_s domains[].idle.no_ready_work
domains[].idle.no_ready_work.total_slot_s domains[].idle.no_ready_work.dependencies_slot_s
domains[].idle.no_ready_work.awaiting_salvage_slot_s domains[].idle.no_ready_work.horizon_slot_s
domains[].now domains[].now.limit domains[].now.in_flight domains[].now.waits_open
domains[].now.cooldown_active domains[].now.breaker_open domains[].quota domains[].quota.pauses
domains[].quota.refused scheduler
scheduler.longest_no_progress scheduler.longest_no_progress.start_s
scheduler.longest_no_progress.end_s scheduler.longest_no_progress.duration_s
scheduler.longest_no_progress.open scheduler.longest_no_progress.cause
scheduler.longest_no_progress.explanation scheduler.longest_no_progress.domains
scheduler.longest_no_progress.domains[].domain
scheduler.longest_no_progress.domains[].cooldown_share
scheduler.longest_no_progress.domains[].breaker_share
scheduler.longest_no_progress.domains[].on_the_wire_share
scheduler.longest_no_progress.domains[].ready_waiting_share
scheduler.longest_no_progress.domains[].awaiting_salvage_share
scheduler.longest_no_progress.domains[].mean_in_flight
scheduler.longest_no_progress.domains[].attempts
scheduler.longest_no_progress.domains[].rate_limited
scheduler.longest_no_progress.engine_health scheduler.longest_no_progress.engine_health.t_s
scheduler.longest_no_progress.engine_health.queue_depth
scheduler.longest_no_progress.engine_health.leases
scheduler.longest_no_progress.engine_health.in_flight
scheduler.longest_no_progress.engine_health.deferred
scheduler.longest_no_progress.engine_health.rows_completed
scheduler.longest_no_progress.engine_health.rows_dropped
scheduler.longest_no_progress.engine_health.row_groups_in_flight
scheduler.longest_no_progress.engine_health.note
scheduler.longest_no_progress.engine_health.domains
scheduler.longest_no_progress.engine_health.domains[].domain
scheduler.longest_no_progress.engine_health.domains[].limit
scheduler.longest_no_progress.engine_health.domains[].in_flight
scheduler.longest_no_progress.engine_health.domains[].waiters
scheduler.longest_no_progress.engine_health.domains[].cooldown_remaining_s
scheduler.longest_no_progress.engine_health.domains[].recent_429_share
scheduler.longest_no_progress.engine_health.domains[].breaker
scheduler.longest_no_progress.engine_health.domains[].at_floor scheduler.max_silence_s
scheduler.salvage_rounds
scheduler.salvage_rounds[].round scheduler.salvage_rounds[].tasks
scheduler.salvage_rounds[].recovered scheduler.salvage_rounds[].still_deferred
scheduler.salvage_rounds[].start_s scheduler.salvage_rounds[].end_s scheduler.tasks_deferred
scheduler.leases_by_outcome scheduler.lease scheduler.lease.count scheduler.lease.p50
scheduler.lease.p95 scheduler.lease.max scheduler.peak_queue_depth scheduler.peak_leases
scheduler.peak_row_groups_in_flight scheduler.health_events scheduler.shutdown
scheduler.shutdown.t_s scheduler.shutdown.reason scheduler.shutdown.message
scheduler.shutdown.domain engine_health engine_health.t_s engine_health.queue_depth
engine_health.leases engine_health.in_flight engine_health.deferred engine_health.rows_completed
engine_health.rows_dropped engine_health.row_groups_in_flight engine_health.note
engine_health.domains engine_health.domains[].domain engine_health.domains[].limit
engine_health.domains[].in_flight engine_health.domains[].waiters
engine_health.domains[].cooldown_remaining_s engine_health.domains[].recent_429_share
engine_health.domains[].breaker engine_health.domains[].at_floor thresholds thresholds.stall_s
thresholds.stall_fraction thresholds.stall_min_s thresholds.degraded_429_share
thresholds.saturated_floor_s thresholds.saturated_429_share thresholds.admission_bound_share
thresholds.starved_share percentile_relative_error
""".split()  # noqa: SIM905 - one block of text reads better than 230 quoted strings


def schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Key paths of a report dataclass, from its type hints (independent of any record)."""
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        keys.add(path)
        hint = typing.get_type_hints(cls)[f.name]
        for inner, suffix in _nested(hint):
            keys |= schema_keys(inner, f"{path}{suffix}.")
    return keys


def _nested(hint: object) -> list[tuple[type, str]]:
    if dataclasses.is_dataclass(hint):
        return [(hint, "")]  # type: ignore[list-item]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list:
        return [(t, "[]" + s) for t, s in _nested(args[0])]
    if origin in (typing.Union, types.UnionType):
        return [item for arg in args for item in _nested(arg)]
    return []


def test_the_json_key_set_is_pinned():
    assert sorted(schema_keys(HealthReport)) == sorted(PINNED_KEYS)


def test_a_real_document_uses_only_pinned_keys(tmp_path):
    path = tmp_path / "syn.jsonl"
    write_engine_record(path, EngineSpec(rows=30, rate_limit_every=5, defer_every=9))
    document = analyze(path).to_json()
    assert next(iter(document)) == "schema" and document["schema"] == HEALTH_SCHEMA
    json.dumps(document)  # plain JSON types only
    maps = {"attempts", "waits_by_outcome", "drops_by_reason", "tasks_deferred",
            "leases_by_outcome"}  # fmt: skip
    assert _paths(document, maps) <= set(PINNED_KEYS)


def _paths(value: object, maps: set[str], prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if key not in maps:
                out |= _paths(item, maps, path)
    elif isinstance(value, list):
        for item in value:
            out |= _paths(item, maps, prefix + "[]")
    return out


# -- bounded summaries -----------------------------------------------------------------------


def test_log_histogram_percentiles_are_within_the_stated_error():
    rng = random.Random(3)
    values = [int(rng.lognormvariate(17, 1.5)) for _ in range(20_000)] + [0] * 500
    hist = LogHistogram()
    for v in values:
        hist.add(v)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert hist.percentile_ns(q) == pytest.approx(exact, rel=RELATIVE_ERROR)
    assert hist.quantiles().max == max(values) / S
    assert hist.count == len(values) and len(hist.pending) == 0
    assert len(hist.counts) == len(LogHistogram().counts)  # memory does not grow with values


def test_time_bins_double_and_keep_totals_and_limit_extremes():
    bins = TimeBins(0, initial_limit=8, start_width_ns=S // 10)
    bins.limit(5 * S, 2)
    bins.limit(6 * S, 5)
    for i in range(1000):
        bins.attempt(i * S // 10, rate_limited=i % 4 == 0)  # 100 s of attempts
    points = bins.points(100 * S)
    assert len(points) <= 10 and bins.width > S // 10
    assert sum(p.attempts for p in points) == 1000
    assert sum(p.rate_limited for p in points) == 250
    assert points[0].limit_min == 2 and points[0].limit_max == 8
    assert points[-1].limit_min == points[-1].limit_max == points[-1].limit_end == 5
    assert points[-1].t_end_s == 100.0
