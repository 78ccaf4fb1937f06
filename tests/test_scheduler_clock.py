"""The scheduler driven by a FakeClock and a scripted in-process client (no HTTP): adaptive
widening, the health cadence, salvage pacing and exhaustion, deterministically."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from scheduler_support import MemoryWriter, chain3, max_concurrency, of_kind, unpaired_intervals

from ddscope.engine.client.answers import ChatResult
from ddscope.engine.clock import FakeClock
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.errors import ClientError, RateLimited, ServerError
from ddscope.events import EventBus, ListSink

Script = Callable[[int, str], float | Exception]  # (call index, prompt) → latency or error


class ScriptedClient:
    """A chat client whose answers come from ``script``; latency runs on the fake clock."""

    def __init__(self, clock: FakeClock, script: Script) -> None:
        self.clock, self.script, self.calls = clock, script, 0

    async def __aenter__(self) -> ScriptedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def chat(self, model: str, messages: list[dict[str, Any]], **_: Any) -> ChatResult:
        index, prompt = self.calls, messages[-1]["content"]
        self.calls += 1
        answer = self.script(index, prompt)
        if isinstance(answer, Exception):
            await self.clock.sleep(0.001)  # a real failure also takes a round trip
            raise answer
        await self.clock.sleep(answer)
        return ChatResult(f"out({prompt})", 3, 5, model, 200)


def drive(
    pipeline, script: Script, *, step: float = 0.001, limit_s: float = 120.0
) -> tuple[RunSummary, ListSink, MemoryWriter]:
    clock, sink, writer = FakeClock(), ListSink(), MemoryWriter()

    async def main() -> RunSummary:
        run = asyncio.create_task(
            run_pipeline(
                pipeline,
                bus=EventBus([sink]),
                output=writer,
                clock=clock,
                client_factory=lambda provider, alias: ScriptedClient(clock, script),
            )
        )
        while not run.done():
            for _ in range(40):  # let every runnable task reach its next clock wait
                await asyncio.sleep(0)
            assert clock.now() < limit_s, "the run did not finish in fake time"
            clock.advance(step)
        return run.result()

    return asyncio.run(main()), sink, writer


def _fake_seconds(sink: ListSink) -> float:
    return of_kind(sink.events, "run_finished")[0]["t_ns"] / 1e9


def test_adaptive_row_groups_widen_a_narrow_frontier():
    def ten_ms(index: int, prompt: str) -> float:
        return 0.010

    runs = {}
    for setting in (1, "adaptive"):
        pipeline = chain3(
            "http://127.0.0.1:9/v1",
            records=64,
            buffer_size=8,
            max_parallel=16,
            row_groups_in_flight=setting,
        )
        summary, sink, writer = drive(pipeline, ten_ms)
        assert summary.rows_completed == 64 and len(writer.rows) == 64
        peak = max_concurrency(
            sink.events, "attempt_started", "attempt_finished", "request_id+attempt", "domain"
        )["mock/mock-model"]
        groups = max_concurrency(
            sink.events, "row_group_started", "row_group_finished", "row_group", "kind"
        )["row_group_started"]
        runs[setting] = (peak, groups, _fake_seconds(sink))
    assert runs[1][:2] == (8, 1)  # one 8-row group can never fill 16 slots
    peak, groups, seconds = runs["adaptive"]
    assert peak == 16 and 2 <= groups <= 8
    assert seconds < 0.7 * runs[1][2]


def test_health_is_reported_every_interval_while_a_request_hangs():
    def first_hangs(index: int, prompt: str) -> float:
        return 30.0 if index == 0 else 0.01

    pipeline = chain3("http://127.0.0.1:9/v1", records=1, buffer_size=1, health_interval_s=2.0)
    summary, sink, _ = drive(pipeline, first_hangs, step=0.05)
    assert summary.outcome == "complete"
    times = [h.t_ns / 1e9 for h in sink.of_kind("health")]
    assert len(times) >= 15
    assert max(b - a for a, b in zip([0.0, *times], times, strict=False)) <= 2.0 + 0.05 + 1e-9
    assert sink.of_kind("health")[3].in_flight == 1  # the stuck request is visible


def test_salvage_waits_the_pause_then_recovers():
    def first_three_fail(index: int, prompt: str) -> float | Exception:
        return ServerError("HTTP 503") if index < 3 else 0.01

    pipeline = chain3(
        "http://127.0.0.1:9/v1",
        records=3,
        buffer_size=3,
        max_attempts_in_pass=1,
        salvage_pause_s=4.0,
    )
    summary, sink, _ = drive(pipeline, first_three_fail, step=0.01)
    assert summary.outcome == "complete" and summary.rows_completed == 3
    deferred = of_kind(sink.events, "task_deferred")
    [started] = of_kind(sink.events, "salvage_started")
    assert len(deferred) == 3 and started["tasks"] == 3
    assert started["t_ns"] - max(d["t_ns"] for d in deferred) >= 4.0e9
    [finished] = of_kind(sink.events, "salvage_finished")
    assert (finished["recovered"], finished["still_deferred"]) == (3, 0)
    salvaged = [e for e in of_kind(sink.events, "lease_started") if e["salvage_round"] == 1]
    assert {e["task_id"] for e in salvaged} >= {"summary:0", "summary:1", "summary:2"}
    assert unpaired_intervals(sink.events) == []


def test_a_task_that_never_succeeds_drops_its_row_after_the_last_round():
    def row_b_fails(index: int, prompt: str) -> float | Exception:
        return ServerError("HTTP 503 always") if prompt == "Summarise b" else 0.01

    pipeline = chain3(
        "http://127.0.0.1:9/v1",
        records=6,
        buffer_size=3,
        values=["a", "b"],
        max_attempts_in_pass=2,
        salvage_rounds=2,
        salvage_pause_s=0.5,
        error_rate_window=500,
    )
    summary, sink, writer = drive(pipeline, row_b_fails, step=0.01)
    drops = of_kind(sink.events, "row_dropped")
    b_rows = {row["_row"] for row in writer.rows if row["topic"] == "b"}
    assert drops and b_rows == set()
    assert {d["reason"] for d in drops} == {"retries_exhausted"}
    assert all(
        "6 tries and 2 salvage rounds" in d["message"] and "server_error" in d["message"]
        for d in drops
    )
    assert summary.rows_completed + summary.rows_dropped == 6
    assert [r["still_deferred"] for r in of_kind(sink.events, "salvage_finished")] == [
        len(drops),
        len(drops),
    ]
    assert unpaired_intervals(sink.events) == []


def test_a_stop_lets_requests_on_the_wire_finish_and_keeps_a_partial_group():
    def b_rewrites_fail(index: int, prompt: str) -> float | Exception:
        if prompt.startswith("Rewrite") and "Summarise b" in prompt:
            return ServerError("HTTP 500")
        return 0.01

    pipeline = chain3(
        "http://127.0.0.1:9/v1",
        records=6,
        buffer_size=6,
        values=["a", "b"],
        max_parallel=6,
        error_rate_window=6,
        error_rate_threshold=0.5,
    )
    summary, sink, writer = drive(pipeline, b_rewrites_fail)
    assert summary.outcome == "shutdown" and summary.reason == "error_rate"
    a_rows = {
        r for r in range(6) if not any(d["row"] == r for d in of_kind(sink.events, "row_dropped"))
    }
    assert a_rows and {row["_row"] for row in writer.rows} == a_rows
    assert all(row["topic"] == "a" for row in writer.rows)  # the a-rows' rewrites were on the wire
    [group] = of_kind(sink.events, "row_group_finished")
    assert (group["outcome"], group["rows_completed"]) == ("abandoned", len(a_rows))
    assert summary.drops_by_reason == {"shutdown": 6 - len(a_rows)}
    assert unpaired_intervals(sink.events) == []


def test_dropping_a_row_cancels_its_other_running_tasks():
    def summary_of_b_rejected(index: int, prompt: str) -> float | Exception:
        if prompt == "Summarise b":
            return ClientError("HTTP 400")
        return 5.0 if prompt.startswith("Title") else 0.01

    pipeline = Pipeline.from_dict(
        {
            "providers": [{"name": "mock", "endpoint": "http://127.0.0.1:9/v1"}],
            "models": [{"alias": "m", "provider": "mock", "model": "mock-model"}],
            "columns": [
                {"name": "topic", "type": "sampler", "sampler": "category", "values": ["b"]},
                {
                    "name": "summary",
                    "type": "llm_text",
                    "model": "m",
                    "prompt": "Summarise {{ topic }}",
                },
                {"name": "title", "type": "llm_text", "model": "m", "prompt": "Title {{ topic }}"},
            ],
            "run": {"num_records": 1, "buffer_size": 1},
        }
    )
    summary, sink, writer = drive(pipeline, summary_of_b_rejected, step=0.001)
    assert summary.drops_by_reason == {"client_error": 1} and writer.rows == []
    title = [e for e in sink.of_kind("lease_finished") if e.column == "title"]
    assert [e.outcome for e in title] == ["cancelled"]
    assert title[0].t_ns < 1e9  # cancelled when the row dropped, not after its 5 s answer
    assert [a.outcome for a in sink.of_kind("attempt_finished") if a.task_id == "title:0"] == [
        "cancelled"
    ]
    assert unpaired_intervals(sink.events) == []


def _rate_limited() -> RateLimited:
    return RateLimited("HTTP 429", retry_after_s=1.0)


def test_wait_policy_retries_pushback_past_the_budget_but_not_other_failures():
    def b_broken_others_refused_at_first(index: int, prompt: str) -> float | Exception:
        if prompt == "Summarise b":
            return ServerError("HTTP 503 always")
        return _rate_limited() if index < 40 else 0.01

    pipeline = chain3(
        "http://127.0.0.1:9/v1",
        records=4,
        buffer_size=4,
        values=["a", "b"],
        max_attempts_in_pass=1,
        salvage_rounds=1,
        breaker_policy="wait",
        error_rate_window=500,
    )
    summary, sink, writer = drive(pipeline, b_broken_others_refused_at_first, step=0.01)
    a_rows = {row["_row"] for row in writer.rows}
    drops = of_kind(sink.events, "row_dropped")
    assert a_rows and all(row["topic"] == "a" for row in writer.rows)
    assert {d["row"] for d in drops} == set(range(4)) - a_rows
    # the 5xx task keeps the bounded budget: 2 tries, dropped when the last round ends
    assert {d["reason"] for d in drops} == {"retries_exhausted"}
    assert all("2 tries and 1 salvage round;" in d["message"] for d in drops)
    tries = Counter(a["task_id"] for a in of_kind(sink.events, "attempt_started"))
    assert all(tries[f"summary:{row}"] == 2 for row in set(range(4)) - a_rows)
    # the refused tasks were retried past it, and finished once the endpoint let them
    assert max(tries[f"summary:{row}"] for row in a_rows) > 2
    assert len(of_kind(sink.events, "salvage_started")) > 1
    assert summary.outcome == "complete" and not of_kind(sink.events, "shutdown")
    assert unpaired_intervals(sink.events) == []


def test_wait_policy_gives_up_when_the_breaker_was_open_breaker_max_wait_s_in_total():
    def refused_but_once(index: int, prompt: str) -> float | Exception:
        return 0.01 if index == 12 else _rate_limited()

    pipeline = chain3(
        "http://127.0.0.1:9/v1",
        records=2,
        buffer_size=2,
        max_parallel=1,
        breaker_policy="wait",
        breaker_window_s=2.0,  # 1 request per 1 s cooldown: a window holds 2–3 attempts
        breaker_min_attempts=2,
        breaker_max_wait_s=20.0,
    )
    summary, sink, writer = drive(pipeline, refused_but_once, step=0.01)
    assert summary.outcome == "shutdown" and summary.reason == "endpoint_saturated"
    assert "waited 20 s in total" in (summary.message or "")
    [shutdown] = sink.of_kind("shutdown")
    # the one success closed the breaker for a while: that time is not counted
    saturated_s, opened_at = 0.0, None
    for change in sink.of_kind("breaker"):
        if change.state == "closed" and opened_at is not None:
            saturated_s += (change.t_ns - opened_at) / 1e9
            opened_at = None
        elif change.state != "closed" and opened_at is None:
            opened_at = change.t_ns
    assert [b.state for b in sink.of_kind("breaker")].count("closed") == 1
    assert opened_at is not None
    saturated_s += (shutdown.t_ns - opened_at) / 1e9
    assert abs(saturated_s - 20.0) < 1e-6
    assert summary.drops_by_reason == {"shutdown": 2 - len(writer.rows)}
    assert unpaired_intervals(sink.events) == []
