"""The run's event loop (``engine/event_loop.py``): uvloop by default where it is installed,
chosen with DDSCOPE_EVENT_LOOP, and the engine's timers never early on it."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from scheduler_support import MemoryWriter, chain3

from ddscope.cli.main import cli
from ddscope.engine import event_loop
from ddscope.engine.clock import MonotonicClock
from ddscope.engine.scheduler import run_pipeline
from ddscope.errors import ConfigError
from ddscope.events import CooldownFinished, CooldownStarted, EventBus, ListSink
from ddscope.mock import MockServer

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_and_asyncio_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.EVENT_LOOP_ENV, raising=False)
    assert event_loop.run(loop_module()).startswith("uvloop")
    monkeypatch.setenv(event_loop.EVENT_LOOP_ENV, "asyncio")
    assert event_loop.run(loop_module()).startswith("asyncio")
    assert event_loop.run(loop_module(), "UVloop").startswith("uvloop")  # an argument wins


def test_an_unknown_loop_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(event_loop.EVENT_LOOP_ENV, "trio")
    with pytest.raises(ConfigError, match=r"DDSCOPE_EVENT_LOOP must be one of .*'trio'"):
        event_loop.run(loop_module())


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows or PyPy: import fails
    assert event_loop.chosen_loop("auto") == ("asyncio", None)
    assert event_loop.run(loop_module()).startswith("asyncio")
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop.chosen_loop("uvloop")


def test_ddtrace_run_refuses_an_unknown_loop_before_touching_the_directory(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["demo", "--out", str(out), "--records", "2"],
        env={event_loop.EVENT_LOOP_ENV: "fast"},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "ConfigError: DDSCOPE_EVENT_LOOP must be one of auto, uvloop, asyncio; got 'fast'"
    )
    assert not out.exists()


async def lateness(delays: list[float]) -> list[float]:
    """How late (negative: early) each MonotonicClock timer fired against time.monotonic()."""
    clock = MonotonicClock()
    late: list[float] = []
    all_fired = asyncio.Event()

    def fire(due: float) -> None:
        late.append(time.monotonic() - due)
        if len(late) == len(delays):
            all_fired.set()

    for i, delay in enumerate(delays):
        due = time.monotonic() + delay
        clock.call_later(delay, lambda due=due: fire(due))
        if i % 10 == 0:
            await asyncio.sleep(0.0007)  # timers set at scattered sub-millisecond phases
    await asyncio.wait_for(all_fired.wait(), timeout=10)
    for delay in delays[:20]:
        started = time.monotonic()
        await clock.sleep(delay)
        late.append(time.monotonic() - (started + delay))
    return late


def test_the_engines_timers_never_fire_early_on_uvloop() -> None:
    # uvloop rounds a delay to whole milliseconds: raw, about half of these fire up to ~1.5 ms
    # early (a cooldown would end before the server's Retry-After).
    rng = random.Random(7)
    delays = [rng.uniform(0.0001, 0.02) for _ in range(300)]
    for late in (
        event_loop.run(lateness(delays), "uvloop"),
        event_loop.run(lateness(delays), "asyncio"),
    ):
        assert len(late) == 320
        assert min(late) >= 0.0


def test_a_rate_limited_run_on_uvloop_waits_out_every_cooldown() -> None:
    knobs = {"rate_limit_k": 10, "rate_limit_n": 10, "retry_after": "1", "rate_limit_for_s": 0.3}
    sink = ListSink()
    with MockServer(**knobs, latency_ms=5) as server:
        pipeline = chain3(server.base_url, records=4)
        summary = event_loop.run(
            run_pipeline(pipeline, bus=EventBus([sink]), output=MemoryWriter()), "uvloop"
        )
    assert summary.outcome == "complete" and summary.rows_completed == 4
    cooldowns = [e for e in sink.events if isinstance(e, CooldownStarted | CooldownFinished)]
    started = {e.cooldown_id: e for e in cooldowns if isinstance(e, CooldownStarted)}
    assert started and len(cooldowns) == 2 * len(started)  # one domain: each started, finished
    expired = [
        end
        for end, after in zip(cooldowns, [*cooldowns[1:], None], strict=True)
        # a cooldown finished and at once started again was superseded by a later 429's
        if isinstance(end, CooldownFinished) and not isinstance(after, CooldownStarted)
    ]
    assert expired
    for end in expired:
        begin = started[end.cooldown_id]
        assert end.t_ns - begin.t_ns >= round(begin.duration_s * 1e9)
