"""Request admission shared through a real Redis (Debian's redis-server on a free port).

Several "workers" here are several stores (own connections, own worker ids) with their own
gates in one event loop: the state they share is only what goes through Redis.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from ddscope import events
from ddscope.engine.admission.shared.gate import SharedRequestAdmission, SharedRequestGate
from ddscope.engine.admission.shared.local_redis import LocalRedis, RedisServerMissing
from ddscope.engine.admission.shared.store import (
    AdmissionUnavailable,
    DomainSpec,
    RedisAdmissionStore,
)
from ddscope.engine.admission.shared.url import AdmissionUrl
from ddscope.engine.admission.types import AdmissionSettings
from ddscope.engine.clock import MonotonicClock
from ddscope.engine.emitter import Emitter
from ddscope.engine.rows.shards import Shard
from ddscope.errors import AdmissionTimeout, ConfigError
from ddscope.events import EventBus, ListSink

DOMAIN = "mock/mock-model"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        server = LocalRedis().start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


class Worker:
    def __init__(self, store: RedisAdmissionStore, gate: SharedRequestGate, sink: ListSink):
        self.store, self.gate, self.sink = store, gate, sink
        self.lost: list[str] = []

    def kinds(self, kind: str) -> list[events.Event]:
        return [e for e in self.sink.events if e.kind == kind]


@asynccontextmanager
async def worker(
    url: str, name: str, *, endpoint: str, max_parallel: int = 8, ttl_s: float = 5.0
) -> AsyncIterator[Worker]:
    store = await RedisAdmissionStore.connect(
        AdmissionUrl.parse(url), worker_id=name, lease_ttl_s=ttl_s
    )
    await store.add_domains([DomainSpec(DOMAIN, endpoint, max_parallel, max_parallel)])
    sink = ListSink()
    emitter = Emitter(EventBus([sink]), MonotonicClock())
    settings = {DOMAIN: AdmissionSettings.of(max_parallel=max_parallel)}
    admission = SharedRequestAdmission(settings, emitter, store)
    gate = admission.gate(DOMAIN)
    assert isinstance(gate, SharedRequestGate)
    result = Worker(store, gate, sink)
    admission.on_lost = result.lost.append
    try:
        yield result
    finally:
        admission.close()
        await store.close()


async def traffic(w: Worker, ids: range, state: dict[str, int], latency_s: float) -> None:
    async def one(request_id: int) -> None:
        permit = await w.gate.acquire(
            request_id=request_id, attempt=1, task_id=f"t{request_id}", lease_id=request_id
        )
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(latency_s)
        state["now"] -= 1
        w.gate.release(permit, outcome="ok")

    await asyncio.gather(*(one(i) for i in ids))


def test_three_workers_never_exceed_the_shared_limit(redis_url: str) -> None:
    async def main() -> tuple[dict[str, int], list[int]]:
        state = {"now": 0, "peak": 0}
        async with (
            worker(redis_url, "a", endpoint="e1") as a,
            worker(redis_url, "b", endpoint="e1") as b,
            worker(redis_url, "c", endpoint="e1") as c,
        ):
            crew = [a, b, c]
            await asyncio.gather(*(traffic(w, range(1, 61), state, 0.01) for w in crew))
            return state, [w.store.counters.round_trips for w in crew]

    state, trips = asyncio.run(main())
    assert state["now"] == 0
    assert 1 < state["peak"] <= 8  # 3 × 60 requests, 8 slots between them
    assert sum(trips) <= 2 * 180  # batched: never more than an acquire and a release each


def test_a_429_cools_down_the_other_workers_within_50_ms(redis_url: str) -> None:
    async def main() -> tuple[float, Worker, Worker]:
        async with (
            worker(redis_url, "a", endpoint="e2") as a,
            worker(redis_url, "b", endpoint="e2") as b,
        ):
            permit = await a.gate.acquire(request_id=1, attempt=1, task_id="t1", lease_id=1)
            await b.gate.acquire(request_id=1, attempt=1, task_id="u1", lease_id=1)
            sent = time.monotonic()
            a.gate.release(permit, outcome="rate_limited", retry_after_s=2.0)
            deadline = sent + 1.0
            while not b.kinds("cooldown_started") and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            learned = time.monotonic() - sent
            # b may not admit anything new now, although it has free slots locally
            assert b.gate.available() == 0
            refused = asyncio.ensure_future(
                b.gate.acquire(request_id=2, attempt=1, task_id="u2", lease_id=2, timeout_s=1.0)
            )
            await asyncio.sleep(0.05)
            assert b.gate.statistics().waiters == 1  # health events show who waits
            with pytest.raises(Exception) as caught:
                await refused
            assert caught.type.__name__ == "AdmissionTimeout"
            return learned, a, b

    learned, a, b = asyncio.run(main())
    assert learned < 0.05, f"worker b learned of the cooldown after {learned * 1000:.0f} ms"
    started = b.kinds("cooldown_started")
    assert len(started) == 1
    assert isinstance(started[0], events.CooldownStarted)
    assert 1.8 <= started[0].duration_s <= 2.0  # what remained of a's 2 s
    assert len(a.kinds("cooldown_started")) == 1  # a's own, not adopted a second time


def test_the_shared_limit_decreases_once_per_wave(redis_url: str) -> None:
    async def main() -> int:
        async with (
            worker(redis_url, "a", endpoint="e3") as a,
            worker(redis_url, "b", endpoint="e3") as b,
        ):
            pa = await a.gate.acquire(request_id=1, attempt=1, task_id="t1", lease_id=1)
            pb = await b.gate.acquire(request_id=1, attempt=1, task_id="u1", lease_id=1)
            a.gate.release(pa, outcome="rate_limited", retry_after_s=0.0)
            b.gate.release(pb, outcome="rate_limited", retry_after_s=0.0)
            await a.store.close()  # drains: both releases have reached Redis
            await b.store.close()
            async with worker(redis_url, "c", endpoint="e3") as c:
                await c.gate.acquire(request_id=1, attempt=1, task_id="v1", lease_id=1)
                assert c.gate.shared_state is not None
                return c.gate.shared_state.limit

    assert asyncio.run(main()) == 6  # 8 × 0.75 once: both 429s came from the same wave


def test_another_workers_decrease_is_followed_here(redis_url: str) -> None:
    async def main() -> tuple[Worker, int]:
        async with (
            worker(redis_url, "a", endpoint="e7") as a,
            worker(redis_url, "b", endpoint="e7") as b,
        ):
            await b.gate.acquire(request_id=9, attempt=1, task_id="u", lease_id=1)
            pa = await a.gate.acquire(request_id=1, attempt=1, task_id="t1", lease_id=1)
            a.gate.release(pa, outcome="rate_limited", retry_after_s=0.0)
            deadline = time.monotonic() + 2
            while not b.kinds("limit_changed") and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            return b, b.gate.statistics().limit

    b, limit = asyncio.run(main())
    assert limit == 6
    changes = [c for c in b.kinds("limit_changed") if isinstance(c, events.LimitChanged)]
    assert [(c.old, c.new) for c in changes] == [(8, 6)]


def test_a_breaker_opened_by_one_worker_refuses_every_worker(redis_url: str) -> None:
    async def main() -> tuple[Worker, bool, str]:
        async with (
            worker(redis_url, "a", endpoint="e8") as a,
            worker(redis_url, "b", endpoint="e8") as b,
        ):
            await b.gate.acquire(request_id=1, attempt=1, task_id="u1", lease_id=1)
            a.store.publish_fact(DOMAIN, "B", "open")  # what a's gate sends when its breaker opens
            deadline = time.monotonic() + 2
            while not b.kinds("breaker") and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            refusing = b.gate.refusing
            try:
                await b.gate.acquire(request_id=2, attempt=1, task_id="u2", lease_id=2)
                return b, refusing, "admitted"
            except Exception as exc:
                return b, refusing, type(exc).__name__

    b, refusing, outcome = asyncio.run(main())
    assert refusing  # fail_fast: b stops admitting too
    assert outcome == "BreakerOpen"
    opened = [e for e in b.kinds("breaker") if isinstance(e, events.BreakerChanged)]
    assert [(e.state, e.reason) for e in opened] == [("open", "shared")]


HOLDER = """
import asyncio, sys
from ddscope.engine.admission.shared.store import DomainSpec, RedisAdmissionStore
from ddscope.engine.admission.shared.url import AdmissionUrl

