"""Judging a snapshot: findings (code, level, sentence, recommendation) and so the verdict.

Levels, worst last: ``healthy < degraded < stalled < saturated < failed`` (``info`` findings
do not move the verdict). The rules, with the defaults of :class:`Thresholds`:

* **failed** — the record has no ``run_finished`` (crash or kill; not when ``--at`` stops
  before the end), the run was cancelled, ended ``failed``, or shut down early for any reason
  but endpoint saturation (e.g. the error rate), or rows were dropped for a reason other than
  such a shutdown (client errors, template errors, retries exhausted, …).
* **saturated** — a domain's circuit breaker opened, or a domain sat at the floor (limit 1) for
  ``saturated_floor_s`` with ≥ ``saturated_429_share`` of its attempts there answered 429. A
  fail-fast shutdown *because* of saturation is saturated, not failed: that is its cause.
* **stalled** — no task completed for ``stall_s``, or for ``stall_fraction`` of the run when also
  ≥ ``stall_min_s``, while work was pending — unless the endpoint was refusing (cooldowns) and
  recovered, the breaker never opened and the run completed: that is a **transient outage**
  (degraded), which the engine sat out.
* **degraded** — a domain's 429 share ≥ ``degraded_429_share`` (429s of a spent quota aside:
  see ``quota_bound``); failed attempts other than 429;
  tasks deferred to salvage; admission timeouts; ready model work waiting on admission for
  ≥ ``admission_bound_share`` of a domain's capacity.
* **info** — model slots with no ready work for ≥ ``starved_share`` of capacity; a few 429s;
  a domain paced by the provider's quota headers (``quota_bound``: steady progress at the quota).

Rate limiting, told apart: *quota-bound* (info), *transient outage* (degraded, recovered),
*rate-limited* (degraded, but serving), *saturated* (the breaker opened).
"""

from __future__ import annotations

from ddscope.events import RunHeader
from ddscope.exporters.health.report import (
    DomainReport,
    Finding,
    SchedulerReport,
    Thresholds,
    Totals,
    verdict_rank,
)

SATURATION = "endpoint_saturated"
STOP_DROP_REASONS = frozenset({"shutdown", "cancelled"})  # drops that follow a stop
NOT_ERRORS = frozenset({"ok", "rate_limited", "cancelled"})  # attempt outcomes that are no error
STALL_ADVICE = {
    "breaker_open": "the endpoint kept refusing: raise its quota or lower max_parallel_requests",
    "cooldown": "the endpoint kept rate-limiting: raise its quota or lower max_parallel_requests",
    "on_the_wire": "requests hung: lower the model's timeout_s so they fail fast and are "
    "retried, and check the endpoint",
    "admission": "requests waited for admission: check the domain's limit and acquire_timeout_s",
    "awaiting_salvage": "lower salvage_pause_s or max_cooldown_s",
    "no_ready_work": "nothing was ready: check row_groups_in_flight and the column dependencies",
}
ERROR_ADVICE = {
    "timeout": "requests timed out: raise the model's timeout_s if it is just slow, else check "
    "the endpoint",
    "server_error": "the endpoint answered 5xx: check its health and logs",
    "connection_error": "the endpoint could not be reached: check its address and that it is up",
    "bad_response": "the endpoint answered with bodies that are not chat completions: check the "
    "endpoint URL and the model id",
    "client_error": "the endpoint refused requests as bad (HTTP 4xx): inspect the prompts of the "
    "dropped rows",
}


def judge(
    header: RunHeader,
    totals: Totals,
    domains: list[DomainReport],
    scheduler: SchedulerReport,
    th: Thresholds,
) -> list[Finding]:
    """Every finding, worst first (stable within a level)."""
    lost = sum(n for r, n in totals.drops_by_reason.items() if r in STOP_DROP_REASONS)
    found = [
        _end_finding(totals, lost),
        _shutdown_finding(totals, scheduler, lost),
        _drops_finding(totals),
        _stall_finding(totals, scheduler, th, domains),
        _deferred_finding(scheduler),
    ]
    for d in domains:
        found += [
            _saturation_finding(d, scheduler, th, totals.duration_s),
            _rate_limited_finding(d, th),
            _quota_finding(d),
            _errors_finding(d),
            _timeouts_finding(d),
            _admission_bound_finding(d, th),
            _starved_finding(header, d, totals, th),
        ]
    return sorted((f for f in found if f is not None), key=lambda f: -verdict_rank(f.level))


