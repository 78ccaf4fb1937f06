"""Stamps events with the run's clock and hands them to the bus.

Every engine part that emits takes an :class:`Emitter`, so all events share one time origin
(``t_ns`` = nanoseconds since the run started on the engine clock) and one bus.
"""

from __future__ import annotations

import itertools

from ddscope.engine.clock import Clock
from ddscope.events import Event, EventBus


class Emitter:
    def __init__(self, bus: EventBus, clock: Clock, *, first_id: int = 1) -> None:
        """``first_id``: a resumed run's segment starts its ids past the earlier segments'
        (``engine.resume``), so ids stay unique across the run's record files."""
        self.bus = bus
        self.clock = clock
        self._t0_ns = clock.now_ns()
        self._ids = itertools.count(first_id)

    def t_ns(self) -> int:
        """Nanoseconds since the run started."""
        return max(0, self.clock.now_ns() - self._t0_ns)

    def emit(self, event: Event) -> None:
        self.bus.emit(event)

    def next_id(self) -> int:
        """A run-unique positive integer (lease, request and cooldown ids)."""
        return next(self._ids)
