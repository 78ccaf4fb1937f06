"""The text parts of a one-run report, as HTML: verdict and findings, totals, per-domain figures,
drops with examples, salvage rounds, the longest interval without progress.

Everything that came from the record (messages, reasons, a server's error text in a drop
message) goes through :func:`esc`; long messages are cut with their length stated, as in the
text report.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ddscope.exporters.health.render import clip, count, no_progress_line, run_state
from ddscope.exporters.health.report import DomainReport, HealthReport, Totals
from ddscope.exporters.health.stats import Quantiles

MESSAGE_CHARS = 400  # longer record text is cut, with its length stated


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """``rows`` are HTML already (escape the cells first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def verdict_section(report: HealthReport) -> str:
    items = []
    for f in report.findings:
        items.append(  # the message names the domain itself
            f'<li class="finding {esc(f.level)}"><span class="level">{esc(f.level)}</span> '
            f"<code>{esc(f.code)}</code> {esc(clip(f.message, MESSAGE_CHARS))}"
            f'<div class="rec">→ {esc(clip(f.recommendation, MESSAGE_CHARS))}</div></li>'
        )
    findings = (
        f'<ul class="findings">{"".join(items)}</ul>'
        if items
        else '<p class="ok">Nothing to report: every request and row went through.</p>'
    )
    return (
        f'<section class="verdict {esc(report.verdict)}"><h2>Verdict: '
        f'<span class="badge {esc(report.verdict)}">{esc(report.verdict.upper())}</span></h2>'
        f"{findings}</section>"
    )


def totals_section(t: Totals) -> str:
    rows = [
        ("run", esc(run_state(t, MESSAGE_CHARS))),
        ("rows", esc(f"{t.rows_completed}/{t.num_records} completed, {t.rows_dropped} dropped")),
        ("throughput", esc(f"{t.rows_per_s:.2f} rows/s, {t.requests_per_s:.1f} requests/s")),
        ("requests", esc(count(t.requests, "request"))),
        ("row groups", esc(f"{t.row_groups_finished}/{t.row_groups_total} checkpointed")),
    ]
    return f"<section><h2>Run</h2>{table(('', ''), rows, 'kv')}</section>"


def _q(q: Quantiles) -> str:
    if not q.count:
        return "–"
    return f"{q.p50:.3g} / {q.p95:.3g} / {q.max:.3g}"


def domain_table(d: DomainReport, peak_waiters: int) -> str:
    idle, cap = d.idle, d.idle.capacity_slot_s or 1.0
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(d.attempts.items(), key=lambda i: -i[1]))
    rows = [
        ("attempts", f"{d.attempts_total} ({outcomes or 'none'}); {d.share_429:.1%} answered 429"),
        (
            "AIMD limit",
            f"initial {d.limit.initial}, min {d.limit.min}, max {d.limit.max}, "
            f"final {d.limit.final}; {count(d.limit.changes, 'change')}; "
            f"{d.time_at_floor_s:.1f} s at the floor",
        ),
        (
            "cooldowns",
            f"{count(d.cooldowns.count, 'cooldown')}, {d.cooldowns.total_s:.1f} s in total, "
            f"longest {d.cooldowns.longest_s:.1f} s",
        ),
        ("request wait s p50/p95/max", _q(d.wait)),
        ("attempt ok s p50/p95/max", _q(d.attempt_ok)),
        (
            "admission",
            f"{count(d.admission_timeouts, 'admission timeout')}; peak {peak_waiters} waiting",
        ),
        ("breaker", count(d.breaker_openings, "opening") if d.breaker_openings else "never opened"),
        (
            "model slots",
            f"{idle.capacity_slot_s:.1f} slot-s, {idle.utilization:.0%} busy, "
            f"{idle.ready_work_waiting.total_slot_s / cap:.0%} idle with ready work waiting, "
            f"{idle.no_ready_work.total_slot_s / cap:.0%} idle with no ready work",
        ),
        ("tokens in / out", f"{d.tokens_in} / {d.tokens_out}"),
    ]
    return table(("", ""), [(esc(k), esc(v)) for k, v in rows], "kv")


def drops_section(t: Totals) -> str:
    if not t.drop_examples:
        return ""
    rows = [
        (
            esc(ex.reason),
            esc(ex.count),
            esc(", ".join(map(str, ex.rows)) + (" …" if ex.count > len(ex.rows) else "")),
            esc(ex.column or "–"),
            esc(clip(ex.message, MESSAGE_CHARS)),
        )
        for ex in t.drop_examples
    ]
    return (
        "<section><h2>Rows dropped, by reason</h2>"
        f"{table(('reason', 'rows', 'examples', 'column', 'first message'), rows)}</section>"
    )


def scheduler_section(report: HealthReport) -> str:
    s = report.scheduler
    parts = [f"<p>{esc(no_progress_line(report))}</p>"]
    if s.salvage_rounds:
        rows = [
            (
                esc(r.round),
                esc(r.tasks),
                esc("–" if r.recovered is None else r.recovered),
                esc("open" if r.still_deferred is None else r.still_deferred),
                esc(f"{r.start_s:.1f}–{'…' if r.end_s is None else f'{r.end_s:.1f}'} s"),
            )
            for r in s.salvage_rounds
        ]
        header = ("round", "tasks", "recovered", "still deferred", "when")
        parts.append(f"<h3>Salvage rounds</h3>{table(header, rows)}")
    if s.shutdown is not None:
        parts.append(
            f"<p>Shutdown at {s.shutdown.t_s:.1f} s ({esc(s.shutdown.reason)}): "
            f"{esc(clip(s.shutdown.message, MESSAGE_CHARS))}</p>"
        )
    return f"<section><h2>Scheduler</h2>{''.join(parts)}</section>"
