"""DataDesigner's ``scheduler_health_snapshot`` → ddscope ``health`` (and, from a file, the
request-level figures that only snapshots carry).

A snapshot's ``diagnostics`` hold the scheduler's queue and leases and, per request resource
(``provider/model/<domain>``), ``request_pressure`` (``current_limit``, ``in_flight_count``,
``waiters``, ``cooldown_remaining_seconds``, ``last_outcome``) and ``retryable_outcomes`` (model
task outcomes: rolling and cumulative counts by kind, e.g. ``rate_limit``, and details such as
``rate_limit:http_429``).

From a file (``request_events=False``) the snapshots are also the only source of AIMD limit
changes and 429 cooldowns, so they become ``limit_changed`` and ``cooldown_*`` events *as of the
snapshot* (a change between two snapshots is seen late; one undone in between is not seen), and
the cumulative outcome counts resolve the error kind of deferrals (see :class:`OutcomeTally`).
Live, request-admission events give all of these exactly and the snapshot only makes ``health``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ddscope.integrations.datadesigner.cooldown import Cooldowns

# DataDesigner's retryable outcome kinds (AsyncTaskScheduler._retryable_error_kind) → ddscope.
RETRYABLE_KINDS: dict[str, str] = {
    "rate_limit": "rate_limited",
    "timeout": "timeout",
    "internal_server": "server_error",
    "connection": "connection_error",
    "request_admission_timeout": "admission_timeout",
    "other_retryable": "bad_response",
}
NOT_FAILURES = frozenset({"success", "non_retryable_failure"})


def resource_domain(resource: str) -> str:
    """``provider/model/chat`` (a request resource) → ``provider/model`` (a ddscope domain)."""
    return resource.rsplit("/", 1)[0] if resource.count("/") >= 2 else resource


@dataclass
class OutcomeTally:
    """Cumulative retryable outcomes as of the last snapshot, and what changed since."""

    cumulative: dict[str, int] = field(default_factory=dict)
    details: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def update(self, retryable: Mapping[str, Any]) -> dict[str, int]:
        """Reads one snapshot's ``retryable_outcomes``; returns the increase per ddscope error
        kind since the previous snapshot (only failures)."""
        counts = retryable.get("cumulative_counts")
        if isinstance(counts, dict):
            grown = {
                RETRYABLE_KINDS.get(k, "bad_response"): v - self.cumulative.get(k, 0)
                for k, v in counts.items()
                if isinstance(v, int) and k not in NOT_FAILURES and v > self.cumulative.get(k, 0)
            }
            self.cumulative = {k: v for k, v in counts.items() if isinstance(v, int)}
            self.total = sum(self.cumulative.values())
        else:
            grown = {}
        details = retryable.get("retryable_details")
        if isinstance(details, dict):
            self.details = {k: v for k, v in details.items() if isinstance(v, int)}
        return grown


@dataclass
class DomainFigures:
    """Per domain, what the snapshots showed: for the reader's closing note."""

    first_limit: int | None = None
    min_limit: int | None = None
    last_limit: int | None = None
    last_outcome: str | None = None

    def saw(self, limit: int, outcome: Any) -> None:
        if limit > 0:
            self.first_limit = limit if self.first_limit is None else self.first_limit
            self.min_limit = limit if self.min_limit is None else min(self.min_limit, limit)
            self.last_limit = limit
        if isinstance(outcome, str):
            self.last_outcome = outcome


class SnapshotTranslator:
    def __init__(self, domains: list[str], cooldowns: Cooldowns, *, request_events: bool) -> None:
        self._known = set(domains)
        self._cooldowns = cooldowns
        self._from_snapshots = not request_events
        self.limits: dict[str, int] = {}
        self.figures: dict[str, DomainFigures] = {d: DomainFigures() for d in domains}
        self.tally = OutcomeTally()

    def set_initial_limit(self, domain: str, limit: int) -> None:
        self.limits[domain] = limit

    def translate(
        self, out: list[dict[str, Any]], t_ns: int, diag: Mapping[str, Any], rows: tuple[int, int]
    ) -> dict[str, int]:
        """Appends ``health`` (and, from a file, limit/cooldown events); returns the growth of
        failed outcomes by kind since the last snapshot."""
        pressure = _resources(diag.get("request_pressure"))
        domains: list[dict[str, Any]] = []
        retryable = diag.get("retryable_outcomes")
        share = _share_429(retryable)
        for domain, state in pressure.items():
            limit = _int(state.get("current_limit"))
            remaining = _float(state.get("cooldown_remaining_seconds"))
            self._observe(out, t_ns, domain, limit, remaining, state)
            domains.append(
                {
                    "domain": domain,
                    "limit": limit,
                    "in_flight": _int(state.get("in_flight_count")),
                    "waiters": _int(state.get("waiters")),
                    "cooldown_remaining_s": round(remaining, 6),
                    "recent_429_share": share,
                    "at_floor": limit <= 1,
                }
            )
        out.append(
            {
                "kind": "health",
                "t_ns": t_ns,
                "queue_depth": _int(diag.get("queued_total")),
                "leases": _int(diag.get("in_flight_tasks")),
                "in_flight": sum(d["in_flight"] for d in domains),
                "deferred": _int(diag.get("deferred_tasks")),
                "rows_completed": rows[0],
                "rows_dropped": rows[1],
                "row_groups_in_flight": _int(diag.get("active_row_groups")),
                "domains": domains,
                "note": f"datadesigner {diag.get('reason') or 'snapshot'}",
            }
        )
        return self.tally.update(retryable) if isinstance(retryable, dict) else {}

    def _observe(
        self,
        out: list[dict[str, Any]],
        t_ns: int,
        domain: str,
        limit: int,
        remaining: float,
        state: Mapping[str, Any],
    ) -> None:
        self.figures.setdefault(domain, DomainFigures()).saw(limit, state.get("last_outcome"))
        if not self._from_snapshots or domain not in self._known:
            return
        old = self.limits.get(domain)
        if old is not None and limit > 0 and limit != old:
            reason = "increase" if limit > old else "decrease"
            out.append(
                {
                    "kind": "limit_changed",
                    "t_ns": t_ns,
                    "domain": domain,
                    "old": old,
                    "new": limit,
                    "reason": reason,
                }
            )
        if limit > 0:
            self.limits[domain] = limit
        self._cooldowns.observe(out, t_ns, domain, remaining)


def _resources(pressure: Any) -> dict[str, dict[str, Any]]:
    """request_pressure.resources keyed by ddscope domain (one resource per domain: the first
    in name order, so ``chat`` before ``embedding``)."""
    resources = pressure.get("resources") if isinstance(pressure, dict) else None
    out: dict[str, dict[str, Any]] = {}
    if isinstance(resources, dict):
        for name in sorted(resources):
            state = resources[name]
            if isinstance(state, dict):
                out.setdefault(resource_domain(name), state)
    return out


def _share_429(retryable: Any) -> float:
    if not isinstance(retryable, dict):
        return 0.0
    counts = retryable.get("rolling_counts")
    total = retryable.get("rolling_total")
    if not isinstance(counts, dict) or not isinstance(total, int) or total <= 0:
        return 0.0
    limited = counts.get("rate_limit", 0)
    return round(limited / total, 6) if isinstance(limited, int) else 0.0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
