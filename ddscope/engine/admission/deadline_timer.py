"""One clock timer aimed at a deadline that may move (a ramp step, the breaker's time trigger).

The callback receives the deadline the timer was set for, so it can judge the state *at* that
instant: loop timers may fire a hair early, and a callback that compared against ``now()`` and
re-armed for the last few nanoseconds would spin.
"""

from __future__ import annotations

from collections.abc import Callable

from ddscope.engine.clock import Clock, TimerHandle


class DeadlineTimer:
    def __init__(self, clock: Clock, callback: Callable[[float], None]) -> None:
        self._clock = clock
        self._callback = callback
        self._handle: TimerHandle | None = None
        self.deadline: float | None = None  # clock seconds; None = not armed

    def set(self, deadline: float | None) -> None:
        """Aims the timer at ``deadline`` (None disarms it); the same deadline is a no-op."""
        if deadline == self.deadline:
            return
        self.cancel()
        if deadline is not None:
            self.deadline = deadline
            self._handle = self._clock.call_later(deadline - self._clock.now(), self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self.deadline = None

    def _fire(self) -> None:
        deadline = self.deadline
        self._handle = None
        self.deadline = None
        if deadline is not None:
            self._callback(deadline)
