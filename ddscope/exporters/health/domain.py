"""Per-domain state of the health analyzer: counters, open intervals and time integrals.

One :class:`DomainTracker` per (provider, model) domain. The analyzer feeds it events; every
state change first calls :meth:`DomainTracker.touch` with the event's time, which integrates the
state that held since the previous change. Between changes the state is constant, so the
integrals (idle slot-time and its split, time in cooldown, time at the floor, …) are exact, and
the work per event is a handful of additions.

**Idle attribution** (the question "why was the endpoint idle?"). Capacity is the domain's
``max_parallel_requests`` (the header's DomainInfo); at any moment ``idle = capacity − attempts
on the wire``. *Ready* model work is a cell whose inputs are done and which is neither done,
deferred to salvage, nor dropped (the analyzer infers readiness from the pipeline's columns and
the leases that finish); ``waiting = ready − on the wire`` (or, if readiness cannot be inferred,
the open request-admission waits). Each idle slot is attributed, slot by slot:

* ``ready_work_waiting`` — ``min(idle, waiting)`` slots, by the first cause that holds:
  ``cooldown`` (a 429 cooldown is active), ``breaker`` (the circuit breaker is open or
  half-open), ``shutdown`` (the run is stopping), ``limit`` (slots above the AIMD limit),
  ``waiters_ahead`` (slots under the limit were free while work queued: the hand-off from a
  released slot to the next waiter or lease);
* ``no_ready_work`` — the other idle slots, in this order: ``awaiting_salvage`` (deferred
  cells waiting for the next salvage round), ``dependencies`` (admitted cells of this domain
  whose inputs were not done yet), ``horizon`` (no admitted cell left for this domain: more row
  groups in flight would have given these slots work, or the run was starting or ending).

The parts sum exactly to the idle slot-time (integers, ns × slots).
"""

from __future__ import annotations

import operator

from ddscope.exporters.health.stats import LogHistogram, TimeBins

# The cumulative figures a no-progress interval is described with (see ``snapshot``).
SNAPSHOT_FIELDS = (
    "cooldown_ns",
    "breaker_ns",
    "inflight_time_ns",
    "waiting_time_ns",
    "salvage_time_ns",
    "busy_slot_ns",
    "attempts_total",
    "rate_limited",
)
read_snapshot = operator.attrgetter(*SNAPSHOT_FIELDS)  # C-level: a tuple in one call


