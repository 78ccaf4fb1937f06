"""One worker's connection to the shared admission state in Redis: batched calls, pub/sub, leases.

:class:`RedisAdmissionStore` is opened once per worker process (:meth:`connect`, which fails with
a one-line :class:`AdmissionUnavailable` when Redis cannot be reached) and serves every domain's
:class:`~ddscope.engine.admission.shared.gate.SharedRequestGate`:

* **Batching.** Gates queue operations (``scripts.SYNC``); one flusher sends everything queued
  for a domain in ONE script call, and whatever arrives while a call is on the wire goes in the
  next. A release with nobody waiting anywhere lingers up to ``release_linger_s`` so the next
  acquire (usually a moment later: the worker's next task) travels with it — so the fast path
  costs at most one round trip per request, and fewer under load.
* **Pub/sub.** One subscription per domain channel; messages (cooldown, limit, breaker, freed
  slots) go to the gate within one hop — the 50 ms budget for a cooldown is spent mostly on
  the network, not on waiting for a poll.
* **Leases.** Every granted slot is a member of the domain's lease set with a TTL; a renewal task
  pushes the expiry of the slots this worker still holds every ``ttl / 3``, so a request longer
  than the TTL keeps its slot and a killed worker's slots come back within the TTL.
* **Loss.** Any Redis error after the start (connection refused, reset, timeout) is final: the
  store calls ``on_lost`` once with a sentence naming the (redacted) URL, fails what waits, and
  drops further operations. The run then stops (see the gate for why it does not guess a local
  share of the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ddscope.engine.admission.shared.scripts import RENEW, SYNC
from ddscope.engine.admission.shared.url import AdmissionUrl
from ddscope.errors import ConfigError

log = logging.getLogger(__name__)

KEY_PREFIX = "ddscope:adm:"
LEASE_TTL_S = 5.0
STATE_KEEP_S = 600.0  # the shared state outlives a job by this much (then Redis drops it)
RELEASE_LINGER_S = 0.002
SOCKET_TIMEOUT_S = 2.0


class AdmissionUnavailable(ConfigError):
    """The shared admission state cannot be reached at the start (exit 2: fix the URL/server)."""


@dataclass(frozen=True)
class SharedState:
    """A domain's shared state as of one reply (times in Redis server ms)."""

    limit: int
    epoch: int
    in_flight: int
    cool_until_ms: int
    breaker: str
    now_ms: int
    waiting: int
    active_workers: int = 1  # workers that called in the last second (this one included)

    @property
    def cooldown_remaining_s(self) -> float:
        return max(0, self.cool_until_ms - self.now_ms) / 1000.0


class StateListener(Protocol):
    """What a gate hears from the store (all on the event loop)."""

    def on_state(self, state: SharedState, *, released: int) -> None:
        """A reply: the state after a batch that held ``released`` of this worker's releases."""
        ...

    def on_message(self, kind: str, fields: list[str]) -> None: ...

    def on_lost(self, message: str) -> None: ...


@dataclass(frozen=True)
class DomainSpec:
    """How a domain is keyed and bounded. ``endpoint`` only feeds a hash: two pipelines naming
    the same provider/model at the same endpoint share one state."""

    domain: str
    endpoint: str
    max_parallel: int
    initial_limit: int

    def base_key(self) -> str:
        digest = hashlib.sha256(self.endpoint.encode()).hexdigest()[:12]
        return f"{KEY_PREFIX}{{{self.domain}#{digest}}}"


@dataclass
class _Op:
    kind: str
    a: str = ""
    b: str = ""
    future: asyncio.Future[bool] | None = None


@dataclass
class _Domain:
    spec: DomainSpec
    listener: StateListener | None = None
    ops: list[_Op] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # lease members this worker holds

    @property
    def keys(self) -> list[str]:
        base = self.spec.base_key()
        return [f"{base}:leases", f"{base}:state", f"{base}:workers"]

    @property
    def channel(self) -> str:
        return f"{self.spec.base_key()}:events"


@dataclass
class StoreCounters:
    round_trips: int = 0  # SYNC calls (the request path)
    renewals: int = 0  # RENEW calls (background)
    ops: int = 0
    # Another worker's 429, the last few: (ms until Redis had it — from then on it refuses every
    # worker —, ms from Redis until this worker heard), wall clocks of one host
    cooldown_lags_ms: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=1000))


