"""The request gate on a FakeClock: limits, cooldowns, ramp, FIFO waiters, timeouts, events."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from ddscope import events
from ddscope.engine.admission.gate import (
    AdmissionSettings,
    Permit,
    RequestAdmission,
    RequestGate,
)
from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.parts import ModelAlias, RunSettings
from ddscope.errors import AdmissionTimeout, ConfigError
from ddscope.events import EventBus, ListSink

DOMAIN = "prov/model"


def make_gate(**settings: Any) -> tuple[RequestGate, FakeClock, ListSink]:
    sink = ListSink()
    clock = FakeClock()
    gate = RequestGate(DOMAIN, AdmissionSettings.of(**settings), Emitter(EventBus([sink]), clock))
    return gate, clock, sink


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def acquire_task(gate: RequestGate, request_id: int, **kwargs: Any) -> asyncio.Task[Permit]:
    coro: Coroutine[Any, Any, Permit] = gate.acquire(
        request_id=request_id, attempt=1, task_id=f"col:{request_id}", lease_id=request_id, **kwargs
    )
    return asyncio.create_task(coro)


def assert_record_consistent(sink: ListSink) -> None:
    """Every event survives a JSON round trip, waits and cooldowns pair up in order."""
    for event in sink.events:
        assert events.event_adapter.validate_json(event.model_dump_json()) == event
    started = [(e.request_id, e.attempt) for e in sink.of_kind("wait_started")]
    finished = [(e.request_id, e.attempt) for e in sink.of_kind("wait_finished")]
    assert sorted(started) == sorted(finished)
    assert len(set(started)) == len(started)
    open_cooldown: int | None = None
    for event in sink.events:
        if event.kind == "cooldown_started":
            assert open_cooldown is None, "cooldowns of one domain never overlap"
            open_cooldown = event.cooldown_id
        elif event.kind == "cooldown_finished":
            assert event.cooldown_id == open_cooldown
            open_cooldown = None
    assert open_cooldown is None


def limit_trace(sink: ListSink) -> list[tuple[int, int, str]]:
    return [(e.old, e.new, e.reason) for e in sink.of_kind("limit_changed")]


# -- limits and slots -------------------------------------------------------------------------


def test_try_acquire_admits_up_to_the_limit() -> None:
    gate, _, _ = make_gate(max_parallel=3)
    permits = [gate.try_acquire(i, 1) for i in range(4)]
    assert [p is not None for p in permits] == [True, True, True, False]
    assert gate.available() == 0
    first = permits[0]
    assert first is not None and first.domain == DOMAIN and first.epoch == 0
    gate.release(first, outcome="ok")
    assert gate.available() == 1
    with pytest.raises(ValueError, match="released twice"):
        gate.release(first, outcome="ok")


def test_other_failures_free_the_slot_without_touching_aimd() -> None:
    gate, _, sink = make_gate(max_parallel=2)
    for outcome in ("server_error", "timeout", "connection_error", "bad_response", "cancelled"):
        permit = gate.try_acquire(1, 1)
        assert permit is not None
        gate.release(permit, outcome=outcome)
    assert gate.limit == 2 and gate.available() == 2
    assert sink.of_kind("cooldown_started") == [] and sink.of_kind("limit_changed") == []


def test_decrease_once_per_wave() -> None:
    gate, clock, sink = make_gate(max_parallel=8)
    wave = [gate.try_acquire(i, 1) for i in range(8)]
    for permit in wave:
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=1.0)
    assert limit_trace(sink) == [(8, 6, "decrease")]
    clock.advance(1.0)
    next_wave = gate.try_acquire(100, 1)
    assert next_wave is not None and next_wave.epoch == 1
    gate.release(next_wave, outcome="rate_limited", retry_after_s=1.0)
    assert limit_trace(sink)[-1] == (6, 4, "decrease")


def test_lowering_the_limit_never_preempts_admitted_requests() -> None:
    gate, clock, _ = make_gate(max_parallel=4)
    permits = [gate.try_acquire(i, 1) for i in range(4)]
    first, *rest = permits
    assert first is not None
    gate.release(first, outcome="rate_limited", retry_after_s=1.0)  # 4 → 3
    clock.advance(1.0)
    assert gate.limit == 3
    assert gate.statistics().in_flight == 3  # the other three keep their permits
    assert gate.try_acquire(10, 1) is None  # and no new one until one of them is released
    assert rest[0] is not None
    gate.release(rest[0], outcome="ok")
    assert gate.try_acquire(10, 1) is not None


def test_success_streak_raises_the_limit_but_not_during_cooldown() -> None:
    gate, clock, sink = make_gate(max_parallel=4, aimd_successes_per_increase=2)
    permits = [gate.try_acquire(i, 1) for i in range(4)]
    assert all(permits)
    gate.release(permits[0], outcome="rate_limited", retry_after_s=5.0)  # type: ignore[arg-type]
    gate.release(permits[1], outcome="ok")  # type: ignore[arg-type]
    gate.release(permits[2], outcome="ok")  # type: ignore[arg-type]
    assert gate.limit == 3  # two successes, but inside the cooldown
    clock.advance(5.0)
    for request_id in (20, 21):
        permit = gate.try_acquire(request_id, 1)
        assert permit is not None
        gate.release(permit, outcome="ok")
    assert limit_trace(sink) == [(4, 3, "decrease"), (3, 4, "increase")]


# -- cooldown -------------------------------------------------------------------------------


def cooldown_after_429(retry_after_s: float | None, **settings: Any) -> list[Any]:
    gate, _, sink = make_gate(max_parallel=2, **settings)
    permit = gate.try_acquire(7, 2)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=retry_after_s)
    return sink.of_kind("cooldown_started")


def test_cooldown_honours_retry_after_seconds() -> None:
    (started,) = cooldown_after_429(3.0)
    assert (started.duration_s, started.retry_after_s) == (3.0, 3.0)
    assert (started.request_id, started.attempt, started.cause) == (7, 2, "rate_limited")


def test_cooldown_honours_retry_after_from_an_http_date() -> None:
    # The model client turns "Retry-After: <HTTP-date>" into seconds from now (a float).
    (started,) = cooldown_after_429(12.4)
    assert started.duration_s == pytest.approx(12.4)


def test_cooldown_defaults_and_caps() -> None:
    assert cooldown_after_429(None)[0].duration_s == 2.0
    assert cooldown_after_429(None, default_cooldown_s=0.5)[0].duration_s == 0.5
    capped = cooldown_after_429(3600.0, max_cooldown_s=30.0)[0]
    assert (capped.duration_s, capped.retry_after_s) == (30.0, 3600.0)
    # "Retry-After: 0" (or an HTTP date already in the past) still pauses min_cooldown_s: a
    # burst of such 429s must not become a burst of retries.
    assert [c.duration_s for c in cooldown_after_429(0.0)] == [0.25]
    assert [c.duration_s for c in cooldown_after_429(-5.0, min_cooldown_s=0.1)] == [0.1]


def test_cooldown_blocks_admission_until_it_expires() -> None:
    gate, clock, sink = make_gate(max_parallel=4)
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=3.0)
    assert gate.available() == 0 and gate.try_acquire(2, 1) is None
    assert gate.statistics().cooldown_remaining_s == 3.0
    clock.advance(2.9)
    assert gate.try_acquire(2, 1) is None
    clock.advance(0.1)
    assert gate.statistics().cooldown_remaining_s == 0.0
    assert gate.try_acquire(2, 1) is not None
    assert [e.t_ns for e in sink.of_kind("cooldown_finished")] == [3_000_000_000]


def test_a_429_during_cooldown_extends_it_only_if_it_asks_for_longer() -> None:
    gate, clock, sink = make_gate(max_parallel=4)
    permits = [gate.try_acquire(i, 1) for i in range(3)]
    gate.release(permits[0], outcome="rate_limited", retry_after_s=5.0)  # type: ignore[arg-type]
    clock.advance(1.0)
    gate.release(permits[1], outcome="rate_limited", retry_after_s=2.0)  # type: ignore[arg-type]
    assert len(sink.of_kind("cooldown_started")) == 1
    clock.advance(1.0)
    gate.release(permits[2], outcome="rate_limited", retry_after_s=10.0)  # type: ignore[arg-type]
    starts = sink.of_kind("cooldown_started")
    assert [(e.t_ns, e.duration_s) for e in starts] == [(0, 5.0), (2_000_000_000, 10.0)]
    assert gate.statistics().cooldown_remaining_s == 10.0
    clock.advance(9.9)
    assert gate.available() == 0
    clock.advance(0.1)
    assert gate.available() == 3  # limit 4 → 3 once (one wave), nothing in flight
    assert_record_consistent(sink)


def test_cooldown_expiry_wakes_waiters() -> None:
    async def scenario() -> None:
        gate, clock, sink = make_gate(max_parallel=2)
        permit = gate.try_acquire(1, 1)
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=4.0)
        waiter = acquire_task(gate, 2)
        await settle()
        assert not waiter.done() and gate.statistics().waiters == 1
        clock.advance(4.0)
        await settle()
        assert waiter.done() and waiter.result().admitted_at == 4.0
        outcomes = [e.outcome for e in sink.of_kind("wait_finished")]
        assert outcomes == ["admitted"]
        assert_record_consistent(sink)

    asyncio.run(scenario())


# -- waiters ----------------------------------------------------------------------------------


def test_waiters_are_admitted_in_fifo_order_and_nobody_barges() -> None:
    async def scenario() -> None:
        gate, _, sink = make_gate(max_parallel=1)
        held = gate.try_acquire(0, 1)
        assert held is not None
        tasks = [acquire_task(gate, i) for i in (1, 2, 3)]
        await settle()
        order = []
        for _ in tasks:
            gate.release(held, outcome="ok")
            assert gate.try_acquire(99, 1) is None  # the queue goes first
            await settle()
            (held,) = [t.result() for t in tasks if t.done() and t.result().request_id not in order]
            order.append(held.request_id)
        assert order == [1, 2, 3]
        assert_record_consistent(sink)

    asyncio.run(scenario())


def test_acquire_timeout_raises_a_retryable_admission_timeout() -> None:
    async def scenario() -> None:
        gate, clock, sink = make_gate(max_parallel=1, acquire_timeout_s=5.0)
        assert gate.try_acquire(0, 1) is not None
        waiter = acquire_task(gate, 1)
        await settle()
        clock.advance(4.99)
        await settle()
        assert not waiter.done()
        clock.advance(0.01)
        await settle()
        error = waiter.exception()
        assert isinstance(error, AdmissionTimeout)
        assert error.kind == "admission_timeout" and error.retryable
        assert DOMAIN in str(error)
        assert gate.statistics().waiters == 0
        (finished,) = sink.of_kind("wait_finished")
        assert (finished.outcome, finished.t_ns) == ("timeout", 5_000_000_000)
        assert_record_consistent(sink)

    asyncio.run(scenario())


def test_acquire_timeout_can_be_overridden_or_disabled() -> None:
    async def scenario() -> None:
        gate, clock, _ = make_gate(max_parallel=1, acquire_timeout_s=5.0)
        held = gate.try_acquire(0, 1)
        assert held is not None
        short = acquire_task(gate, 1, timeout_s=1.0)
        forever = acquire_task(gate, 2, timeout_s=None)
        await settle()
        clock.advance(1000.0)
        await settle()
        assert isinstance(short.exception(), AdmissionTimeout)
        assert not forever.done()
        gate.release(held, outcome="ok")
        await settle()
        assert forever.result().request_id == 2

    asyncio.run(scenario())


def test_cancelled_acquire_leaves_the_queue_and_says_so() -> None:
    async def scenario() -> None:
        gate, clock, sink = make_gate(max_parallel=1)
        held = gate.try_acquire(0, 1)
        assert held is not None
        cancelled, behind = acquire_task(gate, 1), acquire_task(gate, 2)
        await settle()
        cancelled.cancel()
        await settle()
        assert cancelled.cancelled() and gate.statistics().waiters == 1
        gate.release(held, outcome="ok")
        await settle()
        assert behind.result().request_id == 2  # the cancelled waiter got nothing
        assert gate.statistics().in_flight == 1
        assert [e.outcome for e in sink.of_kind("wait_finished")] == ["cancelled", "admitted"]
        clock.advance(60.0)  # its timeout timer was cancelled: nothing more happens
        assert_record_consistent(sink)

    asyncio.run(scenario())


def test_cancellation_after_the_grant_never_leaks_the_slot() -> None:
    async def scenario() -> None:
        gate, _, sink = make_gate(max_parallel=1)
        held = gate.try_acquire(0, 1)
        assert held is not None
        waiter = acquire_task(gate, 1)
        await settle()
        gate.release(held, outcome="ok")  # grants the waiter's future ...
        waiter.cancel()  # ... but the task is cancelled before it runs again
        await settle()
        assert waiter.cancelled()
        assert gate.statistics().in_flight == 0 and gate.available() == 1
        assert [e.outcome for e in sink.of_kind("wait_finished")] == ["cancelled"]

    asyncio.run(scenario())


def test_listener_hears_when_capacity_grows() -> None:
    gate, clock, _ = make_gate(max_parallel=1)
    calls: list[int] = []
    gate.add_listener(lambda: calls.append(gate.available()))
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    gate.release(permit, outcome="rate_limited", retry_after_s=2.0)
    assert calls == []  # a 429 frees the slot but the cooldown leaves no room
    clock.advance(2.0)
    assert calls == [1]  # cooldown over
    permit = gate.try_acquire(2, 1)
    assert permit is not None
    gate.release(permit, outcome="ok")
    assert calls == [1, 1]


# -- startup ramp -----------------------------------------------------------------------------


def test_ramp_climbs_on_the_clock_and_wakes_waiters() -> None:
    async def scenario() -> None:
        gate, clock, sink = make_gate(max_parallel=5, ramp_s=4.0, acquire_timeout_s=None)
        first = gate.try_acquire(0, 1)
        assert first is not None and gate.limit == 1
        assert limit_trace(sink) == [(5, 1, "ramp")]  # announced at the first admission
        tasks = [acquire_task(gate, i) for i in range(1, 6)]
        clock.advance(10.0)  # no answer yet: the ramp clock has not started
        await settle()
        assert gate.limit == 1 and not any(t.done() for t in tasks)
        gate.release(first, outcome="ok")  # the endpoint's first answer starts the ramp clock
        await settle()
        assert sum(t.done() for t in tasks) == 1  # the freed slot, still at limit 1
        admitted_at = []
        for _ in range(4):
            clock.advance(1.0)
            await settle()
            admitted_at.append(sum(t.done() for t in tasks))
        assert admitted_at == [2, 3, 4, 5]
        assert limit_trace(sink) == [
            (5, 1, "ramp"),
            (1, 2, "ramp"),
            (2, 3, "ramp"),
            (3, 4, "ramp"),
            (4, 5, "ramp"),
        ]
        assert [e.t_ns for e in sink.of_kind("limit_changed")][-1] == 14_000_000_000
        assert clock.pending_timers == 0  # the ramp timer is gone once at the maximum

    asyncio.run(scenario())


def test_first_429_ends_the_ramp() -> None:
    gate, clock, sink = make_gate(max_parallel=9, ramp_s=8.0)
    first = gate.try_acquire(0, 1)
    assert first is not None
    gate.release(first, outcome="ok")
    clock.advance(4.0)  # ramp at 1 + ⌊8 · 4 / 8⌋ = 5
    permit = gate.try_acquire(1, 1)
    assert permit is not None and gate.limit == 5
    gate.release(permit, outcome="rate_limited", retry_after_s=1.0)
    assert limit_trace(sink)[-1] == (5, 3, "ramp_end")
    clock.advance(10.0)
    assert gate.limit == 3  # no more ramp steps
    assert_record_consistent(sink)


# -- lifecycle, statistics, the collection of gates -------------------------------------------


def test_close_finishes_the_cooldown_and_cancels_waiters() -> None:
    async def scenario() -> None:
        gate, clock, sink = make_gate(max_parallel=1)
        permit = gate.try_acquire(1, 1)
        assert permit is not None
        gate.release(permit, outcome="rate_limited", retry_after_s=30.0)
        waiter = acquire_task(gate, 2)
        await settle()
        gate.close()
        await settle()
        assert waiter.cancelled()
        assert clock.pending_timers == 0
        assert [e.kind for e in sink.events][-2:] == ["cooldown_finished", "wait_finished"]
        assert sink.of_kind("wait_finished")[0].outcome == "cancelled"
        assert_record_consistent(sink)
        gate.close()  # idempotent
        assert gate.try_acquire(3, 1) is None

    asyncio.run(scenario())


def test_statistics_snapshot_and_health_event() -> None:
    gate, clock, _ = make_gate(max_parallel=2)
    permits = [gate.try_acquire(i, 1) for i in range(2)]
    gate.release(permits[0], outcome="rate_limited", retry_after_s=3.0)  # type: ignore[arg-type]
    clock.advance(1.0)
    stats = gate.statistics()
    assert (stats.limit, stats.max_parallel, stats.in_flight, stats.waiters) == (1, 2, 1, 0)
    assert stats.cooldown_remaining_s == 2.0 and stats.at_floor
    assert (stats.recent_429_share, stats.consecutive_429, stats.time_at_floor_s) == (1.0, 1, 1.0)
    health = stats.to_event()
    assert isinstance(health, events.DomainHealth)
    assert (health.domain, health.limit, health.breaker) == (DOMAIN, 1, "closed")


def test_request_admission_holds_one_gate_per_domain() -> None:
    emitter = Emitter(EventBus([]), FakeClock())
    admission = RequestAdmission(
        {"a/x": AdmissionSettings.of(max_parallel=2), "b/y": AdmissionSettings.of(max_parallel=5)},
        emitter,
    )
    assert admission.gate("b/y").limit == 5
    assert [g.domain for g in admission.gates()] == ["a/x", "b/y"]
    assert [s.max_parallel for s in admission.statistics()] == [2, 5]
    with pytest.raises(ConfigError, match="c/z"):
        admission.gate("c/z")
    admission.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_parallel": 0}, "max_parallel_requests"),
        ({"max_parallel": "many"}, "max_parallel_requests"),
        ({"aimd_decrease_factor": 1.5}, "run.aimd_decrease_factor"),
        ({"aimd_successes_per_increase": 0}, "run.aimd_successes_per_increase"),
        ({"ramp_s": -1}, "ramp_s"),
        ({"default_cooldown_s": float("nan")}, "run.default_cooldown_s"),
        ({"max_cooldown_s": 0}, "run.max_cooldown_s"),
        ({"min_cooldown_s": 90.0}, "run.min_cooldown_s"),
        ({"acquire_timeout_s": 0}, "run.acquire_timeout_s"),
        ({"breaker_window_s": 0}, "run.breaker_window_s"),
        ({"breaker_min_attempts": 0}, "run.breaker_min_attempts"),
        ({"breaker_refused_share": 1.5}, "run.breaker_refused_share"),
        ({"breaker_policy": "retry"}, "run.breaker_policy"),
        ({"retry_backoff_base_s": 20.0}, "run.retry_backoff_base_s"),
        ({"breaker_consecutive_429": 8}, "run.breaker_consecutive_429: unknown field"),
    ],
)
def test_bad_settings_are_one_config_error_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        AdmissionSettings.of(**{"max_parallel": 4, **kwargs})


def test_admission_settings_hold_the_run_settings_not_a_copy() -> None:
    run = RunSettings(breaker_window_s=7.0)
    alias = ModelAlias(alias="w", provider="p", model="m", max_parallel_requests=3)
    settings = AdmissionSettings.for_alias(alias, run)
    assert settings.run is run and settings.max_parallel == 3
    assert settings.ramp_s == alias.ramp_s  # the alias's own default, not a second copy
    assert AdmissionSettings.of().run == RunSettings()


class EarlyClock(FakeClock):
    """Fires every timer a hair early, as asyncio's loop may (it rounds by clock resolution)."""

    def call_later(self, delay: float, callback: Any) -> Any:
        return super().call_later(max(0.0, delay - 1e-6), callback)


def test_ramp_steps_land_even_when_timers_fire_early() -> None:
    clock = EarlyClock()
    sink = ListSink()
    gate = RequestGate(
        DOMAIN, AdmissionSettings.of(max_parallel=16, ramp_s=5.0), Emitter(EventBus([sink]), clock)
    )
    first = gate.try_acquire(1, 1)
    assert first is not None
    gate.release(first, outcome="ok")
    for _ in range(60):  # bounded: 6 s of 0.1 s steps
        clock.advance(0.1)
    assert gate.limit == 16
    assert [e.new for e in sink.of_kind("limit_changed")] == list(range(1, 17))
    assert clock.pending_timers == 0
