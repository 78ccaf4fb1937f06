"""The dispatcher's runners: a runner that finishes a cell runs the next lease it frees itself
(issue 17: no asyncio task and no event-loop turn per cell), and a bug in a worker still stops
the run with every lease finished."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

import pytest
from scheduler_support import MemoryWriter, chain3, of_kind, unpaired_intervals

from ddscope.engine.client.answers import ChatResult
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus, ListSink
from ddscope.mock.server import MockServer


class SleepyClient:
    """Answers after a short real sleep; the ``fail_at``-th call raises a bug (not a
    ModelError), as a programming error inside the worker's await would."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    async def __aenter__(self) -> SleepyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def chat(self, model: str, messages: list[dict[str, Any]], **_: Any) -> ChatResult:
        self.calls += 1
        await asyncio.sleep(0.002)
        if self.calls == self.fail_at:
            raise RuntimeError("a bug in the worker's path")
        return ChatResult(f"out {self.calls}", 3, 5, model, 200)


def count_runners(runners: list[str]) -> Any:
    """A task factory noting every ``Dispatcher._run_worker`` task the loop creates."""

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]
    ) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") == "Dispatcher._run_worker":
            runners.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop)

    return factory


def run_counting(pipeline: Any, client: SleepyClient) -> tuple[RunSummary, ListSink, list[str]]:
    sink, runners = ListSink(), []

    async def main() -> RunSummary:
        asyncio.get_running_loop().set_task_factory(count_runners(runners))
        return await run_pipeline(
            pipeline,
            bus=EventBus([sink]),
            output=MemoryWriter(),
            client_factory=lambda provider, alias: client,
        )

    return asyncio.run(main()), sink, runners


def test_a_runner_serves_many_leases_and_every_lease_finishes():
    pipeline = chain3("http://127.0.0.1:9/v1", records=24, max_parallel=3)
    summary, sink, runners = run_counting(pipeline, SleepyClient())
    leases = of_kind(sink.events, "lease_started")
    assert summary.outcome == "complete" and summary.rows_completed == 24
    assert len(leases) == 72 == summary.requests
    # One asyncio task per cell would be 72; a runner keeps its slot while work is ready.
    assert 1 <= len(runners) <= len(leases) // 2
    assert {e["outcome"] for e in of_kind(sink.events, "lease_finished")} == {"ok"}
    assert unpaired_intervals(sink.events) == []


def test_a_bug_in_a_reused_runner_stops_the_run_and_finishes_its_lease():
    pipeline = chain3("http://127.0.0.1:9/v1", records=24, max_parallel=3)
    with pytest.raises(RuntimeError, match="a bug in the worker's path"):
        run_counting(pipeline, SleepyClient(fail_at=20))  # past the first leases: a reused runner


def test_a_dropped_row_cancels_the_cell_a_reused_runner_holds():
    # 400 is not retryable: its row is dropped, the row's other running cells are cancelled.
    with MockServer(latency_ms=5, fail_every=7, fail_status=400) as srv:
        pipeline = chain3(srv.base_url, records=24, max_parallel=3)
        sink = ListSink()
        summary = asyncio.run(run_pipeline(pipeline, bus=EventBus([sink]), output=MemoryWriter()))
    dropped = of_kind(sink.events, "row_dropped")
    assert dropped and summary.rows_completed == 24 - len(dropped)
    assert unpaired_intervals(sink.events) == []
