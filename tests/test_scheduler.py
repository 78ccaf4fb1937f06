"""The scheduler against the real mock endpoint over HTTP: completeness, limits, failures."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter

import pytest
from scheduler_support import (
    MemoryWriter,
    chain3,
    max_concurrency,
    of_kind,
    unpaired_intervals,
)

from ddscope.engine.pipeline.samplers import sample_cell
from ddscope.engine.rows.output import JsonlRowWriter, read_rows
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus, ListSink
from ddscope.mock.server import MockServer
from ddscope.record.jsonl import JsonlRecorder, RunReader


def run(pipeline, sinks=(), writer=None) -> tuple[RunSummary, ListSink, MemoryWriter]:
    sink = ListSink()
    writer = writer or MemoryWriter()
    bus = EventBus([sink, *sinks])
    summary = asyncio.run(run_pipeline(pipeline, bus=bus, output=writer))
    assert sink.closed and writer.closed
    return summary, sink, writer


def test_chain3_produces_every_row_with_every_column_in_order():
    with MockServer(latency_ms=5) as srv:
        summary, sink, writer = run(chain3(srv.base_url, records=14))
    assert summary.outcome == "complete" and summary.rows_completed == 14
    assert [row["_row"] for row in writer.rows] == list(range(14))
    for row in writer.rows:
        assert set(row) == {"_row", "topic", "summary", "analysis", "rewrite"}
        assert all(isinstance(row[c], str) and row[c] for c in ("summary", "rewrite"))
    assert len(of_kind(sink.events, "attempt_finished")) == 42 == summary.requests
    finished = of_kind(sink.events, "run_finished")
    assert finished == [finished[0]] and finished[0]["rows_completed"] == 14
    assert unpaired_intervals(sink.events) == []


def test_leases_and_requests_never_exceed_their_limits():
    with MockServer(latency_ms=10, jitter_ms=5) as srv:
        pipeline = chain3(srv.base_url, records=24, max_parallel=3, row_groups_in_flight=4)
        summary, sink, _ = run(pipeline)
    assert summary.rows_completed == 24
    leases = max_concurrency(
        sink.events, "lease_started", "lease_finished", "lease_id", "resources"
    )
    attempts = max_concurrency(
        sink.events, "attempt_started", "attempt_finished", "request_id+attempt", "domain"
    )
    assert leases == {"llm_wait": 3, "request:mock/mock-model": 3}  # reached, never exceeded
    assert attempts == {"mock/mock-model": 3}
    assert all(h.leases <= 3 and h.in_flight <= 3 for h in sink.of_kind("health"))


def test_a_5xx_burst_is_retried_through_salvage_and_every_row_completes():
    with MockServer(error_burst=12) as srv:
        pipeline = chain3(srv.base_url, records=10, max_attempts_in_pass=2, error_rate_window=200)
        summary, sink, writer = run(pipeline)
    assert summary.outcome == "complete", summary.message
    assert summary.rows_completed == 10 and summary.rows_dropped == 0
    deferred = of_kind(sink.events, "task_deferred")
    assert deferred and {d["error_kind"] for d in deferred} == {"server_error"}
    rounds = of_kind(sink.events, "salvage_finished")
    assert rounds[0]["recovered"] == len(deferred) and rounds[-1]["still_deferred"] == 0
    assert [row["_row"] for row in writer.rows] == list(range(10))
    assert unpaired_intervals(sink.events) == []


def test_a_non_retryable_400_drops_exactly_the_affected_rows():
    values = ["a", "b", "poison"]
    with MockServer(fail_marker="poison") as srv:
        pipeline = chain3(srv.base_url, records=16, values=values)
        summary, sink, writer = run(pipeline)
    topic = pipeline.column("topic")
    poisoned = {r for r in range(16) if sample_cell(topic, pipeline.run.seed, r) == "poison"}
    assert poisoned and len(poisoned) < 16  # the seed gives a mix
    drops = of_kind(sink.events, "row_dropped")
    assert {d["row"] for d in drops} == poisoned and len(drops) == len(poisoned)
    assert {d["reason"] for d in drops} == {"client_error"}
    assert all("summary" in d["message"] and "not retryable" in d["message"] for d in drops)
    assert {row["_row"] for row in writer.rows} == set(range(16)) - poisoned
    assert summary.drops_by_reason == {"client_error": len(poisoned)}
    # a 400 is not retried: one attempt per poisoned row
    failed = [a for a in of_kind(sink.events, "attempt_finished") if a["status_code"] == 400]
    assert len(failed) == len(poisoned)
    assert unpaired_intervals(sink.events) == []


class _BreakAfterGroups:
    """A sink that turns the mock into a failing endpoint once N row groups are checkpointed."""

    def __init__(self, server: MockServer, groups: int) -> None:
        self.server, self.groups, self.seen = server, groups, 0

    def open(self, header) -> None:
        pass

    def handle(self, event) -> None:
        if event.kind == "row_group_finished":
            self.seen += 1
            if self.seen == self.groups:
                self.server.update(error_rate=1.0)

    def close(self) -> None:
        pass


def test_error_rate_shutdown_states_its_reason_and_keeps_checkpointed_rows():
    with MockServer(latency_ms=2) as srv:
        pipeline = chain3(
            srv.base_url,
            records=40,
            row_groups_in_flight=1,
            error_rate_window=10,
            error_rate_threshold=0.5,
        )
        summary, sink, writer = run(pipeline, sinks=[_BreakAfterGroups(srv, 2)])
    assert summary.outcome == "shutdown" and summary.reason == "error_rate"
    assert "server_error" in (summary.message or "")
    shutdown = of_kind(sink.events, "shutdown")
    assert len(shutdown) == 1 and shutdown[0]["reason"] == "error_rate"
    assert summary.rows_completed >= 8  # the two checkpointed groups are kept
    assert [row["_row"] for row in writer.rows] == list(range(summary.rows_completed))
    assert summary.rows_completed + summary.rows_dropped < 40  # it stopped early
    assert set(summary.drops_by_reason) <= {"shutdown"}
    assert of_kind(sink.events, "run_finished")[0]["reason"] == "error_rate"
    assert unpaired_intervals(sink.events) == []


def test_scaled_s2_admission_pressure_has_no_admission_timeouts():
    with MockServer(latency_ms=20) as srv:
        pipeline = chain3(
            srv.base_url,
            records=32,
            max_parallel=2,
            buffer_size=8,
            row_groups_in_flight=4,
            acquire_timeout_s=1.0,
        )
        summary, sink, writer = run(pipeline)
    assert (summary.rows_completed, summary.rows_dropped) == (32, 0)
    assert summary.admission_timeouts == 0
    assert not [w for w in of_kind(sink.events, "wait_finished") if w["outcome"] == "timeout"]
    assert len(writer.rows) == 32


def test_scaled_s1_saturated_endpoint_shuts_down_naming_the_domain():
    deadline_s = 25.0
    with MockServer(rate_limit_k=9, rate_limit_n=10, retry_after="1") as srv:
        pipeline = chain3(srv.base_url, records=5, buffer_size=5, breaker_window_s=5.0)
        started = time.monotonic()
        summary, sink, _ = run(pipeline)
        elapsed = time.monotonic() - started
    assert elapsed < deadline_s
    assert summary.outcome == "shutdown" and summary.reason == "endpoint_saturated"
    assert "'mock'" in (summary.message or "") and "'mock-model'" in (summary.message or "")
    shutdown = of_kind(sink.events, "shutdown")
    assert shutdown[0]["domain"] == "mock/mock-model"
    assert [b["state"] for b in of_kind(sink.events, "breaker")] == ["open"]
    assert summary.rows_completed + summary.rows_dropped == 5
    assert unpaired_intervals(sink.events) == []


class _OnFirstCheckpoint:
    """A sink that sets an asyncio.Event when the first row group is checkpointed."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    def open(self, header) -> None:
        pass

    def handle(self, event) -> None:
        if event.kind == "row_group_finished":
            self.reached.set()

    def close(self) -> None:
        pass


