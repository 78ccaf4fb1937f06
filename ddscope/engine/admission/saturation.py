"""How long a ``breaker_policy: wait`` run has waited on each saturated domain, and when it stops.

Saturated is the gate's own notion: the domain's circuit breaker is open or half-open, so no
request has got through since it opened. :class:`SaturationClock` adds that time up per domain
(pure, time passed in): a success closes the breaker and stops the clock, the next opening
resumes it, so ``breaker_max_wait_s`` is a total over the run, not per episode.

:class:`SaturationWatch` wires the clock to the run: the scheduler tells it when a breaker may
have changed (it opened, or an attempt finished — only a finished attempt can close one); it
keeps one timer per domain at the moment the total would reach ``breaker_max_wait_s``, and then
asks the run to stop with reason ``endpoint_saturated`` and a sentence that says how long it
waited. If no row waits on the domain at that moment, nothing is stopped: the domain's next
breaker event (a probe for new work) re-arms the timer, already due.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ddscope import events
from ddscope.engine.admission.deadline_timer import DeadlineTimer
from ddscope.engine.admission.gate import RequestGate
from ddscope.engine.clock import Clock
from ddscope.engine.scheduling.shutdown import StopReason

_EPSILON_S = 1e-9


@dataclass(slots=True)
class _Domain:
    total_s: float = 0.0  # closed saturation intervals, added up
    since: float | None = None  # start of the open interval; None while not saturated


class SaturationClock:
    """Per domain, the total seconds it has been saturated (breaker open or half-open)."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s
        self._domains: dict[str, _Domain] = {}

    def observe(self, domain: str, breaker: events.BreakerState, now: float) -> None:
        """Follows the breaker's state: the clock runs while it is not closed."""
        state = self._domains.setdefault(domain, _Domain())
        if breaker != "closed" and state.since is None:
            state.since = now
        elif breaker == "closed" and state.since is not None:
            state.total_s += max(0.0, now - state.since)
            state.since = None

    def is_saturated(self, domain: str) -> bool:
        state = self._domains.get(domain)
        return state is not None and state.since is not None

    def waited(self, domain: str, now: float) -> float:
        state = self._domains.get(domain)
        if state is None:
            return 0.0
        running = 0.0 if state.since is None else max(0.0, now - state.since)
        return state.total_s + running

    def deadline(self, domain: str) -> float | None:
        """When the domain's wait runs out if it stays saturated; None while it is not."""
        state = self._domains.get(domain)
        if state is None or state.since is None:
            return None
        return state.since + self.max_wait_s - state.total_s

    def expired(self, domain: str, now: float) -> bool:
        # The tolerance: at its own deadline (since + max − total) the sum total + (now − since)
        # may round a hair below max_wait_s, and the timer would then never stop the run.
        waited = self.waited(domain, now)
        return self.is_saturated(domain) and waited >= self.max_wait_s - _EPSILON_S

    def summary(self, now: float) -> str | None:
        """``waited 12 s of 900 s on p/m`` for the domains saturated now (health notes)."""
        parts = [
            f"waited {seconds(self.waited(d, now))} s of {seconds(self.max_wait_s)} s on {d}"
            for d in sorted(self._domains)
            if self.is_saturated(d)
        ]
        return "; ".join(parts) or None


class SaturationWatch:
    """The run's saturation clock and its timers, for the domains under ``wait``."""

    def __init__(
        self,
        gates: Mapping[str, RequestGate],
        clock: Clock,
        max_wait_s: float,
        *,
        has_work: Callable[[str], bool],
        stop: Callable[[StopReason], None],
    ) -> None:
        self.clock = SaturationClock(max_wait_s)
        self._now = clock.now
        self._gates = {d: g for d, g in gates.items() if g.settings.breaker_policy == "wait"}
        self._has_work = has_work
        self._stop = stop
        self._timers = {
            domain: DeadlineTimer(clock, functools.partial(self._due, domain))
            for domain in self._gates
        }
        self._closed = False

    def follow(self, domain: str) -> None:
        """The domain's breaker may have changed: re-read it, re-aim the timer."""
        gate = self._gates.get(domain)
        if gate is None or self._closed:
            return
        self.clock.observe(domain, gate.breaker_state, self._now())
        self._timers[domain].set(self.clock.deadline(domain))

    def note(self) -> str | None:
        return self.clock.summary(self._now())

    def close(self) -> None:
        """Disarms every timer (the run is stopping or over). Idempotent."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()

    def _due(self, domain: str, deadline: float) -> None:
        now = max(self._now(), deadline)  # loop timers may fire a hair early
        if self._closed or not self.clock.expired(domain, now) or not self._has_work(domain):
            return
        self.close()
        message = saturated_message(domain, self.clock.waited(domain, now), self.clock.max_wait_s)
        self._stop(StopReason("endpoint_saturated", message, domain))


def seconds(value: float) -> str:
    """A duration for a sentence: ``900``, ``1.5``."""
    return f"{round(value, 1):g}"


def saturated_message(domain: str, waited_s: float, max_wait_s: float) -> str:
    """The shutdown sentence when a domain's wait ran out."""
    provider, model = events.split_domain(domain)
    return (
        f"provider {provider!r} model {model!r} is still saturated: the run waited "
        f"{seconds(waited_s)} s in total with its circuit breaker open (breaker_policy wait) "
        f"and gave up at breaker_max_wait_s {seconds(max_wait_s)} s; completed rows kept"
    )