# -- the run as a whole --------------------------------------------------------------------


def _end_finding(totals: Totals, lost: int) -> Finding | None:
    if totals.state == "crashed":
        return Finding(
            "no_run_finished",
            "failed",
            f"the record stops {totals.duration_s:.1f} s into the run without run_finished: "
            f"the run crashed or was killed ({totals.rows_completed} rows checkpointed)",
            "look at the run's stderr for the crash; the checkpointed rows are in data.jsonl; "
            "rerun the pipeline",
        )
    if totals.outcome == "cancelled":
        return Finding(
            "run_cancelled",
            "failed",
            f"the run was cancelled after {totals.duration_s:.1f} s ({lost} unfinished rows "
            "dropped)",
            "rerun it; the rows completed before the cancel were kept",
        )
    return None


def _shutdown_finding(totals: Totals, scheduler: SchedulerReport, lost: int) -> Finding | None:
    stop = scheduler.shutdown
    if stop is not None and stop.reason not in (SATURATION, "cancelled"):
        return Finding(
            "error_rate_shutdown" if stop.reason == "error_rate" else "early_shutdown",
            "failed",
            f"the run stopped early at {stop.t_s:.1f} s ({stop.reason}): {stop.message}; "
            f"{lost} unfinished rows dropped",
            "fix the failures named above (check the endpoint is up and the model id is "
            "right); raise error_rate_threshold only if such failures are expected",
            stop.domain,
        )
    dropped = bool(totals.rows_dropped) and "dropped" in (totals.reason or "")
    if totals.outcome == "failed" and stop is None and not dropped:  # drops say it otherwise
        return Finding(
            "run_failed",
            "failed",
            f"the run failed ({totals.reason}): {totals.message}",
            "report the bug with run.jsonl attached",
        )
    return None


def _drops_finding(totals: Totals) -> Finding | None:
    examples = [e for e in totals.drop_examples if e.reason not in STOP_DROP_REASONS]
    if not examples:
        return None
    examples.sort(key=lambda e: -e.count)
    first = examples[0]
    parts = ", ".join(f"{e.reason} ×{e.count} (rows {_rows(e.rows, e.count)})" for e in examples)
    column = f" (column {first.column})" if first.column else ""
    advice = {
        "client_error": f"inspect the prompt of row {first.rows[0]}{column}: the endpoint "
        "refused it",
        "template_error": f"fix the template of{column or ' the failing column'}: {first.message}",
        "retries_exhausted": "raise salvage_rounds or salvage_pause_s, or fix the endpoint's "
        "errors",
    }.get(first.reason, f"see row {first.rows[0]}{column}")
    return Finding(
        "rows_dropped",
        "failed",
        f"{_count(sum(e.count for e in examples), 'row')} dropped: {parts}; first: {first.message}",
        f"rows dropped by {first.reason}: {advice}",
    )


def _stall_finding(
    totals: Totals, scheduler: SchedulerReport, th: Thresholds, domains: list[DomainReport]
) -> Finding | None:
    gap = scheduler.longest_no_progress
    if gap is None:
        return None
    long_enough = gap.duration_s >= th.stall_s or (
        gap.duration_s >= th.stall_min_s
        and totals.duration_s > 0
        and gap.duration_s / totals.duration_s >= th.stall_fraction
    )
    if not long_enough:
        return None
    sat_out = gap.cause == "cooldown" and not gap.open and totals.outcome == "complete"
    if sat_out and any(d.quota.pauses for d in domains):
        return None  # waiting for a spent quota's reset: quota_bound says so, it is no stall
    if sat_out and not any(d.breaker_openings for d in domains):
        return Finding(
            "transient_outage",
            "degraded",
            f"the endpoint refused requests for {gap.duration_s:.1f} s ({gap.start_s:.1f}–"
            f"{gap.end_s:.1f} s) and then recovered; the run waited it out and completed",
            "nothing to fix if rare; a startup ramp (ramp_s) softens an opening burst, and "
            "breaker_policy: wait rides out longer outages",
        )
    still = ", still open" if gap.open else ""
    return Finding(
        "no_progress",
        "stalled",
        f"no task completed for {gap.duration_s:.1f} s ({gap.start_s:.1f}–{gap.end_s:.1f} s"
        f"{still}): {gap.explanation}",
        STALL_ADVICE[gap.cause],
    )


