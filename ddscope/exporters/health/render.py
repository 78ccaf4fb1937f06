"""The health snapshot as text for people: one screen, tables, colour only when asked.

``render(report, color=...)`` returns the text; the CLI asks for colour only when stdout is a
terminal. Everything shown here is in the JSON document too (``HealthReport.to_json``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ddscope.exporters.health.report import (
    DomainReport,
    EngineHealth,
    Finding,
    HealthReport,
    SchedulerReport,
    Totals,
)
from ddscope.exporters.health.stats import Quantiles, TimelinePoint
from ddscope.safe_text import escape_controls

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


MESSAGE_CHARS = 300  # record text longer than this is cut, with its length stated


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """Record text (a run's message, a drop's sentence, a server's error) made safe and short
    for a terminal: control characters shown as escapes (an ESC from a server never reaches
    the terminal), and text longer than ``limit`` cut, saying how long it was."""
    total = len(text)
    shown = escape_controls(text[:limit])
    return shown if total <= limit else f"{shown}… [cut: {total:,} characters]"


def count(n: int, noun: str) -> str:
    """``1 attempt``, ``2 attempts``: the noun agrees with the number."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def seconds(value: float) -> str:
    """Durations with the digits that matter: 0.0382 s, 1.25 s, 12.3 s, 421 s."""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


# Where paint() puts colour: private-use characters that the escaping below leaves alone and
# that only then become terminal codes, for known levels only. So everything else on a line —
# run ids, pipeline names, domains, reasons, all from the record — is escaped, whatever it is.
_PAINT = re.compile("\ue000([a-z_]+)(!?)\ue001(.*?)\ue002")


def render(report: HealthReport, *, color: bool = False, warnings: bool = True) -> str:
    """The report as text, every line's control characters shown as escapes (a record's text
    never drives the terminal); ``warnings=False`` leaves out the record's warnings (the CLI
    prints them to stderr instead, once)."""

    def paint(text: str, level: str, bold: bool = False) -> str:
        return f"\ue000{level}{'!' if bold else ''}\ue001{text}\ue002" if color else text

    def colour(match: re.Match[str]) -> str:
        level, bold, text = match.groups()
        return _style(text, COLOURS.get(level), bool(bold)) if level in COLOURS else text

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
    lines += ["", "scheduler", "  " + no_progress_line(report), *_scheduler(report.scheduler)]
    if report.engine_health is not None:
        lines.append("  " + _engine_line("engine's last health event", report.engine_health))
    if warnings:
        lines += [f"warning: {clip(w)}" for w in report.record.warnings]
    text = "\n".join(escape_controls(line) for line in lines)
    return _PAINT.sub(colour, text) if color else text


def _findings(findings: Sequence[Finding], paint: Callable[[str, str], str]) -> list[str]:
    if not findings:
        return ["  nothing to report: every request and row went through"]
    out = []
    for f in findings:
        tag = paint(f"[{f.level}]", f.level)
        out.append(f"  {tag} {f.code}: {clip(f.message)}")
        out.append(f"      → {clip(f.recommendation)}")
    return out


def run_state(t: Totals, limit: int = MESSAGE_CHARS) -> str:
    """How the run ended (or that it had not, or that its end is missing), with its message
    clipped to ``limit``: the one sentence the text report and the HTML report both show."""
    if t.state == "finished":
        reason = f" ({t.reason})" if t.reason else ""
        run = f"{t.outcome}{reason} after {t.duration_s:.1f} s"
        return f"{run}: {clip(t.message, limit)}" if t.message else run
    if t.state == "running":
        return f"still running at {t.duration_s:.1f} s"
    return f"no run_finished: the record stops at {t.duration_s:.1f} s (crashed or killed?)"


def _totals(t: Totals) -> list[str]:
    run = [f"run: {run_state(t)}"]
    if t.resumes:
        times = "once" if t.resumes == 1 else f"{t.resumes} times"
        run.append(f"  resumed {times}; stopped {t.stopped_s:.1f} s in all (within the time above)")
    drops = ", ".join(f"{r} ×{n}" for r, n in sorted(t.drops_by_reason.items()))
    rows = (
        f"rows: {t.rows_completed}/{t.num_records} completed, {t.rows_dropped} dropped"
        + (f" ({drops})" if drops else "")
        + f"; {t.rows_per_s:.2f} rows/s; {count(t.requests, 'request')}, "
        f"{t.requests_per_s:.1f}/s; "
        f"row groups {t.row_groups_finished}/{t.row_groups_total}"
    )
    examples = [
        f"  dropped ({ex.reason}): {count(ex.count, 'row')}, e.g. row {ex.rows[0]}"
        + (f" ({ex.column})" if ex.column else "")
        + f": {clip(ex.message)}"
        for ex in t.drop_examples
        if ex.rows
    ]
    return [*run, rows, *examples]


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
    timeline = limit_timeline(d.timeline)
    idle, cap = d.idle, d.idle.capacity_slot_s or 1.0
    w, n = idle.ready_work_waiting, idle.no_ready_work

    def pct(value: float) -> str:
        return f"{value / cap:.0%}"

    return [
        f"  {d.domain}: attempts {outcomes or 'none'}; ok attempt s p50/p95/max "
        f"{_q(d.attempt_ok)}; tokens in/out {d.tokens_in}/{d.tokens_out}",
        f"    limit over time: {timeline}",
        f"    model slots: {idle.capacity_slot_s:.1f} slot-s, busy {pct(idle.busy_slot_s)}; "
        f"ready work waiting {pct(w.total_slot_s)} (cooldown {pct(w.cooldown_slot_s)}, "
        f"limit {pct(w.limit_slot_s)}, breaker {pct(w.breaker_slot_s)}, shutdown "
        f"{pct(w.shutdown_slot_s)}, hand-off {pct(w.waiters_ahead_slot_s)}); no ready work "
        f"{pct(n.total_slot_s)} (inputs not done {pct(n.dependencies_slot_s)}, no admitted "
        f"work {pct(n.horizon_slot_s)}, awaiting salvage {pct(n.awaiting_salvage_slot_s)})",
    ]


def limit_timeline(points: Sequence[TimelinePoint]) -> str:
    """``0–0.39 s: 8`` per stretch: neighbouring segments with the same limit range and no 429s
    are merged, and times have as many digits as it takes for every label to differ."""
    merged: list[list[float | int]] = []  # [start, end, low, high, attempts, 429s]
    for p in points:
        last = merged[-1] if merged else None
        same = last is not None and (last[2], last[3]) == (p.limit_min, p.limit_max)
        if same and last is not None and not p.rate_limited and not last[5]:
            last[1] = p.t_end_s
        else:
            merged.append([p.t_s, p.t_end_s, p.limit_min, p.limit_max, p.attempts, p.rate_limited])
    for digits in range(1, 7):
        labels = [f"{m[0]:.{digits}f}" for m in merged]
        if len(set(labels)) == len(labels):
            break
    parts = []
    for (_start, end, low, high, attempts, limited), label in zip(merged, labels, strict=True):
        limit = f"{low}" if low == high else f"{low}-{high}"
        rl = f" ({limited}/{attempts} got 429)" if limited else ""
        parts.append(f"{label}–{end:.{digits}f} s: {limit}{rl}")
    return ";  ".join(parts) or "no limit change"


def no_progress_line(report: HealthReport) -> str:
    """The longest interval without a completed task, with a cause only when one is due: on a
    healthy run that interval is as long as a request takes, which is no stall."""
    gap = report.scheduler.longest_no_progress
    if gap is None:
        return "longest without progress: none (no work was pending)"
    still = ", still open" if gap.open else ""
    head = (
        f"longest without a completed task: {seconds(gap.duration_s)} s "
        f"({seconds(gap.start_s)}–{seconds(gap.end_s)} s{still})"
    )
    slowest = max((d.attempt_ok.max or 0.0 for d in report.domains), default=0.0)
    lease = report.scheduler.lease.max or 0.0
    if gap.cause == "on_the_wire" and not gap.open and gap.duration_s <= max(slowest, lease):
        return (
            f"{head}: no longer than one task takes (slowest successful attempt "
            f"{seconds(slowest)} s, slowest task lease {seconds(lease)} s): no stall"
        )
    return f"{head}: {clip(gap.explanation)}"


def _scheduler(s: SchedulerReport) -> list[str]:
    out = []
    gap = s.longest_no_progress
    if gap is not None and gap.engine_health is not None:
        out.append("    " + _engine_line("engine then", gap.engine_health))
    rounds = "; ".join(
        f"#{r.round}: {count(r.tasks, 'task')}, recovered {r.recovered}, "
        f"still deferred {r.still_deferred}"
        for r in s.salvage_rounds
    )
    deferred = ", ".join(f"{k} ×{n}" for k, n in sorted(s.tasks_deferred.items()))
    out.append(
        f"  longest silence (no progress or health event): {seconds(s.max_silence_s)} s; "
        f"salvage rounds: {rounds or 'none'}; deferred: {deferred or 'none'}"
    )
    # the ready queue is only known from health events; a run shorter than the health
    # interval has one, taken after the end, so its "peak" would say 0
    queue = (
        f"peak ready queue {s.peak_queue_depth}"
        if s.health_events >= 2
        else f"ready queue not sampled ({count(s.health_events, 'health event')})"
    )
    out.append(
        f"  {queue}; peak leases {s.peak_leases}, peak row groups in flight "
        f"{s.peak_row_groups_in_flight}; task lease s p50/p95/max {_q(s.lease)}; "
        f"{count(s.health_events, 'health event')}"
    )
    if s.shutdown is not None:
        out.append(
            f"  shutdown at {s.shutdown.t_s:.1f} s ({s.shutdown.reason}): "
            f"{clip(s.shutdown.message)}"
        )
    return out


def _engine_line(label: str, h: EngineHealth) -> str:
    domains = "; ".join(
        f"{d.domain} limit {d.limit}, {d.in_flight} in flight, {d.waiters} waiting"
        + (f", cooldown {d.cooldown_remaining_s:.1f} s left" if d.cooldown_remaining_s else "")
        + (f", breaker {d.breaker}" if d.breaker != "closed" else "")
        for d in h.domains
    )
    note = f" [{clip(h.note)}]" if h.note else ""
    return (
        f"{label} ({h.t_s:.1f} s){note}: queue {h.queue_depth}, leases {h.leases}, "
        f"deferred {h.deferred}, rows {h.rows_completed} done/{h.rows_dropped} dropped"
        + (f"; {domains}" if domains else "")
    )
