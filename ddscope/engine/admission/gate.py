"""Request admission: one gate per (provider, model) domain decides when a request may go out.

A :class:`RequestGate` ties together the domain's AIMD limit and startup ramp (``aimd.py``), its
429 cooldown (``cooldown.py``), the provider's quota headers (``quota.py``), its FIFO waiters
(``waiters.py``) and its circuit breaker (``breaker.py``); settings, permits and snapshots are in
``types.py``. Modelled on trio's
``CapacityLimiter``: :meth:`RequestGate.try_acquire` holds all the logic and never blocks;
:meth:`RequestGate.acquire` only waits on it. Lowering the limit never pre-empts admitted
requests, it only stops new admissions until enough of them are released.

Waiters are woken by events — a release, a cooldown's end, a limit increase, a ramp step, the
breaker going half-open — never by polling. Every timer (cooldown, ramp step, acquire timeout,
breaker time trigger) goes through the emitter's clock, so ``FakeClock`` drives them in tests.

Every transition is an event: wait started/finished, cooldown started/finished, limit changed,
breaker open/half-open/closed. The scheduler emits the attempts and reads :meth:`statistics`.

Several processes (``--admission redis://…``): ``admission/shared/gate.py`` subclasses this gate,
so both have one interface and one AIMD/breaker/cooldown logic; the subclass keeps the slots,
limit, cooldown-until and breaker state in Redis and relies on ``_admit``, ``_apply``,
``_cooldown``, ``_set_breaker``, ``_open_breaker``, ``_breaker_open_error``, ``_timeout_error``
and ``_aimd`` (replaced by a subclass that can follow the shared limit) — its tests
(``tests/test_shared_admission.py``) say when a change here breaks it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from types import EllipsisType
from typing import Any

from ddscope import events
from ddscope.engine.admission.aimd import AimdLimit, LimitChange
from ddscope.engine.admission.breaker import Breaker, evidence_of, is_pushback
from ddscope.engine.admission.cooldown import DomainCooldown
from ddscope.engine.admission.deadline_timer import DeadlineTimer
from ddscope.engine.admission.quota import DomainQuota, RateLimitHeaders
from ddscope.engine.admission.types import AdmissionSettings, GateStatistics, Permit
from ddscope.engine.admission.waiters import WaiterQueue
from ddscope.engine.emitter import Emitter
from ddscope.errors import AdmissionTimeout, BreakerOpen, ConfigError

__all__ = ["AdmissionSettings", "GateStatistics", "Permit", "RequestAdmission", "RequestGate"]


class RequestGate:
    """Request admission for one domain. Single event loop; not thread-safe (like asyncio)."""

    def __init__(self, domain: str, settings: AdmissionSettings, emitter: Emitter) -> None:
        self.domain = domain
        self.settings = settings
        self.on_breaker_open: Callable[[events.BreakerChanged], None] | None = None
        self._emitter = emitter
        self._clock = emitter.clock
        run = settings.run
        self._aimd = AimdLimit(settings.aimd_settings())
        self._breaker = Breaker(
            window_s=run.breaker_window_s,
            min_attempts=run.breaker_min_attempts,
            refused_share=run.breaker_refused_share,
            policy=run.breaker_policy,
        )
        self._quota = DomainQuota()
        self._awaiting_reset = False  # a quota pause runs until the provider's stated reset
        # Invariant: every key here belongs to exactly one unreleased Permit of this gate.
        self._in_flight: set[tuple[int, int]] = set()
        self._probe: tuple[int, int] | None = None  # the half-open probe's (request_id, attempt)
        self._waiters: WaiterQueue[Permit] = WaiterQueue(self._clock, on_orphan=self._orphaned)
        self._cooldown = DomainCooldown(
            domain,
            emitter,
            default_s=run.default_cooldown_s,
            min_s=run.min_cooldown_s,
            max_s=run.max_cooldown_s,
            on_end=self._cooldown_ended,
        )
        self._ramp_timer = DeadlineTimer(self._clock, self._ramp_step_due)
        self._breaker_timer = DeadlineTimer(self._clock, self._breaker_deadline_due)
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._ramp_announced = False
        self._breaker.note_limit(self._aimd.limit, self._clock.now())  # max 1 or a ramp: floor

    # -- reading ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The AIMD limit (not lowered by a cooldown or an open breaker: see :meth:`available`)."""
        return self._aimd.limit

    @property
    def breaker_state(self) -> events.BreakerState:
        return self._breaker.state

    @property
    def refusing(self) -> bool:
        """True once the breaker opened under ``fail_fast``: nothing will be admitted again."""
        return self._breaker.state == "open" and self.settings.breaker_policy == "fail_fast"

    def available(self) -> int:
        """How many requests could be admitted right now (0 in cooldown or while open)."""
        if self._closed or self._breaker.state == "open" or self._cooldown.active:
            return 0
        room = max(0, self._aimd.limit - len(self._in_flight))
        if self._breaker.state == "half_open":
            return 0 if self._probe is not None else min(1, room)
        budget = self._quota.budget()
        if budget is not None and budget <= 0:
            # Spent (or about to be): wait for the answers in flight; with none left, probe one
            # at a time (a per-minute window with no stated reset, or answers with no headers).
            return min(1, room) if not self._in_flight else 0
        return room if budget is None else min(room, budget)

    def is_quota_refusal(self, ratelimit: RateLimitHeaders | None) -> bool:
        """Whether a 429 with these headers, answered now, is quota exhaustion (not saturation)."""
        return self._quota.refuses_as_quota(ratelimit)

    def statistics(self) -> GateStatistics:
        now = self._clock.now()
        return GateStatistics(
            domain=self.domain,
            limit=self._aimd.limit,
            max_parallel=self.settings.max_parallel,
            in_flight=len(self._in_flight),
            waiters=len(self._waiters),
            cooldown_remaining_s=self._cooldown.remaining(now),
            recent_429_share=self._breaker.share(now)[2],
            breaker=self._breaker.state,
            at_floor=self._aimd.limit == 1,
            consecutive_429=self._breaker.consecutive_429,
            time_at_floor_s=self._breaker.time_at_floor(now),
            quota_exhausted=self._quota.exhausted,
            quota_budget=self._quota.budget(),
        )

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs synchronously whenever capacity may have grown."""
        self._listeners.append(callback)

    # -- admission --------------------------------------------------------------------------

    def try_acquire(self, request_id: int, attempt: int) -> Permit | None:
        """A permit if one is free now and nobody queued first (FIFO: no barging), else None.

        Returns None (never raises) when the breaker is open; check :attr:`refusing`.
        """
        if self._closed:
            return None
        self._announce_ramp()
        self._advance_ramp()
        if self._waiters or self.available() <= 0:
            return None
        return self._admit((request_id, attempt))

    async def acquire(
        self,
        *,
        request_id: int,
        attempt: int,
        task_id: str,
        lease_id: int,
        timeout_s: float | EllipsisType | None = ...,
    ) -> Permit:
        """Waits for a permit (FIFO). Emits WaitStarted and one WaitFinished.

        Raises AdmissionTimeout after ``timeout_s`` (default ``settings.acquire_timeout_s``;
        None = no limit), BreakerOpen when the breaker is open under ``fail_fast``, and re-raises
        cancellation (also used when the gate is closed while waiting).
        """
        timeout = self.settings.acquire_timeout_s if timeout_s is ... else timeout_s
        ids = {"request_id": request_id, "attempt": attempt, "task_id": task_id}
        return await self._recorded_wait(
            self._wait_for_permit(request_id, attempt, timeout), ids, lease_id
        )

    async def _recorded_wait(
        self, wait: Coroutine[Any, Any, Permit], ids: dict[str, Any], lease_id: int
    ) -> Permit:
        """Awaits ``wait`` between a WaitStarted and exactly one WaitFinished with its outcome
        (admitted, timeout, breaker_open, or cancelled for anything else). Shared by the
        local and the Redis-backed gate."""
        t_ns = self._emitter.t_ns
        self._emitter.emit(
            events.WaitStarted(t_ns=t_ns(), **ids, lease_id=lease_id, domain=self.domain)
        )
        outcome: events.WaitOutcome = "cancelled"
        try:
            permit = await wait
            outcome = "admitted"
            return permit
        except (BreakerOpen, AdmissionTimeout) as exc:
            outcome = "breaker_open" if isinstance(exc, BreakerOpen) else "timeout"
            raise
        finally:
            self._emitter.emit(
                events.WaitFinished(t_ns=t_ns(), **ids, domain=self.domain, outcome=outcome)
            )

    async def _wait_for_permit(
        self, request_id: int, attempt: int, timeout: float | None
    ) -> Permit:
        if self.refusing:
            raise self._breaker_open_error()
        permit = self.try_acquire(request_id, attempt)
        if permit is not None:
            return permit
        if self._closed:
            raise asyncio.CancelledError(f"request gate {self.domain} is closed")
        return await self._waiters.wait(
            (request_id, attempt), timeout, lambda: self._timeout_error(timeout)
        )

    def _timeout_error(self, timeout: float | None) -> AdmissionTimeout:
        return AdmissionTimeout(
            f"{self.domain}: no request slot within {timeout:g} s (local admission timeout)"
        )

    def _orphaned(self, permit: Permit) -> None:
        self.release(permit, outcome="cancelled")

    def _admit(self, key: tuple[int, int]) -> Permit:
        request_id, attempt = key
        if key in self._in_flight:
            raise ValueError(f"request {request_id} attempt {attempt} already holds a permit")
        self._in_flight.add(key)
        if self._breaker.state == "half_open":
            self._probe = key
        now = self._clock.now()
        return Permit(
            self.domain, request_id, attempt, self._aimd.epoch, now, self._quota.admitted()
        )

    def _pump(self) -> None:
        """Grants permits to queued waiters, in order, while there is room."""
        self._waiters.grant(lambda: self.available() > 0, self._admit)

    def _capacity_may_have_grown(self) -> None:
        if self._closed:
            return
        self._pump()
        if self.available() > 0:
            for listener in list(self._listeners):
                listener()

    # -- outcomes ---------------------------------------------------------------------------

    def release(
        self,
        permit: Permit,
        *,
        outcome: events.AttemptOutcome,
        retry_after_s: float | None = None,
        ratelimit: RateLimitHeaders | None = None,
    ) -> None:
        """Gives a permit back with its attempt's outcome, the answer's Retry-After (parsed) and
        quota headers. A 503 with Retry-After is pushback like a 429."""
        key = (permit.request_id, permit.attempt)
        if permit.domain != self.domain or key not in self._in_flight:
            raise ValueError(f"{self.domain}: permit {key} is not held (released twice?)")
        self._in_flight.remove(key)
        was_probe = key == self._probe
        if was_probe:
            self._probe = None
        if self._closed:
            return  # the run is over: free the slot, record nothing more
        now = self._clock.now()
        if outcome != "cancelled":
            self._begin_ramp(now)
        self._advance_ramp(wake=False)  # woken below, once the outcome is known
        pushback = is_pushback(outcome, retry_after_s)
        quota_refusal = pushback and self._quota.refuses_as_quota(ratelimit)
        newly_exhausted = self._quota.observe(permit.seq, ratelimit)
        self._breaker.record(evidence_of(outcome, pushback, quota_refusal), now, retry_after_s)
        if outcome == "ok":
            self._on_success(now, was_probe)
        elif quota_refusal:
            # The budget is spent: wait for it (no AIMD decrease, no breaker evidence).
            self._cooldown.start(
                retry_after_s, cause="quota", request_id=permit.request_id, attempt=permit.attempt
            )
        elif pushback:
            self._on_rate_limited(permit, now, retry_after_s, was_probe)
        # Other failures (5xx, timeouts, connection errors, bad bodies) only free the slot: they
        # say the endpoint is broken or slow, not that it is full, so shrinking the limit would
        # throttle a flaky-but-unloaded endpoint; the worker backs off and retries. "cancelled"
        # is our own doing and says nothing about the endpoint at all.
        if newly_exhausted and ratelimit is not None:
            self._pause_for_quota(ratelimit, permit)
        self._arm_breaker_timer()
        self._capacity_may_have_grown()

    def _pause_for_quota(self, ratelimit: RateLimitHeaders, permit: Permit) -> None:
        """A remaining count reached 0: pause until the stated reset (then assume a fresh
        budget); with no reset stated, :meth:`available` probes one request at a time."""
        reset_s = ratelimit.reset_s()
        if reset_s is None:
            return
        started = self._cooldown.start(
            reset_s,
            cause="quota",
            request_id=permit.request_id,
            attempt=permit.attempt,
            until_reset=True,
        )
        self._awaiting_reset = started or self._awaiting_reset
        if not started and not self._cooldown.active:
            self._quota.refreshed()  # the reset is already due

    def _on_success(self, now: float, was_probe: bool) -> None:
        if self._breaker.state != "closed" and self.settings.breaker_policy == "wait":
            # Limit stays at the floor; AIMD climbs again from there. The old refusals are no
            # evidence any more: the next verdict needs a fresh window of pressure.
            self._set_breaker("closed", "probe_succeeded" if was_probe else "success")
            self._breaker.forget()
        self._apply(self._aimd.on_success(now, cooling_down=self._cooldown.active))

    def _on_rate_limited(
        self, permit: Permit, now: float, retry_after_s: float | None, was_probe: bool
    ) -> None:
        self._cooldown.start(retry_after_s, request_id=permit.request_id, attempt=permit.attempt)
        self._apply(self._aimd.on_rate_limited(now, permit.epoch))
        if self._breaker.state == "half_open":
            self._open_breaker("probe_rate_limited" if was_probe else "rate_limited_half_open")
            return
        reason = self._breaker.trip_reason(now)
        if reason is not None:
            self._open_breaker(reason)

    def _apply(self, change: LimitChange | None) -> None:
        if change is None:
            return
        self._breaker.note_limit(change.new, self._clock.now())
        self._emitter.emit(
            events.LimitChanged(
                t_ns=self._emitter.t_ns(),
                domain=self.domain,
                old=change.old,
                new=change.new,
                reason=change.reason,
            )
        )
        if not self._aimd.ramping:
            self._ramp_timer.cancel()

    # -- ramp -------------------------------------------------------------------------------

    def _announce_ramp(self) -> None:
        """At the first admission: ``max → 1`` for consumers that assumed the configured max."""
        if self._aimd.ramping and not self._ramp_announced:
            self._ramp_announced = True
            self._apply(LimitChange(self.settings.max_parallel, self._aimd.limit, "ramp"))

    def _begin_ramp(self, now: float) -> None:
        """Starts the ramp clock at the endpoint's first answer, not at our first request: a cold
        endpoint's own ramp starts at its first request, which cannot be later than its first
        answer, so a ramp timed from there never runs ahead of the endpoint's."""
        if self._aimd.ramping and not self._aimd.ramp_started:
            self._aimd.begin_ramp(now)
            self._ramp_timer.set(self._aimd.next_ramp_step_at())

    def _advance_ramp(self, *, wake: bool = True, at: float | None = None) -> None:
        """Brings the ramp up to now (or to ``at``, the step boundary a timer was set for)."""
        now = self._clock.now()
        change = self._aimd.observe(now if at is None else max(now, at))
        if change is not None:
            self._apply(change)
            self._ramp_timer.set(None if self._closed else self._aimd.next_ramp_step_at())
            if wake:
                self._capacity_may_have_grown()

    def _ramp_step_due(self, step_at: float) -> None:
        self._advance_ramp(at=step_at)

    def _cooldown_ended(self) -> None:
        if self._awaiting_reset:
            self._awaiting_reset = False
            self._quota.refreshed()
        if self._breaker.state == "open" and self.settings.breaker_policy == "wait":
            self._set_breaker("half_open", "cooldown_ended")
        self._capacity_may_have_grown()

    # -- breaker ----------------------------------------------------------------------------

    def _arm_breaker_timer(self) -> None:
        """Keeps a timer at the end of the pressure window, so the verdict comes even with no
        traffic. A deadline already past is not re-armed: it was judged (too few attempts), and
        the next refusal is judged where it is recorded (``_on_rate_limited``)."""
        deadline = None if self._closed else self._breaker.deadline()
        if deadline is not None and deadline <= self._clock.now():
            deadline = None
        self._breaker_timer.set(deadline)

    def _breaker_deadline_due(self, deadline: float) -> None:
        reason = self._breaker.trip_reason(max(self._clock.now(), deadline))
        if reason is not None:
            self._open_breaker(reason)

    def _open_breaker(self, reason: str) -> None:
        event = self._set_breaker("open", reason)
        self._breaker_timer.cancel()  # only a closed breaker trips
        if self.settings.breaker_policy == "fail_fast":
            self._waiters.fail_all(self._breaker_open_error)
        elif not self._cooldown.active:
            # The time trigger can fire between cooldowns: pace the first probe anyway.
            self._cooldown.start(None, cause="probe")
        if self.on_breaker_open is not None:
            self.on_breaker_open(event)

    def _breaker_open_error(self) -> BreakerOpen:
        attempts, refused, _ = self._breaker.share(self._clock.now())
        return BreakerOpen(
            f"{self.domain}: circuit breaker open (endpoint saturated: {refused} of {attempts} "
            f"attempts refused over the last {self._breaker.window_s:g} s)",
            domain=self.domain,
        )

    def _set_breaker(self, state: events.BreakerState, reason: str) -> events.BreakerChanged:
        if state != "half_open":
            self._probe = None
        event = self._breaker.transition(
            state, reason, self.domain, now=self._clock.now(), t_ns=self._emitter.t_ns()
        )
        self._emitter.emit(event)
        return event

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Ends the gate: timers cancelled, an open cooldown finished, waiters cancelled (their
        acquire emits WaitFinished(cancelled) and raises CancelledError). Idempotent."""
        if self._closed:
            return
        self._cooldown.finish()
        self._closed = True
        self._ramp_timer.cancel()
        self._breaker_timer.cancel()
        self._waiters.cancel_all()


class RequestAdmission:
    """One :class:`RequestGate` per (provider, model) domain."""

    def __init__(self, settings: Mapping[str, AdmissionSettings], emitter: Emitter) -> None:
        self._gates = {domain: RequestGate(domain, s, emitter) for domain, s in settings.items()}

    def gate(self, domain: str) -> RequestGate:
        try:
            return self._gates[domain]
        except KeyError:
            known = ", ".join(sorted(self._gates)) or "none"
            raise ConfigError(f"unknown request domain {domain!r} (known: {known})") from None

    def gates(self) -> list[RequestGate]:
        return list(self._gates.values())

    def statistics(self) -> list[GateStatistics]:
        return [gate.statistics() for gate in self._gates.values()]

    def close(self) -> None:
        for gate in self._gates.values():
            gate.close()
