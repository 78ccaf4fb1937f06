"""A FIFO queue of tasks waiting for a request permit, with timeouts on the engine clock.

Waiters are futures, granted in arrival order by whoever frees capacity (:meth:`WaiterQueue.grant`);
nobody polls. A timeout is a clock timer (so ``FakeClock`` drives it) that removes the waiter and
fails it. A waiter cancelled after it was granted hands its permit back through ``on_orphan`` so a
cancellation never leaks a slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ddscope.engine.clock import Clock

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("future", "key")

    def __init__(self, future: asyncio.Future[T], key: tuple[int, int]) -> None:
        self.future = future
        self.key = key  # (request_id, attempt)


class WaiterQueue(Generic[T]):
    def __init__(self, clock: Clock, *, on_orphan: Callable[[T], None]) -> None:
        self._clock = clock
        self._on_orphan = on_orphan
        # A cancelled task's future is cancelled by asyncio before the task can remove it, so
        # the queue may briefly hold done futures: everything that pops skips them.
        self._queue: deque[_Waiter[T]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    async def wait(
        self, key: tuple[int, int], timeout_s: float | None, on_timeout: Callable[[], Exception]
    ) -> T:
        """Queues ``key`` and waits for :meth:`grant`; raises ``on_timeout()`` after
        ``timeout_s``, or whatever :meth:`fail_all` sets; re-raises cancellation."""
        waiter: _Waiter[T] = _Waiter(asyncio.get_running_loop().create_future(), key)
        self._queue.append(waiter)
        timer = None
        if timeout_s is not None:
            timer = self._clock.call_later(timeout_s, lambda: self._expire(waiter, on_timeout))
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def grant(self, has_room: Callable[[], bool], admit: Callable[[tuple[int, int]], T]) -> None:
        """Grants the head of the queue, in order, while ``has_room()``."""
        while self._queue and has_room():
            waiter = self._queue.popleft()
            if not waiter.future.done():
                waiter.future.set_result(admit(waiter.key))

    def fail_all(self, error: Callable[[], Exception]) -> None:
        while self._queue:
            future = self._queue.popleft().future
            if not future.done():
                future.set_exception(error())

    def cancel_all(self) -> None:
        while self._queue:
            self._queue.popleft().future.cancel()

    def _expire(self, waiter: _Waiter[T], on_timeout: Callable[[], Exception]) -> None:
        if not waiter.future.done():
            self._queue.remove(waiter)
            waiter.future.set_exception(on_timeout())

    def _abandon(self, waiter: _Waiter[T]) -> None:
        future = waiter.future
        if waiter in self._queue:
            self._queue.remove(waiter)
        if not future.done():
            future.cancel()
        elif not future.cancelled() and future.exception() is None:
            self._on_orphan(future.result())  # granted just before the cancellation landed