def _deferred_finding(scheduler: SchedulerReport) -> Finding | None:
    deferred = sum(scheduler.tasks_deferred.values())
    if not deferred:
        return None
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(scheduler.tasks_deferred.items()))
    recovered = sum(r.recovered or 0 for r in scheduler.salvage_rounds)
    rounds = len(scheduler.salvage_rounds)
    return Finding(
        "tasks_deferred",
        "degraded",
        f"{_count(deferred, 'task failure')} deferred for retry ({kinds}); "
        f"{_count(rounds, 'salvage round')} recovered {recovered}",
        "fine when rare; otherwise fix the failures named above",
    )


# -- per domain ----------------------------------------------------------------------------


def _saturation_finding(
    d: DomainReport, scheduler: SchedulerReport, th: Thresholds, window_s: float
) -> Finding | None:
    floor = d.longest_floor
    if d.breaker_openings:
        last = next((e for e in reversed(d.breaker_events) if e.state == "open"), None)
        why = f" ({last.reason}: {last.share_429:.0%} of recent requests refused)" if last else ""
        stop = scheduler.shutdown
        stopped = stop is not None and stop.reason == SATURATION and stop.domain == d.domain
        return Finding(
            "breaker_opened",
            "saturated",
            f"{d.domain}: circuit breaker opened {d.breaker_openings}×{why}"
            + ("; the run stopped (endpoint_saturated) keeping the completed rows" if stopped
               else ""),
            _refusal_advice(d, window_s)
            + (" (breaker_policy: wait keeps trying while reporting)" if stopped else ""),
            d.domain,
        )  # fmt: skip
    if (
        floor is not None
        and floor.duration_s >= th.saturated_floor_s
        and floor.attempts >= 3
        and floor.share_429 >= th.saturated_429_share
    ):
        return Finding(
            "sustained_429_at_floor",
            "saturated",
            f"{d.domain}: {floor.duration_s:.0f} s at concurrency 1 with {floor.share_429:.0%} "
            f"of {floor.attempts} attempts rate-limited",
            _refusal_advice(d, window_s),
            d.domain,
        )
    return None


def _refusal_advice(d: DomainReport, window_s: float) -> str:
    floor = d.longest_floor
    if floor is not None and floor.attempts and floor.duration_s >= 1.0:
        refused = (
            f"{d.domain} refused {floor.share_429:.0%} of requests for "
            f"{floor.duration_s:.0f} s at concurrency 1"
        )
    else:  # too short a stretch at the floor to quote: the whole run's figure
        refused = (
            f"{d.domain} refused {d.share_429:.0%} of {d.attempts_total} requests in "
            f"{window_s:.1f} s"
        )
    return f"{refused}: raise its quota or lower max_parallel_requests"


def _rate_limited_finding(d: DomainReport, th: Thresholds) -> Finding | None:
    # 429s of a spent quota are the quota's pacing (quota_bound), not this finding's evidence.
    limited = d.attempts.get("rate_limited", 0) - d.quota.refused
    if limited <= 0:
        return None
    share = limited / d.attempts_total if d.attempts_total else 0.0
    return Finding(
        "rate_limited",
        "degraded" if share >= th.degraded_429_share else "info",
        f"{d.domain}: {limited} of {d.attempts_total} attempts ({share:.1%}) got 429; "
        f"limit {d.limit.initial} → min {d.limit.min}, final {d.limit.final}; "
        f"{d.cooldowns.total_s:.1f} s in cooldown",
        f"lower max_parallel_requests (now {d.max_parallel_requests}) toward "
        f"{max(1, d.limit.final)} or raise the quota; a startup ramp (ramp_s) avoids an "
        "opening burst",
        d.domain,
    )


def _quota_finding(d: DomainReport) -> Finding | None:
    if not (d.quota.pauses or d.quota.refused):
        return None
    return Finding(
        "quota_bound",
        "info",
        f"{d.domain}: paced by the provider's request quota (x-ratelimit-* headers): "
        f"{_count(d.quota.pauses, 'pause')} until its reset, {d.quota.refused} of "
        f"{d.attempts_total} attempts refused by a spent quota; progress was steady",
        "only a bigger quota (or a second key or deployment) makes this faster; more "
        "parallelism does not",
        d.domain,
    )


