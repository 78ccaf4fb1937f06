"""FakeClock drives timers deterministically; the engine relies on it for its timing tests."""

from __future__ import annotations

import asyncio

from ddscope.engine.clock import FakeClock, MonotonicClock


def test_fake_clock_fires_timers_in_order_at_their_time() -> None:
    clock = FakeClock()
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    cancelled = clock.call_later(1.5, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    clock.advance(1.2)
    assert fired == [("a", 1.0)]
    clock.advance(5)
    assert fired == [("a", 1.0), ("b", 2.0)]
    assert clock.now() == 6.2 and clock.pending_timers == 0


def test_fake_clock_sleep_wakes_on_advance() -> None:
    async def main() -> list[str]:
        clock = FakeClock()
        order: list[str] = []

        async def sleeper(name: str, delay: float) -> None:
            await clock.sleep(delay)
            order.append(name)

        tasks = [asyncio.create_task(sleeper("late", 3)), asyncio.create_task(sleeper("early", 1))]
        await asyncio.sleep(0)
        clock.advance(1)
        await asyncio.sleep(0)
        assert order == ["early"]
        clock.advance(2)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == ["early", "late"]


def test_monotonic_clock_timers_run_on_the_loop() -> None:
    async def main() -> bool:
        clock = MonotonicClock()
        done = asyncio.Event()
        clock.call_later(0.01, done.set)
        await asyncio.wait_for(done.wait(), timeout=5)
        return clock.now_ns() > 0

    assert asyncio.run(main())