class DomainTracker:
    """Everything the snapshot reports about one domain (see the module docstring)."""

    # Slots: attribute access in the hot handlers is ~2x faster than a >30-key __dict__.
    # fmt: off
    __slots__ = (
        "attempt_hist", "attempts", "attempts_total", "bins", "breaker_events",
        "breaker_ns", "breaker_open", "breaker_openings", "busy_slot_ns", "cap",
        "cooldown", "cooldown_count", "cooldown_longest_ns", "cooldown_ns",
        "cooldown_started", "deferred", "domain", "floor_attempts", "floor_mark",
        "floor_ns", "floor_rate_limited", "floor_since", "in_flight", "inflight_time_ns",
        "initial_limit", "last_t", "limit", "limit_changes", "limit_max", "limit_min",
        "mark", "n_deps", "n_horizon", "n_salvage", "open_attempts", "open_waits",
        "quota_pauses", "quota_refused", "rate_limited", "readiness_known", "ready",
        "remaining", "salvage_time_ns",
        "stopping", "tokens_in", "tokens_out", "w_ahead", "w_breaker", "w_cooldown",
        "w_limit", "w_shutdown", "wait_hist", "waiting_time_ns", "waits", "waits_open",
        "worst_floor",
    )
    # fmt: on

    def __init__(self, domain: str, capacity: int, t0_ns: int) -> None:
        self.domain = domain
        self.cap = max(1, capacity)
        self.last_t = t0_ns
        # current state
        self.limit = self.cap
        self.in_flight = 0
        self.waits_open = 0
        self.cooldown = False
        self.breaker_open = False
        self.stopping = False
        self.readiness_known = False
        self.ready = 0  # ready cells, including those on the wire
        self.remaining = 0  # admitted cells not done and not dropped
        self.deferred = 0  # cells deferred to the next salvage round
        # integrals: ns, or slot·ns for the *_slot_ns / idle parts
        self.busy_slot_ns = 0
        self.w_cooldown = self.w_breaker = self.w_shutdown = self.w_limit = self.w_ahead = 0
        self.n_deps = self.n_salvage = self.n_horizon = 0
        self.cooldown_ns = self.breaker_ns = self.floor_ns = 0
        self.inflight_time_ns = self.waiting_time_ns = self.salvage_time_ns = 0
        # counters
        self.attempts: dict[str, int] = {}
        self.attempts_total = 0
        self.rate_limited = 0
        self.quota_pauses = 0  # cooldowns of cause "quota": paused until the provider's reset
        self.quota_refused = 0  # 429s judged quota exhaustion (attempt_finished.quota_exhausted)
        self.tokens_in = 0
        self.tokens_out = 0
        self.waits: dict[str, int] = {}
        self.floor_attempts = 0
        self.floor_rate_limited = 0
        # open intervals, keyed by their shared ids
        self.open_waits: dict[tuple[int, int], int] = {}
        self.open_attempts: dict[tuple[int, int], int] = {}
        self.cooldown_started = 0
        self.cooldown_count = 0
        self.cooldown_longest_ns = 0  # of the finished cooldowns (an open one: see report)
        # limit extremes, floor stretches
        self.initial_limit = self.cap  # the limit before the first change
        self.limit_min = self.limit_max = self.cap
        self.limit_changes = 0
        self.floor_since: int | None = None
        self.floor_mark = (0, 0)  # (attempts, 429s) when the current floor stretch began
        self.worst_floor: tuple[int, int, int, int] | None = None  # start, ns, attempts, 429s
        self.breaker_events: list[dict[str, object]] = []
        self.breaker_openings = 0
        self.wait_hist = LogHistogram()
        self.attempt_hist = LogHistogram()  # successful attempts
        self.mark: tuple[int, ...] = ()  # snapshot() at the last progress event
        self.bins = TimeBins(t0_ns, self.cap)

    # -- integration --------------------------------------------------------------------------

    def touch(self, t: int) -> None:
        """Integrates the state held since the last change up to ``t`` (see module doc).

        The hottest function of the analyzer: attribution is inlined, attributes read once."""
        dt = t - self.last_t
        if dt <= 0:
            return
        self.last_t = t
        cap, n, cooldown = self.cap, self.in_flight, self.cooldown
        if n:
            self.inflight_time_ns += dt
            self.busy_slot_ns += (n if n < cap else cap) * dt
        if cooldown:
            self.cooldown_ns += dt
        if self.breaker_open:
            self.breaker_ns += dt
        limit, deferred = self.limit, self.deferred
        if limit <= 1:
            self.floor_ns += dt
        if deferred:
            self.salvage_time_ns += dt
        idle = cap - n
        if idle <= 0:
            return
        ready = self.ready
        waiting = ready - n if self.readiness_known else self.waits_open
        if waiting > 0:
            self.waiting_time_ns += dt
            slots = waiting if waiting < idle else idle
            if cooldown:
                self.w_cooldown += slots * dt
            elif self.breaker_open:
                self.w_breaker += slots * dt
            elif self.stopping:
                self.w_shutdown += slots * dt
            else:  # slots above the AIMD limit are the limit's; the rest are hand-offs
                above = cap - (limit if limit > n else n)
                by_limit = slots if slots < above else (above if above > 0 else 0)
                self.w_limit += by_limit * dt
                if slots > by_limit:
                    self.w_ahead += (slots - by_limit) * dt
            idle -= slots
            if idle <= 0:
                return
        if deferred > 0:  # runnable cells held back for salvage come first: they are the cause
            by_salvage = idle if idle < deferred else deferred
            self.n_salvage += by_salvage * dt
            idle -= by_salvage
            if idle <= 0:
                return
        blocked = self.remaining - ready - deferred
        if blocked > 0:
            by_deps = idle if idle < blocked else blocked
            self.n_deps += by_deps * dt
            idle -= by_deps
        if idle > 0:
            self.n_horizon += idle * dt

    def snapshot(self, t: int) -> tuple[int, ...]:
        """The cumulative figures of SNAPSHOT_FIELDS as of ``t``."""
        if self.last_t != t:
            self.touch(t)
        return read_snapshot(self)

    # -- events ----------------------------------------------------------------------------

    def limit_changed(self, t: int, old: int, new: int) -> None:
        self.touch(t)
        if self.limit_changes == 0 and old != self.limit:  # the record knows better than us
            self.initial_limit = self.limit = old
            self.limit_min, self.limit_max = min(self.limit_min, old), max(self.limit_max, old)
            self.bins.initial_limit = old
        self.limit_changes += 1
        self.limit = new
        self.limit_min = min(self.limit_min, new)
        self.limit_max = max(self.limit_max, new)
        self.bins.limit(t, new)
        if new <= 1 and self.floor_since is None:
            self.floor_since = t
            self.floor_mark = (self.floor_attempts, self.floor_rate_limited)
        elif new > 1 and self.floor_since is not None:
            self.close_floor_stretch(t)

    def close_floor_stretch(self, t: int) -> None:
        """Ends the current stretch at the floor (at ``t``); keeps the longest one."""
        if self.floor_since is None:
            return
        attempts = self.floor_attempts - self.floor_mark[0]
        limited = self.floor_rate_limited - self.floor_mark[1]
        length = t - self.floor_since
        if self.worst_floor is None or length > self.worst_floor[1]:
            self.worst_floor = (self.floor_since, length, attempts, limited)
        self.floor_since = None

    def cooldown_begins(self, t: int, cause: object = None) -> None:
        self.touch(t)
        self.quota_pauses += cause == "quota"
        if self.cooldown:  # the engine finishes one before the next; be tolerant anyway
            self.cooldown_ends(t)
        self.cooldown = True
        self.cooldown_started = t
        self.cooldown_count += 1

    def cooldown_ends(self, t: int) -> None:
        self.touch(t)
        if not self.cooldown:
            return
        self.cooldown = False
        length = t - self.cooldown_started
        if length > self.cooldown_longest_ns:
            self.cooldown_longest_ns = length

    def breaker(self, t: int, data: dict[str, object]) -> None:
        self.touch(t)
        state = data.get("state")
        self.breaker_open = state != "closed"
        if state == "open":
            self.breaker_openings += 1
        if len(self.breaker_events) < 20:  # bounded: a flapping breaker would be listed forever
            self.breaker_events.append(
                {
                    "t_s": t / 1e9,
                    "state": state,
                    "reason": data.get("reason"),
                    "consecutive_429": data.get("consecutive_429", 0),
                    "share_429": data.get("share_429", 0.0),
                    "time_at_floor_s": data.get("time_at_floor_s", 0.0),
                    "policy": data.get("policy", "fail_fast"),
                }
            )

    def resumed(self, t: int) -> None:
        """A later segment of the run: a new engine, with nothing on the wire or waiting, no
        cooldown, its breaker closed, not stopping, at its configured limit. What the previous
        segment left open (a kill ends nothing) is closed here, at the resume."""
        self.touch(t)
        self.cooldown_ends(t)
        self.in_flight = self.waits_open = 0
        self.open_waits.clear()
        self.open_attempts.clear()
        self.breaker_open = self.stopping = False
        if self.limit != self.cap:  # not a change the engine made: not counted as one
            self.limit = self.cap
            self.bins.limit(t, self.cap)
            if self.cap > 1:
                self.close_floor_stretch(t)

    def close(self, t: int) -> None:
        """The end of the window: integrate up to ``t`` and close open stretches (not intervals:
        an open cooldown or attempt stays open and is reported as such)."""
        self.touch(t)
        if self.floor_since is not None:
            since = self.floor_since
            self.close_floor_stretch(t)
            self.floor_since = since  # still at the floor: the stretch is open

    @property
    def idle_parts(self) -> dict[str, int]:
        return {
            "cooldown": self.w_cooldown,
            "breaker": self.w_breaker,
            "shutdown": self.w_shutdown,
            "limit": self.w_limit,
            "waiters_ahead": self.w_ahead,
            "dependencies": self.n_deps,
            "awaiting_salvage": self.n_salvage,
            "horizon": self.n_horizon,
        }
