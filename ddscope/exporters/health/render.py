"""The health snapshot as text for people: one screen, tables, colour only when asked.

``render(report, color=...)`` returns the text; the CLI asks for colour only when stdout is a
terminal. Everything shown here is in the JSON document too (``HealthReport.to_json``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ddscope.exporters.health.report import (
    DomainReport,
    EngineHealth,
    Finding,
    HealthReport,
    SchedulerReport,
    Totals,
)
from ddscope.exporters.health.stats import Quantiles

# ANSI SGR colour codes per level (exporters do not import click: it stays under cli/)
COLOURS = {
    "healthy": 32,  # green
    "info": 34,  # blue
    "degraded": 33,  # yellow
    "stalled": 35,  # magenta
    "saturated": 31,  # red
    "failed": 31,
}


def _style(text: str, colour: int | None, bold: bool) -> str:
    codes = ([str(colour)] if colour else []) + (["1"] if bold else [])
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes else text


def render(report: HealthReport, *, color: bool = False) -> str:
    def paint(text: str, level: str, bold: bool = False) -> str:
        return _style(text, COLOURS.get(level), bold) if color else text

    as_of = f"  (as of {report.as_of_s:g} s)" if report.as_of_s is not None else ""
    lines = [
        f"ddscope health: run {report.record.run_id} ({report.record.pipeline_name}), "
        f"{report.record.path}",
        f"verdict: {paint(report.verdict.upper(), report.verdict, bold=True)}{as_of}",
    ]
    lines += _findings(report.findings, paint)
    lines += ["", *_totals(report.totals)]
    if report.domains:
        lines += ["", "domains", *_domain_table(report.domains)]
        for domain in report.domains:
            lines += _domain_details(domain)
    lines += ["", "scheduler", *_scheduler(report.scheduler)]
    if report.engine_health is not None:
        lines.append("  " + _engine_line("engine's last health event", report.engine_health))
    lines += [f"warning: {w}" for w in report.record.warnings]
    return "\n".join(lines)


def _findings(findings: Sequence[Finding], paint: Callable[[str, str], str]) -> list[str]:
    if not findings:
        return ["  nothing to report: every request and row went through"]
    out = []
    for f in findings:
        tag = paint(f"[{f.level}]", f.level)
        out.append(f"  {tag} {f.code}: {f.message}")
        out.append(f"      → {f.recommendation}")
    return out


def _totals(t: Totals) -> list[str]:
    if t.state == "finished":
        reason = f" ({t.reason})" if t.reason else ""
        run = f"run: {t.outcome}{reason} after {t.duration_s:.1f} s"
        if t.message:
            run += f": {t.message}"
    elif t.state == "running":
        run = f"run: still running at {t.duration_s:.1f} s"
    else:
        run = f"run: no run_finished; the record stops at {t.duration_s:.1f} s (crashed?)"
    drops = ", ".join(f"{r} ×{n}" for r, n in sorted(t.drops_by_reason.items()))
    rows = (
        f"rows: {t.rows_completed}/{t.num_records} completed, {t.rows_dropped} dropped"
        + (f" ({drops})" if drops else "")
        + f"; {t.rows_per_s:.2f} rows/s; {t.requests} requests, {t.requests_per_s:.1f}/s; "
        f"row groups {t.row_groups_finished}/{t.row_groups_total}"
    )
    return [run, rows]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def _q(q: Quantiles) -> str:
    if not q.count:
        return "-"
    return f"{q.p50:.3g}/{q.p95:.3g}/{q.max:.3g}"


def _domain_table(domains: Sequence[DomainReport]) -> list[str]:
    header = (
        "domain", "attempts", "429", "limit i/min/max/end", "floor s", "cooldown s",
        "wait s p50/p95/max", "adm.timeouts", "breaker",
    )  # fmt: skip
    rows = [
        (
            d.domain,
            str(d.attempts_total),
            f"{d.share_429:.0%}",
            f"{d.limit.initial}/{d.limit.min}/{d.limit.max}/{d.limit.final}",
            f"{d.time_at_floor_s:.1f}",
            f"{d.cooldowns.total_s:.1f} ({d.cooldowns.count}×, max {d.cooldowns.longest_s:.1f})",
            _q(d.wait),
            str(d.admission_timeouts),
            f"{d.breaker_openings} open" if d.breaker_openings else "-",
        )
        for d in domains
    ]
    return _table(header, rows)


def _domain_details(d: DomainReport) -> list[str]:
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(d.attempts.items(), key=lambda i: -i[1]))
    timeline = "  ".join(
        f"{p.t_s:.1f}s:{p.limit_min}-{p.limit_max}"
        + (f"({p.rate_limited}/{p.attempts} 429)" if p.rate_limited else "")
        for p in d.timeline
    )
    idle, cap = d.idle, d.idle.capacity_slot_s or 1.0
    w, n = idle.ready_work_waiting, idle.no_ready_work

    def pct(value: float) -> str:
        return f"{value / cap:.0%}"

    return [
        f"  {d.domain}: attempts {outcomes or 'none'}; ok attempt s p50/p95/max "
        f"{_q(d.attempt_ok)}; tokens in/out {d.tokens_in}/{d.tokens_out}",
        f"    limit over time (min-max per segment): {timeline}",
        f"    model slots: {idle.capacity_slot_s:.1f} slot-s, busy {pct(idle.busy_slot_s)}; "
        f"ready work waiting {pct(w.total_slot_s)} (cooldown {pct(w.cooldown_slot_s)}, "
        f"limit {pct(w.limit_slot_s)}, breaker {pct(w.breaker_slot_s)}, shutdown "
        f"{pct(w.shutdown_slot_s)}, hand-off {pct(w.waiters_ahead_slot_s)}); no ready work "
        f"{pct(n.total_slot_s)} (inputs not done {pct(n.dependencies_slot_s)}, no admitted "
        f"work {pct(n.horizon_slot_s)}, awaiting salvage {pct(n.awaiting_salvage_slot_s)})",
    ]


def _scheduler(s: SchedulerReport) -> list[str]:
    out = []
    gap = s.longest_no_progress
    if gap is not None:
        still = ", still open" if gap.open else ""
        out.append(
            f"  longest without a completed task: {gap.duration_s:.1f} s "
            f"({gap.start_s:.1f}–{gap.end_s:.1f} s{still}): {gap.explanation}"
        )
        if gap.engine_health is not None:
            out.append("    " + _engine_line("engine then", gap.engine_health))
    rounds = "; ".join(
        f"#{r.round}: {r.tasks} tasks, recovered {r.recovered}, still deferred {r.still_deferred}"
        for r in s.salvage_rounds
    )
    deferred = ", ".join(f"{k} ×{n}" for k, n in sorted(s.tasks_deferred.items()))
    out.append(
        f"  longest silence (no progress or health event): {s.max_silence_s:.1f} s; "
        f"salvage rounds: {rounds or 'none'}; deferred: {deferred or 'none'}"
    )
    out.append(
        f"  peak ready queue {s.peak_queue_depth}, peak leases {s.peak_leases}, peak row groups "
        f"{s.peak_row_groups_in_flight}; task lease s p50/p95/max {_q(s.lease)}; "
        f"{s.health_events} health events"
    )
    if s.shutdown is not None:
        out.append(f"  shutdown at {s.shutdown.t_s:.1f} s ({s.shutdown.reason})")
    return out


def _engine_line(label: str, h: EngineHealth) -> str:
    domains = "; ".join(
        f"{d.domain} limit {d.limit}, {d.in_flight} in flight, {d.waiters} waiting"
        + (f", cooldown {d.cooldown_remaining_s:.1f} s left" if d.cooldown_remaining_s else "")
        + (f", breaker {d.breaker}" if d.breaker != "closed" else "")
        for d in h.domains
    )
    note = f" [{h.note}]" if h.note else ""
    return (
        f"{label} ({h.t_s:.1f} s){note}: queue {h.queue_depth}, leases {h.leases}, "
        f"deferred {h.deferred}, rows {h.rows_completed} done/{h.rows_dropped} dropped"
        + (f"; {domains}" if domains else "")
    )
