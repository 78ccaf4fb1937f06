"""The running figures of one run as ``ddtrace run`` shows them: :class:`RunTally` folds events
into rows, drops by reason, requests, 429s and each domain's limit / in-flight / cooldown
(:class:`DomainView`). Cheap per event; no printing (that is
:mod:`ddscope.cli.console.progress`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ddscope import events


@dataclass
class DomainView:
    limit: int
    in_flight: int = 0
    waiters: int = 0
    cooldown_until_ns: int | None = None
    breaker: str = "closed"


@dataclass
class RunTally:
    """Running figures of one run, updated from its events (cheap per event)."""

    header: events.RunHeader | None = None
    total_rows: int = 0
    row_groups: int = 0
    row_groups_done: int = 0
    rows_checkpointed: int = 0  # from row_group_finished
    rows_done_live: int = 0  # from health: done, perhaps not yet checkpointed
    drops_by_reason: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    rate_limited: int = 0
    deferred: int = 0
    queue_depth: int = 0
    now_ns: int = 0
    domains: dict[str, DomainView] = field(default_factory=dict)
    shutdown: events.Shutdown | None = None
    finished: events.RunFinished | None = None
    interrupted: bool = False

    def open(self, header: events.RunHeader) -> None:
        self.header = header
        self.total_rows = header.num_records
        self.domains = {d.domain: DomainView(limit=d.max_parallel_requests) for d in header.domains}

    def update(self, event: events.Event) -> None:
        self.now_ns = max(self.now_ns, event.t_ns)
        handler = _TALLY_HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    def domain(self, name: str) -> DomainView:
        view = self.domains.get(name)
        if view is None:
            view = self.domains[name] = DomainView(limit=0)
        return view

    def cooldown_remaining_s(self, view: DomainView) -> float:
        if view.cooldown_until_ns is None:
            return 0.0
        return max(0.0, (view.cooldown_until_ns - self.now_ns) / 1e9)

    @property
    def rows_completed(self) -> int:
        if self.finished is not None:
            return self.finished.rows_completed
        return max(self.rows_checkpointed, self.rows_done_live)

    @property
    def rows_dropped(self) -> int:
        if self.finished is not None:
            return self.finished.rows_dropped
        return sum(self.drops_by_reason.values())

    @property
    def outcome(self) -> str:
        if self.finished is not None:
            return self.finished.outcome
        return "cancelled" if self.interrupted else "unfinished"


def _on_run_started(t: RunTally, e: Any) -> None:
    t.total_rows, t.row_groups = e.num_records, e.row_groups


def _on_row_group_finished(t: RunTally, e: Any) -> None:
    t.row_groups_done += 1
    t.rows_checkpointed += e.rows_completed


def _on_row_dropped(t: RunTally, e: Any) -> None:
    t.drops_by_reason[e.reason] += 1


def _on_attempt_started(t: RunTally, e: Any) -> None:
    t.domain(e.domain).in_flight += 1


def _on_attempt_finished(t: RunTally, e: Any) -> None:
    view = t.domain(e.domain)
    view.in_flight = max(0, view.in_flight - 1)
    t.requests += 1
    if e.outcome == "rate_limited":
        t.rate_limited += 1


def _on_cooldown_started(t: RunTally, e: Any) -> None:
    t.domain(e.domain).cooldown_until_ns = e.t_ns + round(e.duration_s * 1e9)


def _on_cooldown_finished(t: RunTally, e: Any) -> None:
    t.domain(e.domain).cooldown_until_ns = None


def _on_limit_changed(t: RunTally, e: Any) -> None:
    t.domain(e.domain).limit = e.new


def _on_breaker(t: RunTally, e: Any) -> None:
    t.domain(e.domain).breaker = e.state


def _on_health(t: RunTally, e: Any) -> None:
    t.queue_depth, t.deferred = e.queue_depth, e.deferred
    t.rows_done_live = e.rows_completed
    for d in e.domains:
        view = t.domain(d.domain)
        view.limit, view.in_flight, view.waiters, view.breaker = (
            d.limit,
            d.in_flight,
            d.waiters,
            d.breaker,
        )
        view.cooldown_until_ns = (
            e.t_ns + round(d.cooldown_remaining_s * 1e9) if d.cooldown_remaining_s > 0 else None
        )


def _on_shutdown(t: RunTally, e: Any) -> None:
    t.shutdown = e


def _on_run_finished(t: RunTally, e: Any) -> None:
    t.finished = e


_TALLY_HANDLERS: dict[str, Callable[[RunTally, Any], None]] = {
    "run_started": _on_run_started,
    "row_group_finished": _on_row_group_finished,
    "row_dropped": _on_row_dropped,
    "attempt_started": _on_attempt_started,
    "attempt_finished": _on_attempt_finished,
    "cooldown_started": _on_cooldown_started,
    "cooldown_finished": _on_cooldown_finished,
    "limit_changed": _on_limit_changed,
    "breaker": _on_breaker,
    "health": _on_health,
    "shutdown": _on_shutdown,
    "run_finished": _on_run_finished,
}