def test_cancellation_mid_run_leaves_a_readable_record_and_dataset(tmp_path):
    record, data = tmp_path / "run.jsonl", tmp_path / "data.jsonl"

    async def main(endpoint: str) -> None:
        pipeline = chain3(endpoint, records=40, max_parallel=2, row_groups_in_flight=1)
        trigger = _OnFirstCheckpoint()
        bus = EventBus([JsonlRecorder(record), trigger])
        run_task = asyncio.create_task(run_pipeline(pipeline, bus=bus, output=JsonlRowWriter(data)))
        await asyncio.wait_for(trigger.reached.wait(), timeout=20)
        run_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run_task

    with MockServer(latency_ms=20) as srv:
        asyncio.run(main(srv.base_url))
    reader = RunReader(record)
    events = list(reader)
    assert reader.stats.warnings == []
    finished = events[-1]
    assert finished.kind == "run_finished" and finished.outcome == "cancelled"
    assert unpaired_intervals(events) == []
    rows = read_rows(data)
    assert len(rows) == finished.rows_completed >= 4
    assert [row["_row"] for row in rows] == list(range(len(rows)))
    assert all(set(row) == {"_row", "topic", "summary", "analysis", "rewrite"} for row in rows)
    cancelled = [e for e in events if e.kind == "lease_finished" and e.outcome == "cancelled"]
    assert cancelled  # work was in flight and was closed off, not left open
    assert {e.reason for e in events if e.kind == "row_dropped"} == {"cancelled"}


