"""How a worker's own admission logic meets the shared state: a tap and a follower.

* :class:`TapEmitter` — the gate's emitter: every event goes to the run as usual and is shown to
  the shared gate, which turns this worker's own decisions (a cooldown, a limit change, a breaker
  transition) into facts for Redis. The record is where decisions are already announced, so the
  single-process gate needs no hook for it.
* :class:`FollowingAimd` — the single-process AIMD (same rules, same settings), which can also
  take the shared limit when another worker moved it.
"""

from __future__ import annotations

from collections.abc import Callable

from ddscope import events
from ddscope.engine.admission.aimd import AimdLimit, LimitChange
from ddscope.engine.emitter import Emitter


class TapEmitter(Emitter):
    """The gate's emitter: passes every event on and shows it to ``tap`` (same clock, ids)."""

    def __init__(self, inner: Emitter, tap: Callable[[events.Event], None]) -> None:
        # No super().__init__: every method delegates, so time origin and ids stay the run's.
        self.bus = inner.bus
        self.clock = inner.clock
        self._inner = inner
        self._tap = tap

    def t_ns(self) -> int:
        return self._inner.t_ns()

    def next_id(self) -> int:
        return self._inner.next_id()

    def emit(self, event: events.Event) -> None:
        self._inner.emit(event)
        self._tap(event)


class FollowingAimd(AimdLimit):
    """This worker's AIMD, which also follows the shared limit when another worker moves it."""

    def adopt(self, limit: int, *, new_wave: bool) -> LimitChange | None:
        """Takes the shared limit. ``new_wave``: it was a decrease, so permits admitted before it
        belong to the wave that caused it and do not decrease again here."""
        limit = max(1, min(self.settings.max_limit, limit))
        if limit == self._limit:
            return None  # this worker's own change, or one it already followed
        if new_wave:
            self._epoch += 1
        old, self._limit = self._limit, limit
        self._success_streak = 0  # the streak counted towards the old limit
        return LimitChange(old, limit, "increase" if limit > old else "decrease")
