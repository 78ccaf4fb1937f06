"""Time for the engine, injectable so scheduling logic runs deterministically in tests.

Every timer the engine sets (cooldown expiry, acquire timeouts, health ticks) goes through a
:class:`Clock`, never straight to ``asyncio.sleep``/``wait_for``, so that :class:`FakeClock` can
drive them: ``clock.advance(2.5)`` fires every callback due by then, in time order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def now_ns(self) -> int: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    async def sleep(self, delay: float) -> None: ...


# uvloop (and any loop not built on asyncio's own) keeps time in whole milliseconds and rounds a
# delay to the nearest one: a timer can fire up to ~1.5 ms before it is due on time.monotonic().
# A cooldown must not end before a server's Retry-After, so such loops' timers are set this much
# later. asyncio's own loops use time.monotonic() itself and are never early.
COARSE_LOOP_MARGIN_S = 0.002


def _timer_delay(loop: asyncio.AbstractEventLoop, delay: float) -> float:
    if delay <= 0.0:
        return 0.0  # due already: nothing to be early for
    return delay if isinstance(loop, asyncio.BaseEventLoop) else delay + COARSE_LOOP_MARGIN_S


class MonotonicClock:
    """The real clock: ``time.monotonic`` and the running loop's timers, which never fire before
    they are due on ``time.monotonic`` (on uvloop too: see ``COARSE_LOOP_MARGIN_S``)."""

    def now(self) -> float:
        return time.monotonic()

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(_timer_delay(loop, delay), callback)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(_timer_delay(asyncio.get_running_loop(), delay))


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to. Timers fire inside :meth:`advance`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def now_ns(self) -> int:
        return round(self._now * 1e9)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.call_later(delay, wake)
        await future

    def advance(self, seconds: float) -> None:
        """Moves time forward, firing due timers in order (each sees ``now()`` = its due time)."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)
