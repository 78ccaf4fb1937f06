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
    gate = RequestGate(DOMAIN, AdmissionSettings(**settings), Emitter(EventBus([sink]), clock))
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


def test_trips_on_consecutive_429s_only_at_the_floor() -> None:
    breaker = Breaker(threshold_429=3, no_success_s=20.0, policy="fail_fast")
    for _ in range(5):
        breaker.record("rate_limited", 1.0, 2.0)
    assert breaker.trip_reason(1.0) is None  # limit still above 1
    breaker.note_limit(1, 1.0)
    assert breaker.trip_reason(1.0) == "consecutive_429"
    breaker.record("ok", 2.0, None)
    assert breaker.consecutive_429 == 0 and breaker.trip_reason(2.0) is None


def test_time_trigger_counts_from_the_floor_or_the_first_429_whichever_is_later() -> None:
    breaker = Breaker(threshold_429=100, no_success_s=20.0, policy="fail_fast")
    breaker.note_limit(1, 0.0)  # e.g. max_parallel 1: at the floor from the start
    assert breaker.no_success_deadline() is None  # idle, nothing refused: cannot trip
    breaker.record("rate_limited", 50.0, None)
    assert breaker.no_success_deadline() == 70.0  # not 20: the idle time does not count
    assert breaker.trip_reason(69.9) is None
    assert breaker.trip_reason(70.0) == "no_success_at_floor"
    breaker.record("server_error", 60.0, None)  # not a success: the clock keeps running
    assert breaker.no_success_deadline() == 70.0


def test_recent_429_share_uses_a_bounded_window() -> None:
    breaker = Breaker(threshold_429=8, no_success_s=20.0, policy="wait")
    for _ in range(100):
        breaker.record("ok", 0.0, None)
    for _ in range(25):
        breaker.record("rate_limited", 0.0, None)
    breaker.record("cancelled", 0.0, None)  # says nothing about the endpoint
    assert breaker.share_429 == 0.5


# -- the gate: fail_fast ------------------------------------------------------------------------


def test_fail_fast_opens_on_consecutive_429s_and_refuses_everyone() -> None:
    async def scenario() -> None:
        gate, clock, sink, opened = make_gate(max_parallel=1, breaker_consecutive_429=3)
        rate_limit_once(gate, clock, 1, 1.0)
        rate_limit_once(gate, clock, 2, 1.0)
        permit = gate.try_acquire(3, 1)
        assert permit is not None
        waiter = asyncio.create_task(
            gate.acquire(request_id=4, attempt=1, task_id="c:4", lease_id=4)
        )
        await settle()
        gate.release(permit, outcome="rate_limited", retry_after_s=1.5)
        await settle()
        (event,) = opened
        assert (event.state, event.reason, event.policy) == ("open", "consecutive_429", "fail_fast")
        assert (event.consecutive_429, event.share_429, event.last_retry_after_s) == (3, 1.0, 1.5)
        assert event.time_at_floor_s == 2.0  # max_parallel 1: at the floor since the first 429
        assert isinstance(waiter.exception(), BreakerOpen)
        assert gate.refusing and gate.available() == 0 and gate.try_acquire(5, 1) is None
        clock.advance(100.0)  # stays open: fail_fast never probes
        with pytest.raises(BreakerOpen) as refused:
            await gate.acquire(request_id=6, attempt=1, task_id="c:6", lease_id=6)
        assert refused.value.kind == "breaker_open" and refused.value.domain == DOMAIN
        outcomes = [e.outcome for e in sink.of_kind("wait_finished")]
        assert outcomes == ["breaker_open", "breaker_open"]
        assert states(sink) == [("open", "consecutive_429")]

    asyncio.run(scenario())


def test_the_time_trigger_fires_with_no_traffic() -> None:
    gate, clock, sink, opened = make_gate(
        max_parallel=1, breaker_consecutive_429=100, breaker_no_success_s=20.0
    )
    clock.advance(30.0)  # idle time at the floor (max 1) before the trouble does not count
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=5.0)
    clock.advance(19.9)
    assert opened == []
    clock.advance(0.1)
    (event,) = opened
    assert (event.reason, event.t_ns, event.time_at_floor_s) == ("no_success_at_floor", 50e9, 50.0)
    assert clock.pending_timers == 0
    assert states(sink) == [("open", "no_success_at_floor")]


def test_the_time_trigger_opens_even_when_timers_fire_early() -> None:
    class EarlyClock(FakeClock):
        def call_later(self, delay: float, callback: Any) -> Any:
            return super().call_later(max(0.0, delay - 1e-6), callback)

    clock, opened = EarlyClock(), []
    gate = RequestGate(
        DOMAIN,
        AdmissionSettings(max_parallel=1, breaker_consecutive_429=100),
        Emitter(EventBus([]), clock),
    )
    gate.on_breaker_open = opened.append
    rate_limit_once(gate, clock, 1, 5.0)
    clock.advance(15.0)  # one early firing at t ≈ 20 − 1 µs must open it, not re-arm and spin
    assert [e.reason for e in opened] == ["no_success_at_floor"]
    assert clock.pending_timers == 0


