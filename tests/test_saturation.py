"""The saturation clock: time with the breaker open or half-open, added up per domain (pure)."""

from __future__ import annotations

from ddscope.engine.admission.gate import AdmissionSettings, RequestGate
from ddscope.engine.admission.saturation import SaturationClock, SaturationWatch, saturated_message
from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.engine.scheduling.shutdown import StopReason
from ddscope.events import AttemptOutcome, EventBus, ListSink


def test_the_clock_adds_up_saturated_intervals_and_skips_closed_ones():
    clock = SaturationClock(max_wait_s=10.0)
    assert clock.deadline("p/m") is None and clock.waited("p/m", 5.0) == 0.0
    clock.observe("p/m", "open", 1.0)
    clock.observe("p/m", "half_open", 2.0)  # still saturated: the interval goes on
    clock.observe("p/m", "open", 3.0)
    assert clock.deadline("p/m") == 11.0 and clock.waited("p/m", 4.0) == 3.0
    clock.observe("p/m", "closed", 5.0)  # 4 s counted
    assert clock.deadline("p/m") is None and clock.waited("p/m", 50.0) == 4.0
    assert not clock.expired("p/m", 50.0)  # not saturated now: nothing to give up on
    clock.observe("p/m", "open", 20.0)
    assert clock.deadline("p/m") == 26.0
    assert not clock.expired("p/m", 25.9) and clock.expired("p/m", 26.0)
    assert clock.waited("other/m", 26.0) == 0.0


def test_health_summary_and_shutdown_sentence_say_how_long_it_waited():
    clock = SaturationClock(max_wait_s=900.0)
    assert clock.summary(0.0) is None
    clock.observe("p/m", "open", 0.0)
    clock.observe("q/n", "open", 0.0)
    clock.observe("q/n", "closed", 1.0)
    assert clock.summary(12.34) == "waited 12.3 s of 900 s on p/m"
    message = saturated_message("p/m", 900.0, 900.0)
    assert "provider 'p' model 'm'" in message
    assert "waited 900 s in total" in message and "breaker_max_wait_s 900 s" in message


class _Run:
    """A real gate under ``wait`` with a watch on it, as the scheduler wires them."""

    def __init__(self, max_wait_s: float) -> None:
        self.clock = FakeClock()
        # A 1 ms window with one attempt: the breaker opens right after the first refusal.
        settings = AdmissionSettings.of(
            max_parallel=1, breaker_window_s=0.001, breaker_min_attempts=1, breaker_policy="wait"
        )
        self.gate = RequestGate("p/m", settings, Emitter(EventBus([ListSink()]), self.clock))
        self.work = True
        self.stops: list[StopReason] = []
        self.watch = SaturationWatch(
            {"p/m": self.gate},
            self.clock,
            max_wait_s,
            has_work=lambda domain: self.work,
            stop=self.stops.append,
        )
        self.gate.on_breaker_open = lambda event: self.watch.follow(event.domain)
        self.request_id = 0

    def attempt(self, outcome: AttemptOutcome) -> None:
        """One request (a probe once the breaker is half-open), then its cooldown passes."""
        self.request_id += 1
        permit = self.gate.try_acquire(self.request_id, 1)
        assert permit is not None
        self.gate.release(permit, outcome=outcome, retry_after_s=1.0)
        self.watch.follow("p/m")
        self.clock.advance(1.0)


def test_the_watch_stops_the_run_once_the_total_wait_runs_out():
    run = _Run(max_wait_s=3.0)
    run.attempt("rate_limited")  # opens at t=0
    run.attempt("ok")  # the probe at t=1 closes it: 1 s counted
    run.attempt("rate_limited")  # opens again at t=2: 2 s left, due at t=4
    run.clock.advance(0.9)
    assert run.stops == []
    run.clock.advance(0.2)
    [stop] = run.stops
    assert stop.reason == "endpoint_saturated" and stop.domain == "p/m"
    assert "waited 3 s in total" in stop.message


def test_with_nothing_waiting_on_the_domain_the_next_breaker_event_decides():
    run = _Run(max_wait_s=2.0)
    run.work = False
    run.attempt("rate_limited")  # opens at t=0
    run.clock.advance(5.0)
    assert run.stops == []  # due at t=2, but no row waits on the domain
    run.work = True
    run.attempt("rate_limited")  # new work: its probe is refused, the breaker opens again
    run.clock.advance(0.0)
    [stop] = run.stops
    assert "waited 6 s in total" in stop.message
