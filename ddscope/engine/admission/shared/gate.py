"""The request gate of a worker whose domains' admission state is shared through Redis.

:class:`SharedRequestGate` IS a :class:`~ddscope.engine.admission.gate.RequestGate`: the same
interface for the scheduler and the same pure logic (AIMD, breaker, cooldown) deciding on this
worker's outcomes, with the same events in its record. What changes is where the facts live:

* **Slots.** A request goes out only with a lease in the domain's shared lease set, granted by
  ``scripts.SYNC`` when fewer than the shared limit are in flight *anywhere* (so the endpoint
  never sees more than the limit, whatever the number of workers). The first acquire is one
  round trip; if refused, the request waits (a recorded wait) and is retried when a slot may
  have freed — a ``s`` message, a limit increase, the end of a cooldown — never by a poll (a
  slow safety-net retry aside, see ``SAFETY_RETRY_S``).
* **Decisions → shared facts.** Whatever this worker's logic decides (a 429's cooldown, a limit
  change, a breaker transition) is seen on its way to the record (a tap on the emitter) and
  queued as a fact with the release, so other workers learn it from the same round trip's
  publish.
* **Shared facts → local view.** Another worker's cooldown (the ``c`` message, or a reply's
  ``cool_until``) starts a local cooldown for the time that remains, so this worker's record
  and progress show it; another worker's breaker transition is adopted; the shared limit bounds
  :meth:`available`.

**Redis lost mid-run**: the run stops (reason ``admission_lost``) instead of falling back to a
local share of the limit. A worker cannot tell a Redis outage from a partition in which the others
still run, so any share it picked could exceed the endpoint's limit together with theirs — the
very thing this mode exists to prevent; completed rows are kept and the job resumes later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import EllipsisType
from typing import Any

from ddscope import events
from ddscope.engine.admission.gate import (
    AdmissionSettings,
    GateStatistics,
    Permit,
    RequestAdmission,
    RequestGate,
)
from ddscope.engine.admission.shared.follow import FollowingAimd, TapEmitter
from ddscope.engine.admission.shared.store import RedisAdmissionStore, SharedState
from ddscope.engine.clock import TimerHandle
from ddscope.engine.emitter import Emitter

SAFETY_RETRY_S = 0.5  # waiters retry at least this often even if a wake-up message was lost
ADOPT_TOLERANCE_S = 0.05  # a remote cooldown shorter than ours by this much is ours: skip


@dataclasses.dataclass(eq=False)
class _Waiter:
    key: tuple[int, int]
    member: str
    future: asyncio.Future[Permit]
    counted: bool  # Redis counts it in ``waiting`` (its first refusal added it)
    trying: bool = False  # an acquire for it is on the way


class SharedRequestGate(RequestGate):
    """Request admission for one domain, shared with every worker on the same Redis."""

    def __init__(
        self,
        domain: str,
        settings: AdmissionSettings,
        emitter: Emitter,
        store: RedisAdmissionStore,
        on_lost: Callable[[str], None],
    ) -> None:
        # Set before super().__init__: the tap may already see events.
        self._store = store
        self._on_lost_hook = on_lost
        self._adopting = False
        self._shared: SharedState | None = None
        self._lost: str | None = None
        self._members: dict[tuple[int, int], str] = {}
        self._shared_epoch_of: dict[tuple[int, int], int] = {}
        self._releasing_epoch: int | None = None
        self._queue: deque[_Waiter] = deque()
        self._unsynced_releases = 0
        self._safety: TimerHandle | None = None
        super().__init__(domain, settings, TapEmitter(emitter, self._tap))
        self._aimd = FollowingAimd(settings.aimd_settings())  # same settings, can follow
        self._synced_limit = False
        self._initial_limit = store.bind(domain, self).initial_limit
        self.add_listener(self._pump)

    # -- reading ----------------------------------------------------------------------------

    def available(self) -> int:
        """The local view (cooldown, breaker, this worker's AIMD), bounded by the shared room."""
        local = super().available()
        if local <= 0 or self._lost is not None:
            return 0
        return max(0, min(local, self._shared_room()))

    def _shared_room(self) -> int:
        """This worker's share of the free slots: the free slots divided among the workers
        active now (rounded up), so N busy workers do not each lease tasks for all of them and
        then wait in line for the same slots (a wait is correct but costs events and round
        trips). A worker that falls idle stops counting within a second."""
        state = self._shared
        if state is None:
            return self._initial_limit - len(self._members)
        # Requests leased but not yet admitted are not subtracted: the dispatcher counts them
        # as held leases already (its capacity is permits held + this).
        free = state.limit - state.in_flight + self._unsynced_releases
        return -(-free // state.active_workers) if free > 0 else free

    def statistics(self) -> GateStatistics:
        """As the local gate's, with this gate's own waiters (they wait on Redis, not in the
        local gate's queue)."""
        return dataclasses.replace(super().statistics(), waiters=len(self._queue))

    @property
    def shared_state(self) -> SharedState | None:
        """The shared state as of the last reply or message (None before the first)."""
        return self._shared

    # -- admission --------------------------------------------------------------------------

    def try_acquire(self, request_id: int, attempt: int) -> Permit | None:
        """Never admits synchronously: a shared slot needs a round trip (see :meth:`acquire`)."""
        return None

    async def acquire(
        self,
        *,
        request_id: int,
        attempt: int,
        task_id: str,
        lease_id: int,
        timeout_s: float | EllipsisType | None = ...,
    ) -> Permit:
        """One round trip when a slot is free (no wait recorded, like an immediate local
        admission); else a recorded wait until granted, timed out, refused or cancelled."""
        key = (request_id, attempt)
        if not self.refusing and self._lost is None and not self._queue and self.available() > 0:
            member = self._store.lease_member(request_id, attempt)
            granted = await self._store.acquire(self.domain, member, counted=False)
            if granted:
                return self._grant(key, member)
            counted = True
        else:
            counted = False
        timeout = self.settings.acquire_timeout_s if timeout_s is ... else timeout_s
        ids = {"request_id": request_id, "attempt": attempt, "task_id": task_id}
        return await self._recorded_wait(self._wait(key, counted, timeout), ids, lease_id)

    async def _wait(self, key: tuple[int, int], counted: bool, timeout: float | None) -> Permit:
        if self.refusing:
            raise self._breaker_open_error()
        if self._lost is not None or self._closed:
            raise asyncio.CancelledError(self._lost or f"request gate {self.domain} is closed")
        member = self._store.lease_member(*key)
        waiter = _Waiter(key, member, asyncio.get_running_loop().create_future(), counted)
        self._queue.append(waiter)
        timer = None
        if timeout is not None:
            timer = self._clock.call_later(timeout, lambda: self._expire(waiter, timeout))
        self._pump()
        try:
            return await waiter.future
        finally:
            if timer is not None:
                timer.cancel()
            self._leave(waiter)

    def _grant(self, key: tuple[int, int], member: str) -> Permit:
        permit = self._admit(key)
        self._members[key] = member
        self._shared_epoch_of[key] = self._shared.epoch if self._shared else 0
        return permit

    def _pump(self, *, nudged: bool = False) -> None:
        """Sends acquires for the oldest waiters the local view has room for (at least one when
        ``nudged`` by a freed-slot message: the view may be older than the message)."""
        if self._closed or self._lost is not None:
            return
        if self.refusing:
            self._fail_waiters()
            return
        budget = self.available()
        if nudged and super().available() > 0:
            budget = max(budget, 1)
        for waiter in self._queue:
            if budget <= 0:
                break
            if waiter.trying or waiter.future.done():
                continue
            budget -= 1
            waiter.trying = True
            reply = self._store.acquire(self.domain, waiter.member, counted=waiter.counted)
            reply.add_done_callback(functools.partial(self._retried, waiter))
        self._arm_safety()

    def _retried(self, waiter: _Waiter, reply: asyncio.Future[bool]) -> None:
        waiter.trying = False
        if reply.cancelled():  # the store was lost; on_lost fails the waiters
            return
        if not reply.result():
            waiter.counted = True
            return
        if waiter.future.done():  # timed out or cancelled meanwhile: give the slot back
            self._store.release(self.domain, waiter.member, urgent=True)
            return
        waiter.future.set_result(self._grant(waiter.key, waiter.member))

    def _expire(self, waiter: _Waiter, timeout: float) -> None:
        if not waiter.future.done():
            waiter.future.set_exception(self._timeout_error(timeout))

    def _leave(self, waiter: _Waiter) -> None:
        if waiter in self._queue:
            self._queue.remove(waiter)
        future = waiter.future
        granted = future.done() and not future.cancelled() and future.exception() is None
        if waiter.counted and not granted:  # a grant already took it off Redis's count
            self._store.give_up_waiting(self.domain)

    def _fail_waiters(self) -> None:
        for waiter in list(self._queue):
            if not waiter.future.done():
                waiter.future.set_exception(self._breaker_open_error())

    def _arm_safety(self) -> None:
        if self._safety is None and self._queue and not self._closed:
            self._safety = self._clock.call_later(SAFETY_RETRY_S, self._safety_due)

    def _safety_due(self) -> None:
        self._safety = None
        self._pump(nudged=True)

    # -- outcomes ---------------------------------------------------------------------------

    def release(
        self,
        permit: Permit,
        *,
        outcome: events.AttemptOutcome,
        retry_after_s: float | None = None,
        **details: Any,
    ) -> None:
        """The local logic decides (and records) as in the single-process gate; the slot and
        whatever the outcome changed go to Redis in the next batch."""
        key = (permit.request_id, permit.attempt)
        member = self._members.pop(key, None)
        self._releasing_epoch = self._shared_epoch_of.pop(key, None)
        try:
            super().release(permit, outcome=outcome, retry_after_s=retry_after_s, **details)
        finally:
            self._releasing_epoch = None
        if member is not None and self._lost is None:
            self._unsynced_releases += 1
            self._store.release(self.domain, member, urgent=outcome != "ok")

    def _tap(self, event: events.Event) -> None:
        """This worker's own decisions, on their way to the record, become shared facts."""
        if (
            self._adopting
            or self._lost is not None
            or getattr(event, "domain", None) != self.domain
        ):
            return
        if isinstance(event, events.CooldownStarted):
            duration_ms = str(int(event.duration_s * 1000))
            self._store.publish_fact(
                self.domain, "C", duration_ms, str(time.time_ns() // 1_000_000)
            )
        elif isinstance(event, events.LimitChanged):
            epoch = self._releasing_epoch
            if epoch is None:
                epoch = self._shared.epoch if self._shared else 0
            change = f"{event.old}:{event.new}:{event.reason}"
            self._store.publish_fact(self.domain, "L", change, str(epoch))
        elif isinstance(event, events.BreakerChanged):
            self._store.publish_fact(self.domain, "B", event.state)
            if self.refusing:
                asyncio.get_running_loop().call_soon(self._fail_waiters)

    # -- what the store hears -----------------------------------------------------------------

    def on_state(self, state: SharedState, *, released: int = 0) -> None:
        previous, self._shared = self._shared, state
        # Only the releases this batch carried are in the reply's count; later ones are not yet.
        self._unsynced_releases = max(0, self._unsynced_releases - released)
        if not self._synced_limit:  # later changes come as "l" messages, in order
            self._synced_limit = True
            self._adopt_limit(state.limit, new_wave=previous is None and state.epoch > 0)
        self._adopt_cooldown(state.cooldown_remaining_s)
        if state.breaker == "open" and self.breaker_state == "closed":
            self._adopt_breaker("open")
        if self._queue:
            self._pump()

    def on_message(self, kind: str, fields: list[str]) -> None:
        origin = fields[-1] if fields else ""
        mine = origin == self._store.worker_id
        if kind == "c" and not mine:
            until, now, seen = int(fields[0]), int(fields[1]), int(fields[2])
            if seen > 0:  # on one host the clocks agree; across hosts this includes their skew
                heard = time.time_ns() / 1e6
                self._store.counters.cooldown_lags_ms.append((now - seen, heard - now))
            self._adopt_cooldown(max(0, until - now) / 1000.0)
        elif kind == "l" and self._shared is not None:
            limit, epoch = int(fields[0]), int(fields[1])
            new_wave = epoch > self._shared.epoch
            self._shared = dataclasses.replace(self._shared, limit=limit, epoch=epoch)
            self._synced_limit = True
            self._adopt_limit(limit, new_wave=new_wave)
            self._pump()
        elif kind == "b" and not mine:
            self._adopt_breaker(fields[0])
        elif kind == "s":
            self._pump(nudged=True)

    def on_lost(self, message: str) -> None:
        self._lost = message
        self._on_lost_hook(message)  # stop the run first: it cancels the waiting workers
        for waiter in list(self._queue):
            if not waiter.future.done():
                waiter.future.cancel()

    def _adopt_limit(self, limit: int, *, new_wave: bool) -> None:
        """The shared limit moved (any worker, this one included: the message carries the
        merged result): this worker's AIMD continues from it, and its record says so."""
        assert isinstance(self._aimd, FollowingAimd)
        self._adopting = True
        try:
            self._apply(self._aimd.adopt(limit, new_wave=new_wave))
        finally:
            self._adopting = False

    def _adopt_cooldown(self, remaining_s: float) -> None:
        """Another worker's 429: cool down here too, for the time that remains."""
        local = self._cooldown.remaining(self._clock.now())
        if self._closed or remaining_s <= local + ADOPT_TOLERANCE_S:
            return
        self._adopting = True
        try:
            self._cooldown.start(remaining_s)
        finally:
            self._adopting = False

    def _adopt_breaker(self, state: str) -> None:
        if self._closed or state == self.breaker_state:
            return
        self._adopting = True
        try:
            if state == "open":
                self._open_breaker("shared")
            elif state == "half_open":
                self._set_breaker("half_open", "shared")
            elif state == "closed":
                self._set_breaker("closed", "shared")
        finally:
            self._adopting = False
        self._pump()

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        super().close()
        if self._safety is not None:
            self._safety.cancel()
            self._safety = None
        for waiter in list(self._queue):
            if not waiter.future.done():
                waiter.future.cancel()


class SharedRequestAdmission(RequestAdmission):
    """One :class:`SharedRequestGate` per domain, all on one store. ``on_lost`` (set by the run)
    is called once if Redis is lost; until then it is a no-op."""

    def __init__(
        self,
        settings: Mapping[str, AdmissionSettings],
        emitter: Emitter,
        store: RedisAdmissionStore,
    ) -> None:
        self.on_lost: Callable[[str], None] | None = None
        self._lost_once = False
        self._gates = {
            domain: SharedRequestGate(domain, s, emitter, store, self._lost)
            for domain, s in settings.items()
        }

    def _lost(self, message: str) -> None:
        if not self._lost_once and self.on_lost is not None:
            self._lost_once = True
            self.on_lost(message)