async def main() -> None:
    url = AdmissionUrl.parse(sys.argv[1])
    store = await RedisAdmissionStore.connect(url, worker_id="doomed", lease_ttl_s=0.6)
    await store.add_domains([DomainSpec("mock/mock-model", "e4", 2, 2)])
    for request_id in (1, 2):
        assert await store.acquire("mock/mock-model", f"doomed:{request_id}:1", counted=False)
    print("holding", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_killed_workers_slots_come_back_after_the_lease_ttl(redis_url: str) -> None:
    """A worker process holding every slot is SIGKILLed: its leases are not renewed any more,
    and the other worker gets a slot once they expire (TTL 0.6 s)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"

        async def main() -> float:
            async with worker(redis_url, "b", endpoint="e4", max_parallel=2, ttl_s=0.6) as b:
                with pytest.raises(AdmissionTimeout):  # held, and renewed, by the live holder
                    await b.gate.acquire(
                        request_id=1, attempt=1, task_id="u", lease_id=1, timeout_s=1.0
                    )
                holder.send_signal(signal.SIGKILL)
                start = time.monotonic()
                await b.gate.acquire(request_id=1, attempt=2, task_id="u", lease_id=1, timeout_s=5)
                return time.monotonic() - start

        waited = asyncio.run(main())
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert waited <= 2.0  # the TTL, plus at most one safety-net retry


def test_leases_are_renewed_while_held(redis_url: str) -> None:
    async def main() -> bool:
        async with worker(redis_url, "a", endpoint="e5", max_parallel=1, ttl_s=0.3) as a:
            permit = await a.gate.acquire(request_id=1, attempt=1, task_id="t", lease_id=1)
            await asyncio.sleep(1.0)  # > 3 TTLs: only renewal keeps the slot
            async with worker(redis_url, "b", endpoint="e5", max_parallel=1, ttl_s=0.3) as b:
                waiting = b.gate.acquire(
                    request_id=1, attempt=1, task_id="u", lease_id=1, timeout_s=0.4
                )
                try:
                    await waiting
                    return True
                except Exception:
                    return False
                finally:
                    a.gate.release(permit, outcome="ok")

    assert asyncio.run(main()) is False  # the held slot was never handed to b


def test_redis_lost_mid_run_stops_with_a_reason_without_the_password() -> None:
    async def main(server: LocalRedis) -> list[str]:
        async with worker(server.url, "a", endpoint="e6", ttl_s=0.3) as a:
            await a.gate.acquire(request_id=1, attempt=1, task_id="t", lease_id=1)
            server.stop()
            deadline = time.monotonic() + 5
            while not a.lost and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return a.lost

    try:
        server = LocalRedis(password="hunter2-secret").start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    try:
        lost = asyncio.run(main(server))
    finally:
        server.stop()
    assert len(lost) == 1
    assert "lost the shared admission state at redis://127.0.0.1:" in lost[0]
    assert "hunter2-secret" not in lost[0]


def test_unreachable_redis_is_one_line_naming_the_url_without_the_password() -> None:
    url = AdmissionUrl.parse("redis://:pa55word@127.0.0.1:1/0")
    with pytest.raises(AdmissionUnavailable) as caught:
        asyncio.run(RedisAdmissionStore.connect(url, worker_id="x"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("--admission: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "pa55word" not in message
    assert isinstance(caught.value, ConfigError)  # exit 2


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@h:7000/3", "redis://h:7000/3"),
        ("redis://user:secret@h", "redis://h:6379/0"),
    ],
)
def test_admission_url_is_redacted(text: str, shown: str) -> None:
    url = AdmissionUrl.parse(text)
    assert url.redacted() == shown
    assert "secret" not in repr(url)
    assert url.scrub(f"failed for {text}") == f"failed for {shown}"


@pytest.mark.parametrize(
    "text",
    [
        "http://h:1/0",
        "redis://:pw@/0",
        "redis://h:1/x",
        "redis://h:no",
        "redis://:pw@h:1/0?socket_timeout=bad",
    ],
)
def test_a_bad_admission_url_is_a_config_error_without_the_password(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AdmissionUrl.parse(text)
    assert str(caught.value).startswith("--admission:")
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(("records", "buffer", "count"), [(100, 10, 3), (7, 1, 7), (5, 10, 4)])
def test_shards_cover_every_row_group_exactly_once(records: int, buffer: int, count: int) -> None:
    slices = [Shard(i, count).row_groups(records, buffer) for i in range(count)]
    owned = [group for part in slices for group in part]
    assert owned == list(range(-(-records // buffer)))
    sizes = [len(part) for part in slices]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_a_bad_shard_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        Shard.parse(text)