class RedisAdmissionStore:
    """Use :meth:`connect`; then :meth:`add_domains`, :meth:`bind`, and :meth:`close` at the end."""

    def __init__(self, url: AdmissionUrl, client: Any, worker_id: str, lease_ttl_s: float) -> None:
        self.url = url
        self.worker_id = worker_id
        self.lease_ttl_s = lease_ttl_s
        self.release_linger_s = RELEASE_LINGER_S
        self.counters = StoreCounters()
        self.lost: str | None = None
        self._client = client
        self._sync = client.register_script(SYNC)
        self._renew = client.register_script(RENEW)
        self._domains: dict[str, _Domain] = {}
        self._by_channel: dict[str, _Domain] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing = False
        self._closing = False  # close() began: background loops end at their next step
        self._linger: asyncio.TimerHandle | None = None
        self._waiting_anywhere = False

    @classmethod
    async def connect(
        cls, url: AdmissionUrl, *, worker_id: str, lease_ttl_s: float = LEASE_TTL_S
    ) -> RedisAdmissionStore:
        """Connects and checks the server answers; AdmissionUnavailable (one line) if not."""
        client = aioredis.Redis.from_url(
            url.raw,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            decode_responses=True,
        )
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            reason = url.scrub(str(exc)) or type(exc).__name__
            raise AdmissionUnavailable(
                f"--admission: cannot reach Redis at {url.redacted()}: {reason}"
            ) from None
        return cls(url, client, worker_id, lease_ttl_s)

    # -- set-up -----------------------------------------------------------------------------

    async def add_domains(self, specs: list[DomainSpec]) -> None:
        """Subscribes to the domains' channels and starts the listener and the lease renewal."""
        for spec in specs:
            domain = _Domain(spec)
            self._domains[spec.domain] = domain
            self._by_channel[domain.channel] = domain
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._pubsub.subscribe(*self._by_channel)
        except (RedisError, OSError) as exc:
            raise AdmissionUnavailable(
                f"--admission: cannot subscribe at {self.url.redacted()}: {self._why(exc)}"
            ) from None
        self._tasks.append(asyncio.create_task(self._listen(), name="ddscope-admission-pubsub"))
        self._tasks.append(asyncio.create_task(self._renew_loop(), name="ddscope-admission-renew"))

    def bind(self, domain: str, listener: StateListener) -> DomainSpec:
        """Attaches a gate to a prepared domain (KeyError for one not added)."""
        entry = self._domains[domain]
        entry.listener = listener
        return entry.spec

    def lease_member(self, request_id: int, attempt: int) -> str:
        return f"{self.worker_id}:{request_id}:{attempt}"

    # -- operations -------------------------------------------------------------------------

    def acquire(self, domain: str, member: str, *, counted: bool) -> asyncio.Future[bool]:
        """Queues an acquire; the future says whether the slot was granted (cancelled if lost)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.lost is not None:
            future.cancel()
            return future
        self._queue(domain, _Op("A", member, "1" if counted else "0", future))
        self._domains[domain].held.add(member)  # renewed from now on; dropped if refused
        return future

    def release(self, domain: str, member: str, *, urgent: bool) -> None:
        """Queues a release. Not ``urgent`` and nobody waiting anywhere: it may linger briefly
        for the next acquire to share its round trip."""
        self._domains[domain].held.discard(member)
        self._queue(domain, _Op("R", member), urgent=urgent or self._waiting_anywhere)

    def publish_fact(self, domain: str, kind: str, a: str, b: str = "") -> None:
        """A change not tied to a release (a breaker timer, a probe cooldown)."""
        self._queue(domain, _Op(kind, a, b))

    def give_up_waiting(self, domain: str) -> None:
        self._queue(domain, _Op("U"), urgent=False)

    def _queue(self, domain: str, op: _Op, *, urgent: bool = True) -> None:
        if self.lost is not None:
            return
        self._domains[domain].ops.append(op)
        self.counters.ops += 1
        if self._flushing:
            return  # the running flush takes it next
        if urgent:
            if self._linger is not None:
                self._linger.cancel()
            self._linger = None
            self._flushing = True
            # The task's first step runs at the next loop iteration: whatever else is queued in
            # this one (the release that freed the slot, other workers' acquires) goes with it.
            self._start_flush()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(
                self.release_linger_s, self._linger_due
            )

    def _linger_due(self) -> None:
        self._linger = None
        if not self._flushing:
            self._flushing = True
            self._start_flush()

    def _start_flush(self) -> None:
        self._tasks.append(asyncio.create_task(self._flush(), name="ddscope-admission-flush"))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _flush(self) -> None:
        try:
            while self.lost is None:
                batch = [(d, d.ops) for d in self._domains.values() if d.ops]
                if not batch:
                    return
                for entry, _ in batch:
                    entry.ops = []
                await asyncio.gather(*(self._call(entry, ops) for entry, ops in batch))
        finally:
            self._flushing = False

    async def _call(self, entry: _Domain, ops: list[_Op]) -> None:
        spec = entry.spec
        args: list[str | int] = [entry.channel, int(self.lease_ttl_s * 1000), spec.max_parallel]
        args += [spec.initial_limit, int(STATE_KEEP_S * 1000), self.worker_id]
        # Facts first, acquires last: a 429's cooldown in this batch already refuses them.
        ordered = sorted(ops, key=lambda op: op.kind == "A")
        for op in ordered:
            args += [op.kind, op.a, op.b]
        self.counters.round_trips += 1
        try:
            reply = await self._sync(keys=entry.keys, args=args)
        except (RedisError, OSError) as exc:
            self._lose(
                f"lost the shared admission state at {self.url.redacted()}: {self._why(exc)}"
            )
            for op in ops:
                if op.future is not None and not op.future.done():
                    op.future.cancel()
            return
        grants, state = iter(reply[0]), _state(reply)
        self._waiting_anywhere = state.waiting > 0
        for op in ordered:
            if op.kind == "A" and op.future is not None:
                granted = bool(next(grants))
                if not granted:
                    entry.held.discard(op.a)
                if not op.future.done():
                    op.future.set_result(granted)
                elif granted:  # the waiter left meanwhile: give the slot straight back
                    self.release(spec.domain, op.a, urgent=True)
        if entry.listener is not None:
            entry.listener.on_state(state, released=sum(op.kind == "R" for op in ops))

    # -- background ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            while not self._closing:
                message = await self._pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                entry = self._by_channel.get(message["channel"])
                kind, *fields = str(message["data"]).split("|")
                if entry is not None and entry.listener is not None:
                    entry.listener.on_message(kind, fields)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            self._lose(
                f"lost the shared admission state at {self.url.redacted()}: {self._why(exc)}"
            )

    async def _renew_loop(self) -> None:
        period = self.lease_ttl_s / 3
        try:
            while self.lost is None and not self._closing:
                await asyncio.sleep(period)
                for entry in list(self._domains.values()):
                    if entry.held and not self._closing:
                        self.counters.renewals += 1
                        ttl_ms = int(self.lease_ttl_s * 1000)
                        await self._renew(keys=entry.keys[:1], args=[ttl_ms, *entry.held])
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            self._lose(
                f"lost the shared admission state at {self.url.redacted()}: {self._why(exc)}"
            )

    def _lose(self, message: str) -> None:
        if self.lost is not None:
            return
        self.lost = message
        log.warning("%s", message)
        for entry in self._domains.values():
            entry.ops = []
            if entry.listener is not None:
                entry.listener.on_lost(message)

    def _why(self, exc: BaseException) -> str:
        return self.url.scrub(str(exc)) or type(exc).__name__

    # -- teardown -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Sends what is queued (best effort), stops the background tasks, closes the client.
        Every step is bounded: redis-py may swallow a cancellation inside a command (the loops
        also stop on ``_closing``), and closing a pub/sub connection can block on its reader."""
        if self.lost is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), timeout=SOCKET_TIMEOUT_S)
        self._closing = True
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SOCKET_TIMEOUT_S)
        for closing in (self._pubsub, self._client):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closing.aclose(), timeout=SOCKET_TIMEOUT_S)

    async def _drain(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        while self.lost is None and (self._flushing or any(d.ops for d in self._domains.values())):
            if not self._flushing:
                self._flushing = True
                self._start_flush()
            await asyncio.sleep(0.001)


def _state(reply: list[Any]) -> SharedState:
    _, limit, epoch, in_flight, cool, breaker, now, waiting, active = reply
    return SharedState(
        limit=int(limit),
        epoch=int(epoch),
        in_flight=int(in_flight),
        cool_until_ms=int(cool),
        breaker=str(breaker),
        now_ms=int(now),
        waiting=int(waiting),
        active_workers=max(1, int(active)),
    )


LostCallback = Callable[[str], None]