# S1 scaled down: 9 of 10 requests refused (Retry-After 1 s) for the first few seconds, and a
# retry budget of 2 tries per task (1 per pass, 1 salvage round) that a 5 s window outlasts.
SATURATED_FOR_A_WHILE = dict(rate_limit_k=9, rate_limit_n=10, retry_after="1", rate_limit_for_s=5)
SMALL_BUDGET = dict(records=5, buffer_size=5, max_attempts_in_pass=1, salvage_rounds=1)
# The breaker's window scaled down with the scenario (the default 20 s outlasts its 5 s).
FAST_BREAKER = dict(breaker_window_s=2.0, breaker_min_attempts=3)


def test_breaker_wait_policy_outlasts_the_retry_budget_and_completes_every_row():
    with MockServer(**SATURATED_FOR_A_WHILE) as srv:
        pipeline = chain3(
            srv.base_url,
            **SMALL_BUDGET,
            **FAST_BREAKER,
            breaker_policy="wait",
            health_interval_s=0.5,
        )
        summary, sink, writer = run(pipeline)
    assert summary.outcome == "complete", summary.message
    assert (summary.rows_completed, summary.rows_dropped, len(writer.rows)) == (5, 0, 5)
    # the old budget was outlasted: rounds past salvage_rounds, tasks with more than 2 tries
    assert len(of_kind(sink.events, "salvage_started")) > 1
    tries = Counter(a["task_id"] for a in of_kind(sink.events, "attempt_started"))
    assert max(tries.values()) > 2
    states = [b["state"] for b in of_kind(sink.events, "breaker")]
    assert states[0] == "open" and states[-1] == "closed"
    assert not of_kind(sink.events, "shutdown") and not of_kind(sink.events, "row_dropped")
    times = [h["t_ns"] / 1e9 for h in of_kind(sink.events, "health")]
    assert max(b - a for a, b in itertools.pairwise([0.0, *times])) < 1.5  # never silent
    assert any("waited" in (h["note"] or "") for h in of_kind(sink.events, "health"))
    assert unpaired_intervals(sink.events) == []


def test_breaker_fail_fast_policy_stops_on_the_same_endpoint():
    with MockServer(**SATURATED_FOR_A_WHILE) as srv:
        pipeline = chain3(srv.base_url, **SMALL_BUDGET, **FAST_BREAKER, breaker_policy="fail_fast")
        summary, sink, _ = run(pipeline)
    assert summary.outcome == "shutdown" and summary.reason == "endpoint_saturated"
    assert "fail_fast" in (summary.message or "")
    assert summary.rows_completed + summary.rows_dropped == 5 and summary.rows_dropped > 0
    assert [b["state"] for b in of_kind(sink.events, "breaker")] == ["open"]
    assert unpaired_intervals(sink.events) == []


def test_breaker_wait_policy_gives_up_after_breaker_max_wait_s_on_a_saturated_endpoint():
    with MockServer(rate_limit_k=10, rate_limit_n=10, retry_after="1") as srv:  # never recovers
        pipeline = chain3(
            srv.base_url,
            **SMALL_BUDGET,
            max_parallel=2,
            breaker_policy="wait",
            **FAST_BREAKER,
            breaker_max_wait_s=1.5,
        )
        summary, sink, writer = run(pipeline)
    assert summary.outcome == "shutdown" and summary.reason == "endpoint_saturated"
    message = summary.message or ""
    assert re.search(r"waited \d+(\.\d)? s in total", message), message
    assert "'mock-model'" in message and "breaker_max_wait_s 1.5 s" in message
    [shutdown] = of_kind(sink.events, "shutdown")
    assert shutdown["domain"] == "mock/mock-model" and shutdown["message"] == message
    assert summary.drops_by_reason == {"shutdown": 5} and writer.rows == []
    assert unpaired_intervals(sink.events) == []
