"""The circuit breaker: pure trip rules, the gate's open/half-open/closed transitions, and the
SCENARIOS S1 (saturated) and S3 (cold endpoint) traces that prove the defaults are right."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Any

import pytest

from ddscope.engine.admission.breaker import Breaker
from ddscope.engine.admission.gate import AdmissionSettings, Permit, RequestGate
from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.errors import BreakerOpen
from ddscope.events import BreakerChanged, EventBus, ListSink, event_adapter

DOMAIN = "prov/model"


def make_gate(**settings: Any) -> tuple[RequestGate, FakeClock, ListSink, list[BreakerChanged]]:
    sink = ListSink()
    clock = FakeClock()
    gate = RequestGate(DOMAIN, AdmissionSettings.of(**settings), Emitter(EventBus([sink]), clock))
    opened: list[BreakerChanged] = []
    gate.on_breaker_open = opened.append
    return gate, clock, sink, opened


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def rate_limit_once(
    gate: RequestGate, clock: FakeClock, request_id: int, retry_after: float
) -> None:
    """One attempt that gets a 429, then the clock runs past its cooldown."""
    permit = gate.try_acquire(request_id, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=retry_after)
    clock.advance(retry_after)


def states(sink: ListSink) -> list[tuple[str, str]]:
    return [(e.state, e.reason) for e in sink.of_kind("breaker")]


# -- the pure rules -------------------------------------------------------------------------


def test_trips_only_after_a_whole_window_of_pressure() -> None:
    breaker = Breaker(window_s=20.0, min_attempts=6, refused_share=0.8, policy="fail_fast")
    for t in range(0, 20, 2):  # one refusal every 2 s from t = 0
        breaker.record("refused", float(t), 2.0)
        assert breaker.trip_reason(float(t)) is None  # a burst, however long its streak: no
    assert breaker.consecutive_429 == 10 and breaker.pressure_since == 0.0
    assert breaker.deadline() == 20.0
    assert breaker.trip_reason(19.9) is None
    assert breaker.trip_reason(20.0) == "sustained_429"


def test_enough_served_answers_end_the_pressure_and_restart_the_window() -> None:
    breaker = Breaker(window_s=20.0, min_attempts=6, refused_share=0.8, policy="fail_fast")
    for t in range(10):
        breaker.record("refused", float(t), 1.0)
    breaker.record("served", 10.0)
    assert breaker.pressure_since == 0.0  # 10 of 11 refused: still under pressure
    breaker.record("served", 10.1)
    breaker.record("served", 10.2)
    assert breaker.pressure_since is None  # 10 of 13 = 77 % < 80 %: the pressure ended
    for t in range(11, 33):
        breaker.record("refused", float(t), 1.0)
    # at t = 11 the share is 11 of 14 (79 %), at t = 12 it is 12 of 15: pressure again
    assert breaker.pressure_since == 12.0 and breaker.trip_reason(31.9) is None
    assert breaker.trip_reason(32.0) == "sustained_429"


def test_too_few_attempts_in_the_window_do_not_trip() -> None:
    breaker = Breaker(window_s=20.0, min_attempts=6, refused_share=0.8, policy="fail_fast")
    for t in (0.0, 8.0, 16.0, 24.0, 32.0):  # a long Retry-After: 1 attempt per 8 s
        breaker.record("refused", t, 8.0)
    assert breaker.trip_reason(32.0) is None  # 3 attempts in the last 20 s
    assert breaker.share(32.0)[:2] == (3, 3)


def test_quota_refusals_and_cancellations_are_no_evidence() -> None:
    breaker = Breaker(window_s=20.0, min_attempts=2, refused_share=0.8, policy="wait")
    for t in range(60):
        breaker.record("none", float(t))
    assert breaker.share(60.0) == (0, 0, 0.0) and breaker.deadline() is None


def test_the_window_is_bounded_and_slides() -> None:
    breaker = Breaker(window_s=20.0, min_attempts=6, refused_share=0.8, policy="wait")
    for i in range(10_000):
        breaker.record("served", i * 0.01)  # 100 s of traffic
    assert len(breaker.window._buckets) <= 17
    attempts, refused, share = breaker.share(100.0)
    assert 2000 <= attempts <= 2000 + 20 / 16 * 100 and refused == 0 and share == 0.0


# -- the gate: fail_fast ------------------------------------------------------------------------


def test_fail_fast_opens_on_sustained_refusals_and_refuses_everyone() -> None:
    async def scenario() -> None:
        gate, clock, sink, opened = make_gate(
            max_parallel=1, breaker_window_s=6.0, breaker_min_attempts=3
        )
        rate_limit_once(gate, clock, 1, 3.0)  # t = 0 → 3
        rate_limit_once(gate, clock, 2, 2.0)  # t = 3 → 5
        permit = gate.try_acquire(3, 1)
        assert permit is not None
        waiter = asyncio.create_task(
            gate.acquire(request_id=4, attempt=1, task_id="c:4", lease_id=4)
        )
        await settle()
        clock.advance(1.0)  # t = 6: a whole window of pressure, but only 2 attempts in it
        await settle()
        assert opened == [] and not waiter.done()
        gate.release(permit, outcome="rate_limited", retry_after_s=1.5)  # the third
        await settle()
        (event,) = opened
        assert (event.state, event.reason, event.policy) == ("open", "sustained_429", "fail_fast")
        assert (event.window_s, event.window_attempts, event.window_refused) == (6.0, 3, 3)
        assert (event.share_429, event.last_retry_after_s) == (1.0, 1.5)
        assert isinstance(waiter.exception(), BreakerOpen)
        assert gate.refusing and gate.available() == 0 and gate.try_acquire(5, 1) is None
        clock.advance(100.0)  # stays open: fail_fast never probes
        with pytest.raises(BreakerOpen) as refused:
            await gate.acquire(request_id=6, attempt=1, task_id="c:6", lease_id=6)
        assert refused.value.kind == "breaker_open" and refused.value.domain == DOMAIN
        assert "attempts refused over the last 6 s" in str(refused.value)
        outcomes = [e.outcome for e in sink.of_kind("wait_finished")]
        assert outcomes == ["breaker_open", "breaker_open"]
        assert states(sink) == [("open", "sustained_429")]

    asyncio.run(scenario())


def test_the_window_deadline_fires_with_no_traffic() -> None:
    gate, clock, sink, opened = make_gate(max_parallel=8, breaker_min_attempts=6)
    wave = [gate.try_acquire(i, 1) for i in range(8)]
    for permit in wave:
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=60.0)
    assert opened == []  # 8 consecutive 429s: a burst, not a verdict
    clock.advance(19.9)
    assert opened == []
    clock.advance(0.1)
    (event,) = opened
    assert (event.reason, event.t_ns, event.window_attempts) == ("sustained_429", 20e9, 8)
    assert states(sink) == [("open", "sustained_429")]


def test_the_deadline_opens_even_when_timers_fire_early() -> None:
    class EarlyClock(FakeClock):
        def call_later(self, delay: float, callback: Any) -> Any:
            return super().call_later(max(0.0, delay - 1e-6), callback)

    clock, opened = EarlyClock(), []
    gate = RequestGate(
        DOMAIN,
        AdmissionSettings.of(max_parallel=8, breaker_min_attempts=1),
        Emitter(EventBus([]), clock),
    )
    gate.on_breaker_open = opened.append
    rate_limit_once(gate, clock, 1, 50.0)
    clock.advance(15.0)  # one early firing at t ≈ 20 − 1 µs must open it, not re-arm and spin
    assert [e.reason for e in opened] == ["sustained_429"]
    assert clock.pending_timers == 0


def test_a_transient_burst_at_full_width_does_not_open() -> None:
    gate, clock, sink, opened = make_gate(max_parallel=16)
    wave = [gate.try_acquire(i, 1) for i in range(16)]
    for permit in wave:
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=1.0)
    assert gate.statistics().consecutive_429 == 16 and gate.limit == 12
    clock.advance(1.0)
    for request_id in range(100, 104):  # the endpoint recovered
        permit = gate.try_acquire(request_id, 1)
        assert permit is not None
        gate.release(permit, outcome="ok")
    clock.advance(60.0)
    assert opened == [] and sink.of_kind("breaker") == []


def test_a_503_with_retry_after_is_pushback_like_a_429() -> None:
    gate, _, sink, _ = make_gate(max_parallel=4)
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    gate.release(permit, outcome="server_error", retry_after_s=3.0)
    (cooldown,) = sink.of_kind("cooldown_started")
    assert (cooldown.cause, cooldown.duration_s) == ("rate_limited", 3.0)
    assert gate.limit == 3 and gate.statistics().recent_429_share == 1.0
    plain = gate.try_acquire(2, 1)
    assert plain is None  # cooling down
    gate2, _, sink2, _ = make_gate(max_parallel=4)
    permit = gate2.try_acquire(1, 1)
    assert permit is not None
    gate2.release(permit, outcome="server_error")  # no Retry-After: a broken endpoint
    assert sink2.of_kind("cooldown_started") == [] and gate2.limit == 4
    assert gate2.statistics().recent_429_share == 0.0


# -- the gate: wait policy -----------------------------------------------------------------------


def test_wait_policy_probes_half_open_and_closes_on_success() -> None:
    gate, clock, sink, opened = make_gate(
        max_parallel=2,
        breaker_window_s=3.0,
        breaker_min_attempts=2,
        breaker_policy="wait",
        aimd_successes_per_increase=2,
    )
    rate_limit_once(gate, clock, 1, 3.0)  # 2 → 1; t = 3: a window of pressure ...
    permit = gate.try_acquire(2, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=3.0)  # ... and 2 attempts
    assert [e.state for e in opened] == ["open"] and not gate.refusing
    assert gate.available() == 0
    clock.advance(3.0)  # cooldown over → half-open: exactly one probe
    assert gate.breaker_state == "half_open" and gate.available() == 1
    probe = gate.try_acquire(3, 1)
    assert probe is not None and gate.available() == 0 and gate.try_acquire(4, 1) is None
    gate.release(probe, outcome="rate_limited", retry_after_s=4.0)  # probe refused: open again
    assert gate.breaker_state == "open" and len(opened) == 2
    clock.advance(4.0)
    probe = gate.try_acquire(5, 1)
    assert probe is not None
    gate.release(probe, outcome="ok")
    assert gate.breaker_state == "closed" and gate.limit == 1
    assert gate.statistics().recent_429_share == 0.0  # closed: a fresh window
    for request_id in (6, 7):  # AIMD climbs again from the floor
        permit = gate.try_acquire(request_id, 1)
        assert permit is not None
        gate.release(permit, outcome="ok")
    assert gate.limit == 2
    assert states(sink) == [
        ("open", "sustained_429"),
        ("half_open", "cooldown_ended"),
        ("open", "probe_rate_limited"),
        ("half_open", "cooldown_ended"),
        ("closed", "probe_succeeded"),
    ]
    assert all(e.policy == "wait" for e in sink.of_kind("breaker"))


def test_wait_policy_never_raises_and_admits_a_waiter_as_the_probe() -> None:
    async def scenario() -> None:
        gate, clock, sink, _ = make_gate(
            max_parallel=1, breaker_window_s=0.3, breaker_min_attempts=1, breaker_policy="wait"
        )
        rate_limit_once(gate, clock, 1, 0.0)  # Retry-After 0: still the 0.25 s floor pause
        clock.advance(0.3)  # the window's deadline opens it, between cooldowns
        assert gate.breaker_state == "open"
        started = sink.of_kind("cooldown_started")
        assert [(c.cause, c.duration_s) for c in started] == [
            ("rate_limited", 0.25),
            ("probe", 2.0),  # the window ran out between cooldowns: pace the first probe
        ]
        waiter = asyncio.create_task(gate.acquire(request_id=2, attempt=1, task_id="c", lease_id=2))
        await settle()
        assert not waiter.done()
        clock.advance(2.0)
        await settle()
        assert waiter.result().request_id == 2 and gate.breaker_state == "half_open"

    asyncio.run(scenario())


# -- the scenario traces --------------------------------------------------------------------------


class SimulatedEndpoint:
    """Drives a gate against a simulated endpoint on a FakeClock, step by step.

    ``decide(now, in_flight)`` answers each arriving request: None = accepted (an answer ``ok``
    after ``latency_s``), or a Retry-After in seconds = a 429 answered after ``reject_s``.
    Demand is unlimited: every free slot is used, like a chain-3 run with many rows ready.
    """

    def __init__(self, gate: RequestGate, clock: FakeClock, decide: Any, latency_s: float) -> None:
        self.gate, self.clock, self.decide, self.latency_s = gate, clock, decide, latency_s
        self.reject_s = 0.005
        self.pending: list[tuple[float, int, Permit, float | None]] = []
        self.ids = itertools.count(1)
        self.in_flight = self.succeeded = self.rate_limited = 0

    def step(self, dt: float) -> None:
        self.clock.advance(dt)
        while self.pending and self.pending[0][0] <= self.clock.now():
            _, _, permit, retry_after = heapq.heappop(self.pending)
            if retry_after is None:
                self.in_flight -= 1
                self.succeeded += 1
                self.gate.release(permit, outcome="ok")
            else:
                self.rate_limited += 1
                self.gate.release(permit, outcome="rate_limited", retry_after_s=retry_after)
        while (permit := self.gate.try_acquire(next(self.ids), 1)) is not None:
            retry_after = self.decide(self.clock.now(), self.in_flight)
            if retry_after is None:
                self.in_flight += 1
            delay = self.latency_s if retry_after is None else self.reject_s
            heapq.heappush(
                self.pending, (self.clock.now() + delay, permit.request_id, permit, retry_after)
            )


def run_pattern(
    max_parallel: int, refused: Any, *, until_s: float = 90.0, **settings: Any
) -> tuple[SimulatedEndpoint, list[BreakerChanged], ListSink]:
    """``refused(arrival, now)`` → a Retry-After for a 429, or None to serve; unlimited demand."""
    gate, clock, sink, opened = make_gate(max_parallel=max_parallel, **settings)
    arrivals = itertools.count(0)

    def decide(now: float, in_flight: int) -> float | None:
        return refused(next(arrivals), now)  # type: ignore[no-any-return]

    endpoint = SimulatedEndpoint(gate, clock, decide, latency_s=0.05)
    while not opened and clock.now() < until_s:
        endpoint.step(0.05)
    return endpoint, opened, sink


def s1(arrival: int, now: float) -> float | None:
    """S1: 9 of every 10 requests (by arrival) get 429 with Retry-After 5."""
    return None if arrival % 10 == 9 else 5.0


@pytest.mark.parametrize("parallel", [4, 16, 32])
def test_s1_opens_one_window_after_the_first_refusal_at_any_width(parallel: int) -> None:
    endpoint, opened, _ = run_pattern(parallel, s1)
    (event,) = opened
    # The verdict takes the 20 s window plus at most one 5 s cooldown, at 4 as at 32 parallel
    # (the old count-at-the-floor rule took 45.9 s at 16 parallel).
    assert 20e9 <= event.t_ns <= 26e9
    assert event.reason == "sustained_429" and event.share_429 >= 0.8
    assert event.window_attempts is not None and event.window_attempts >= 6
    assert endpoint.gate.refusing


def test_an_8_s_outage_at_the_start_never_opens() -> None:
    endpoint, opened, _ = run_pattern(4, lambda i, now: 1.0 if now < 8.0 else None, until_s=40.0)
    assert opened == [] and endpoint.rate_limited >= 8 and endpoint.succeeded > 100


def test_a_15_s_outage_in_the_middle_never_opens() -> None:
    endpoint, opened, _ = run_pattern(
        4, lambda i, now: 1.0 if 5.0 <= now < 20.0 else None, until_s=50.0
    )
    assert opened == [] and endpoint.rate_limited >= 15


def test_a_retry_after_0_burst_is_paced_and_never_opens() -> None:
    endpoint, opened, sink = run_pattern(4, lambda i, now: 0.0 if now < 0.5 else None, until_s=5.0)
    assert opened == []
    cooldowns = sink.of_kind("cooldown_started")
    assert cooldowns and all(c.duration_s == 0.25 for c in cooldowns)
    assert endpoint.rate_limited <= 4 * len(cooldowns)  # one wave per floor pause, not a spin


def test_a_70_percent_refusal_rate_is_degraded_but_never_saturated() -> None:
    endpoint, opened, _ = run_pattern(8, lambda i, now: 2.0 if i % 10 < 7 else None, until_s=200.0)
    assert opened == [] and endpoint.succeeded >= 20


def run_s3(ramp_s: float) -> tuple[SimulatedEndpoint, ListSink, list[BreakerChanged]]:
    """S3: capacity climbs 1 → 16 over 5 s from the first request; beyond it, 429 with
    Retry-After 1. Max 16 parallel; 1,200 requests (400 rows × 3 LLM columns)."""
    gate, clock, sink, opened = make_gate(max_parallel=16, ramp_s=ramp_s)
    first_request_at: list[float] = []

    def decide(now: float, in_flight: int) -> float | None:
        first_request_at[:] = first_request_at or [now]
        capacity = 1 + math.floor(15 * min(1.0, (now - first_request_at[0]) / 5.0) + 1e-9)
        return None if in_flight < capacity else 1.0

    endpoint = SimulatedEndpoint(gate, clock, decide, latency_s=0.1)
    while endpoint.succeeded < 1200 and clock.now() < 120.0:
        endpoint.step(0.01)
    return endpoint, sink, opened


def test_s3_cold_endpoint_without_a_ramp_recovers_and_never_opens_the_breaker() -> None:
    endpoint, sink, opened = run_s3(ramp_s=0.0)
    assert endpoint.succeeded >= 1200
    assert endpoint.rate_limited > 2  # the burst happens, and is plainly in the record ...
    assert opened == [] and sink.of_kind("breaker") == []  # ... but it is not saturation
    limits = [e.new for e in sink.of_kind("limit_changed")]
    assert min(limits) > 1 and limits[-1] > min(limits)  # AIMD came down, then climbed back
    for event in sink.events:
        assert event_adapter.validate_json(event.model_dump_json()) == event


def test_s3_cold_endpoint_with_a_matched_ramp_sees_at_most_two_429s() -> None:
    endpoint, sink, opened = run_s3(ramp_s=5.0)
    assert endpoint.succeeded >= 1200
    assert endpoint.rate_limited <= 2
    assert opened == []
    ramp = [e.new for e in sink.of_kind("limit_changed") if e.reason == "ramp"]
    assert ramp == list(range(1, 17))  # the record shows the limit climbing step by step