def test_a_success_restarts_the_time_trigger() -> None:
    gate, clock, _, opened = make_gate(
        max_parallel=1, breaker_consecutive_429=100, breaker_no_success_s=20.0
    )
    rate_limit_once(gate, clock, 1, 5.0)  # t = 0 → 5
    clock.advance(10.0)
    permit = gate.try_acquire(2, 1)
    assert permit is not None
    gate.release(permit, outcome="ok")  # t = 15
    clock.advance(2.0)
    rate_limit_once(gate, clock, 3, 5.0)  # streak restarts at t = 17
    clock.advance(14.9)  # t = 36.9
    assert opened == []
    clock.advance(0.1)
    assert len(opened) == 1 and opened[0].t_ns == 37e9


def test_many_429s_above_the_floor_do_not_open() -> None:
    gate, _, sink, opened = make_gate(max_parallel=16, breaker_consecutive_429=8)
    wave = [gate.try_acquire(i, 1) for i in range(16)]
    for permit in wave:
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=1.0)
    assert gate.statistics().consecutive_429 == 16
    assert gate.limit == 12 and opened == [] and sink.of_kind("breaker") == []


# -- the gate: wait policy -----------------------------------------------------------------------


def test_wait_policy_probes_half_open_and_closes_on_success() -> None:
    gate, clock, sink, opened = make_gate(
        max_parallel=2, breaker_consecutive_429=2, breaker_policy="wait", successes_per_increase=2
    )
    rate_limit_once(gate, clock, 1, 3.0)  # 2 → 1
    permit = gate.try_acquire(2, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=3.0)
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
    for request_id in (6, 7):  # AIMD climbs again from the floor
        permit = gate.try_acquire(request_id, 1)
        assert permit is not None
        gate.release(permit, outcome="ok")
    assert gate.limit == 2
    assert states(sink) == [
        ("open", "consecutive_429"),
        ("half_open", "cooldown_ended"),
        ("open", "probe_rate_limited"),
        ("half_open", "cooldown_ended"),
        ("closed", "probe_succeeded"),
    ]
    assert all(e.policy == "wait" for e in sink.of_kind("breaker"))


def test_wait_policy_never_raises_and_admits_a_waiter_as_the_probe() -> None:
    async def scenario() -> None:
        gate, clock, sink, _ = make_gate(
            max_parallel=1, breaker_consecutive_429=1, breaker_policy="wait"
        )
        rate_limit_once(gate, clock, 1, 0.0)  # Retry-After 0: open, but no cooldown to wait
        assert gate.breaker_state == "open"
        (probe_cooldown,) = sink.of_kind("cooldown_started")
        assert (probe_cooldown.cause, probe_cooldown.duration_s) == ("probe", 2.0)
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


def run_s1(**settings: Any) -> tuple[SimulatedEndpoint, list[BreakerChanged], ListSink]:
    """S1: 9 of every 10 requests (by arrival) get 429 with Retry-After 5; max 4 parallel."""
    gate, clock, sink, opened = make_gate(max_parallel=4, **settings)
    arrivals = itertools.count(1)

    def decide(now: float, in_flight: int) -> float | None:
        return None if next(arrivals) % 10 == 0 else 5.0

    endpoint = SimulatedEndpoint(gate, clock, decide, latency_s=0.01)
    while not opened and clock.now() < 60.0:
        endpoint.step(0.05)
    return endpoint, opened, sink


def test_s1_saturated_endpoint_opens_the_breaker_well_inside_30_s() -> None:
    endpoint, opened, sink = run_s1()
    (event,) = opened
    assert event.t_ns <= 11e9  # waves 4 → 3 → 2 → 1 at t ≈ 0, 5, 10
    assert event.reason == "consecutive_429" and event.consecutive_429 >= 8
    assert event.share_429 >= 0.8
    assert [(e.old, e.new) for e in sink.of_kind("limit_changed")] == [(4, 3), (3, 2), (2, 1)]
    assert endpoint.gate.refusing


def test_s1_with_the_count_trigger_disabled_still_opens_on_time() -> None:
    _, opened, _ = run_s1(breaker_consecutive_429=1000)
    (event,) = opened
    assert event.reason == "no_success_at_floor"
    # Floor at t ≈ 10; the 10th arrival succeeds at t ≈ 15, then 20 s without a success.
    assert 30e9 <= event.t_ns <= 36e9


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
