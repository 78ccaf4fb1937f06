"""Turns the analyzer's end state into the report's sections (figures only; judging is in
:mod:`health_findings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddscope.events import split_domain
from ddscope.exporters.health.analyzer import HealthAnalyzer
from ddscope.exporters.health.domain import SNAPSHOT_FIELDS, DomainTracker
from ddscope.exporters.health.findings import judge
from ddscope.exporters.health.report import (
    VERDICTS,
    BreakerEvent,
    Cooldowns,
    DomainNow,
    DomainReport,
    DropExample,
    EngineDomainHealth,
    EngineHealth,
    FloorStretch,
    GapDomain,
    HealthReport,
    IdleAttribution,
    LimitSummary,
    NoProgress,
    NoWorkIdle,
    QuotaSummary,
    RecordInfo,
    SalvageRound,
    SchedulerReport,
    ShutdownInfo,
    Thresholds,
    Totals,
    WaitingIdle,
    verdict_rank,
)

S = 1e9  # ns per second
MAJORITY = 0.5  # a cause explains a no-progress interval when it held for half of it


def build_report(
    a: HealthAnalyzer, path: Path, at_s: float | None, thresholds: Thresholds, warnings: list[str]
) -> HealthReport:
    totals = _totals(a)
    domains = [_domain(a, tracker) for tracker in a.trackers.values()]
    scheduler = _scheduler(a)
    engine = _engine_health(a.tally.latest_health)
    findings = judge(a.header, totals, domains, scheduler, thresholds)
    worst = max((verdict_rank(f.level) for f in findings), default=0)
    verdict = VERDICTS[worst]
    header = a.header
    return HealthReport(
        record=RecordInfo(
            path=str(path),
            run_id=header.run_id,
            pipeline_name=header.pipeline_name,
            ddscope_version=header.ddscope_version,
            events=a.events,
            warnings=warnings,
        ),
        as_of_s=at_s,
        verdict=verdict,
        reasons=[f.code for f in findings if f.level == verdict],
        findings=findings,
        totals=totals,
        domains=domains,
        scheduler=scheduler,
        engine_health=engine,
        thresholds=thresholds,
    )


def window_s(a: HealthAnalyzer) -> float:
    return 0.0 if a.t_start is None else max(0, a.end_ns - a.t_start) / S


def _totals(a: HealthAnalyzer) -> Totals:
    fin = a.finished or {}
    duration = window_s(a)
    completed = int(fin.get("rows_completed", a.rows_written))
    requests = sum(t.attempts_total for t in a.trackers.values())
    examples = [
        DropExample(reason, a.tally.drops[reason], ex["rows"], ex["column"], ex["message"])
        for reason, ex in a.tally.drop_examples.items()
    ]
    return Totals(
        state=a.state,
        outcome=fin.get("outcome"),
        reason=fin.get("reason"),
        message=fin.get("message"),
        duration_s=duration,
        num_records=a.num_records,
        rows_completed=completed,
        rows_dropped=int(fin.get("rows_dropped", sum(a.tally.drops.values()))),
        drops_by_reason=dict(a.tally.drops),
        drop_examples=examples,
        rows_per_s=completed / duration if duration > 0 else 0.0,
        requests=requests,
        requests_per_s=requests / duration if duration > 0 else 0.0,
        row_groups_total=a.row_groups_total,
        row_groups_finished=a.row_groups_finished,
        resumes=a.resumes,
        stopped_s=a.stopped_ns / S,
    )


def _domain(a: HealthAnalyzer, tr: DomainTracker) -> DomainReport:
    info = next((d for d in a.header.domains if d.domain == tr.domain), None)
    provider, model = (info.provider, info.model) if info else split_domain(tr.domain)
    end = a.end_ns
    return DomainReport(
        domain=tr.domain,
        provider=provider,
        model=model,
        max_parallel_requests=tr.cap,
        attempts=dict(tr.attempts),
        attempts_total=tr.attempts_total,
        share_429=tr.rate_limited / tr.attempts_total if tr.attempts_total else 0.0,
        tokens_in=tr.tokens_in,
        tokens_out=tr.tokens_out,
        limit=_limit(tr),
        timeline=tr.bins.points(end),
        time_at_floor_s=tr.floor_ns / S,
        longest_floor=_floor(tr),
        cooldowns=Cooldowns(
            count=tr.cooldown_count,
            total_s=tr.cooldown_ns / S,
            longest_s=tr.cooldown_longest_ns / S,
            active=tr.cooldown,
        ),
        wait=tr.wait_hist.quantiles(),
        attempt_ok=tr.attempt_hist.quantiles(),
        waits_by_outcome=dict(tr.waits),
        admission_timeouts=tr.waits.get("timeout", 0),
        breaker_openings=tr.breaker_openings,
        breaker_events=[BreakerEvent(**e) for e in tr.breaker_events],  # type: ignore[arg-type]
        idle=_idle(tr, window_s(a)),
        now=DomainNow(
            limit=tr.limit,
            in_flight=tr.in_flight,
            waits_open=tr.waits_open,
            cooldown_active=tr.cooldown,
            breaker_open=tr.breaker_open,
        ),
        quota=QuotaSummary(pauses=tr.quota_pauses, refused=tr.quota_refused),
    )


def _limit(tr: DomainTracker) -> LimitSummary:
    return LimitSummary(tr.initial_limit, tr.limit_min, tr.limit_max, tr.limit, tr.limit_changes)


def _floor(tr: DomainTracker) -> FloorStretch | None:
    if tr.worst_floor is None:
        return None
    start, length, attempts, limited = tr.worst_floor
    return FloorStretch(
        start_s=start / S,
        duration_s=length / S,
        attempts=attempts,
        rate_limited=limited,
        share_429=limited / attempts if attempts else 0.0,
        open=tr.floor_since is not None and tr.floor_since == start,
    )


def _idle(tr: DomainTracker, window: float) -> IdleAttribution:
    parts = {k: v / S for k, v in tr.idle_parts.items()}
    waiting = WaitingIdle(
        total_slot_s=sum(parts[k] for k in ("cooldown", "breaker", "shutdown", "limit"))
        + parts["waiters_ahead"],
        cooldown_slot_s=parts["cooldown"],
        breaker_slot_s=parts["breaker"],
        shutdown_slot_s=parts["shutdown"],
        limit_slot_s=parts["limit"],
        waiters_ahead_slot_s=parts["waiters_ahead"],
    )
    no_work = NoWorkIdle(
        total_slot_s=parts["dependencies"] + parts["awaiting_salvage"] + parts["horizon"],
        dependencies_slot_s=parts["dependencies"],
        awaiting_salvage_slot_s=parts["awaiting_salvage"],
        horizon_slot_s=parts["horizon"],
    )
    capacity = tr.cap * window
    busy = tr.busy_slot_ns / S
    return IdleAttribution(
        capacity_slot_s=capacity,
        busy_slot_s=busy,
        idle_slot_s=waiting.total_slot_s + no_work.total_slot_s,
        utilization=busy / capacity if capacity > 0 else 0.0,
        ready_work_waiting=waiting,
        no_ready_work=no_work,
    )


def _scheduler(a: HealthAnalyzer) -> SchedulerReport:
    rounds = [
        SalvageRound(
            round=r["round"],
            tasks=r["tasks"],
            recovered=r.get("recovered"),
            still_deferred=r.get("still_deferred"),
            start_s=r["start"] / S,
            end_s=r["end"] / S if "end" in r else None,
        )
        for r in sorted(a.tally.salvage.values(), key=lambda r: r["round"])
    ]
    stop, tally = a.tally.shutdown, a.tally
    return SchedulerReport(
        longest_no_progress=_no_progress(a.longest_gap),
        max_silence_s=a.max_silence_ns / S,
        salvage_rounds=rounds,
        tasks_deferred=dict(tally.deferred_by_kind),
        leases_by_outcome=dict(a.lease_outcomes),
        lease=a.lease_hist.quantiles(),
        peak_queue_depth=tally.peaks["queue_depth"],
        # the engine's health events, or the events themselves when those saw more (a run
        # shorter than the health interval has one health event, taken after the end)
        peak_leases=max(tally.peaks["leases"], a.peak_leases),
        peak_row_groups_in_flight=max(tally.peaks["row_groups_in_flight"], a.peak_row_groups),
        health_events=tally.health_count,
        shutdown=None
        if stop is None
        else ShutdownInfo(stop["t_ns"] / S, stop["reason"], stop["message"], stop.get("domain")),
    )


def _no_progress(gap: dict[str, Any] | None) -> NoProgress | None:
    if gap is None:
        return None
    length = gap["end"] - gap["start"]
    domains = [_gap_domain(name, delta, length) for name, delta in gap["deltas"].items()]
    cause, explanation = gap_cause(domains)
    return NoProgress(
        start_s=gap["start"] / S,
        end_s=gap["end"] / S,
        duration_s=length / S,
        open=gap["open"],
        cause=cause,
        explanation=explanation,
        domains=domains,
        engine_health=_engine_health(gap["health"]),
    )


def _gap_domain(name: str, delta: tuple[int, ...], length: int) -> GapDomain:
    d = dict(zip(SNAPSHOT_FIELDS, delta, strict=True))
    share = (lambda v: v / length) if length > 0 else (lambda v: 0.0)
    return GapDomain(
        domain=name,
        cooldown_share=share(d["cooldown_ns"]),
        breaker_share=share(d["breaker_ns"]),
        on_the_wire_share=share(d["inflight_time_ns"]),
        ready_waiting_share=share(d["waiting_time_ns"]),
        awaiting_salvage_share=share(d["salvage_time_ns"]),
        mean_in_flight=share(d["busy_slot_ns"]),
        attempts=d["attempts_total"],
        rate_limited=d["rate_limited"],
    )


def gap_cause(domains: list[GapDomain]) -> tuple[str, str]:
    """The first cause (in this order) that held for most of the interval, and its sentence."""
    checks = (
        ("breaker_open", "breaker_share", "{d}: circuit breaker open for {s:.0%} of it"),
        (
            "cooldown",
            "cooldown_share",
            "{d} was in a 429 cooldown for {s:.0%} of it ({a}, {r} rate-limited)",
        ),
        (
            "on_the_wire",
            "on_the_wire_share",
            "requests to {d} were on the wire for {s:.0%} of it (mean {m:.1f} in flight) "
            "and none completed a task: the endpoint answered slowly or not at all",
        ),
        (
            "admission",
            "ready_waiting_share",
            "ready work for {d} waited for request admission {s:.0%} of it",
        ),
        (
            "awaiting_salvage",
            "awaiting_salvage_share",
            "deferred tasks for {d} waited for a salvage round {s:.0%} of it",
        ),
    )
    for cause, attr, sentence in checks:
        best = max(domains, key=lambda g: getattr(g, attr), default=None)
        if best is not None and getattr(best, attr) >= MAJORITY:
            share = getattr(best, attr)
            text = sentence.format(
                d=best.domain,
                s=share,
                a=f"{best.attempts} attempt{'' if best.attempts == 1 else 's'}",
                r=best.rate_limited,
                m=best.mean_in_flight,
            )
            return cause, text
    return "no_ready_work", "no model work was ready (inputs not done, or no row group in flight)"


def _engine_health(data: dict[str, Any] | None) -> EngineHealth | None:
    if data is None:
        return None
    return EngineHealth(
        t_s=data["t_ns"] / S,
        queue_depth=data.get("queue_depth", 0),
        leases=data.get("leases", 0),
        in_flight=data.get("in_flight", 0),
        deferred=data.get("deferred", 0),
        rows_completed=data.get("rows_completed", 0),
        rows_dropped=data.get("rows_dropped", 0),
        row_groups_in_flight=data.get("row_groups_in_flight", 0),
        note=data.get("note"),
        domains=[
            EngineDomainHealth(
                domain=d["domain"],
                limit=d.get("limit", 0),
                in_flight=d.get("in_flight", 0),
                waiters=d.get("waiters", 0),
                cooldown_remaining_s=d.get("cooldown_remaining_s", 0.0),
                recent_429_share=d.get("recent_429_share", 0.0),
                breaker=d.get("breaker", "closed"),
                at_floor=d.get("at_floor", False),
            )
            for d in data.get("domains", [])
        ],
    )