def _errors_finding(d: DomainReport) -> Finding | None:
    errors = {k: n for k, n in d.attempts.items() if k not in NOT_ERRORS and n}
    if not errors:
        return None
    worst = max(errors, key=lambda k: errors[k])
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(errors.items(), key=lambda i: -i[1]))
    return Finding(
        "request_errors",
        "degraded",
        f"{d.domain}: {_count(sum(errors.values()), 'attempt')} failed ({kinds})",
        ERROR_ADVICE.get(worst, "check the endpoint"),
        d.domain,
    )


def _timeouts_finding(d: DomainReport) -> Finding | None:
    if not d.admission_timeouts:
        return None
    return Finding(
        "admission_timeouts",
        "degraded",
        f"{d.domain}: {_count(d.admission_timeouts, 'request')} timed out waiting for "
        "request admission (local, after acquire_timeout_s)",
        "raise acquire_timeout_s, or lower row_groups_in_flight so fewer tasks queue",
        d.domain,
    )


def _admission_bound_finding(d: DomainReport, th: Thresholds) -> Finding | None:
    cap, waiting = d.idle.capacity_slot_s, d.idle.ready_work_waiting
    if cap <= 0 or waiting.total_slot_s / cap < th.admission_bound_share:
        return None
    causes = {
        "429 cooldowns": waiting.cooldown_slot_s,
        "the AIMD limit": waiting.limit_slot_s,
        "the open breaker": waiting.breaker_slot_s,
        "the shutdown": waiting.shutdown_slot_s,
        "hand-offs to waiters": waiting.waiters_ahead_slot_s,
    }
    top = max(causes, key=lambda k: causes[k])
    split = ", ".join(f"{k} {v / cap:.0%}" for k, v in causes.items() if v / cap >= 0.01)
    return Finding(
        "admission_bound",
        "info" if d.quota.pauses else "degraded",  # a quota's pauses: quota_bound explains it
        f"{d.domain}: ready model work waited for request slots "
        f"{waiting.total_slot_s / cap:.0%} of capacity ({split})",
        f"mostly {top}: the endpoint pushed back; raise its quota or lower max_parallel_requests",
        d.domain,
    )


def _starved_finding(
    header: RunHeader, d: DomainReport, totals: Totals, th: Thresholds
) -> Finding | None:
    cap, none = d.idle.capacity_slot_s, d.idle.no_ready_work
    # No attempt seen at all: either nothing was sent, or the record has no request-level events
    # (a DataDesigner scheduler file) — idle capacity is then unknown, not idle.
    if cap <= 0 or d.attempts_total == 0 or none.total_slot_s / cap < th.starved_share:
        return None
    return Finding(
        "no_ready_work",
        "info",
        f"{d.domain}: no ready model work for {none.total_slot_s / cap:.0%} of capacity "
        f"(inputs not done {none.dependencies_slot_s / cap:.0%}, no admitted work "
        f"{none.horizon_slot_s / cap:.0%}, awaiting salvage "
        f"{none.awaiting_salvage_slot_s / cap:.0%}); utilization {d.idle.utilization:.0%}",
        _starved_advice(header, d, totals),
        d.domain,
    )


def _starved_advice(header: RunHeader, d: DomainReport, totals: Totals) -> str:
    if totals.num_records < d.max_parallel_requests:
        return (
            f"the run has fewer rows ({totals.num_records}) than request slots "
            f"({d.max_parallel_requests}): nothing to fix"
        )
    setting = header.settings.get("row_groups_in_flight", "adaptive")
    if setting == "adaptive":
        cap = header.settings.get("max_row_groups_in_flight", "?")
        return (
            f"raise max_row_groups_in_flight (now {cap}) or buffer_size (now "
            f"{header.buffer_size}) so more rows are in flight"
        )
    return f"raise row_groups_in_flight (now {setting}) or use adaptive"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _rows(rows: list[int], count: int) -> str:
    text = ", ".join(str(r) for r in rows)
    return text + (", …" if count > len(rows) else "")
