"""Acceptance: ``ddtrace health`` on records of REAL runs — the engine against the mock endpoint
over HTTP on 127.0.0.1 — one per verdict. Each test checks the verdict, its reasons and key
figures against values computed here, independently, from the record's events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import JsonlRowWriter
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus
from ddscope.exporters.health import analyze
from ddscope.exporters.health.report import HealthReport, Thresholds
from ddscope.mock.server import MockServer
from ddscope.record.jsonl import JsonlRecorder

DOMAIN = "mock/mock-model"
S = 1e9


def chain3(
    endpoint: str,
    *,
    records: int,
    max_parallel: int = 4,
    timeout_s: float = 10.0,
    values: list[str] | None = None,
    **run: Any,
) -> Pipeline:
    """SCENARIOS.md's chain-3: topic → summary → analysis → rewrite, one model alias."""
    return Pipeline.from_dict({
        "name": "chain-3",
        "providers": [{"name": "mock", "endpoint": endpoint}],
        "models": [{"alias": "m", "provider": "mock", "model": "mock-model",
                    "max_parallel_requests": max_parallel, "timeout_s": timeout_s}],
        "columns": [
            {"name": "topic", "type": "sampler", "sampler": "category",
             "values": values or ["a", "b", "c"]},
            {"name": "summary", "type": "llm_text", "model": "m", "prompt": "Sum {{ topic }}"},
            {"name": "analysis", "type": "llm_text", "model": "m", "prompt": "An {{ summary }}"},
            {"name": "rewrite", "type": "llm_text", "model": "m", "prompt": "Re {{ analysis }}"},
        ],
        "run": {"num_records": records, "buffer_size": 4, "salvage_pause_s": 0.05, **run},
    })  # fmt: skip


def record_run(directory: Path, name: str, knobs: dict[str, Any], **pipeline: Any) -> Path:
    """Runs chain-3 against a mock endpoint with ``knobs``; returns the run.jsonl path."""
    path = directory / f"{name}.jsonl"
    with MockServer(**knobs) as server:
        bus = EventBus([JsonlRecorder(path)])
        writer = JsonlRowWriter(directory / f"{name}.data.jsonl")
        summary: RunSummary = asyncio.run(
            run_pipeline(chain3(server.base_url, **pipeline), bus=bus, output=writer)
        )
    assert summary.run_id  # the run happened; its record is complete
    return path


SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # S5-like, small: a healthy endpoint
    "healthy": ({"latency_ms": 5}, {"records": 12}),
    # some 429s early (2 of every 10 for 0.3 s; no Retry-After: the 0.1 s default cooldown)
    "degraded": (
        {"latency_ms": 5, "rate_limit_k": 2, "rate_limit_n": 10, "rate_limit_for_s": 0.3},
        {"records": 16, "default_cooldown_s": 0.1},
    ),
    # S1 scaled down: 9 of every 10 → 429; Retry-After is whole seconds, so the cooldown is
    # shortened with no Retry-After and a 0.2 s default; the breaker stops the run
    "saturated": (
        {"rate_limit_k": 9, "rate_limit_n": 10},
        {"records": 5, "buffer_size": 5, "default_cooldown_s": 0.2, "breaker_window_s": 1.0},
    ),
    # non-retryable drops: the endpoint refuses prompts containing "poison" (HTTP 400)
    "dropped": ({"fail_marker": "poison"}, {"records": 12, "values": ["a", "b", "poison"]}),
    # every request fails with 500: the error-rate window shuts the run down
    "error_rate": ({"error_rate": 1.0}, {"records": 8, "error_rate_window": 10}),
    # S4-like narrow frontier: one row group of 2 rows at a time, 8 request slots
    "narrow": (
        {"latency_ms": 10},
        {"records": 12, "buffer_size": 2, "max_parallel": 8, "row_groups_in_flight": 1},
    ),
    # one request hangs (arrival 2 of 7); the model times out after 1 s: no progress meanwhile
    "stalled": (
        {"latency_ms": 5, "hang_rate": 0.2, "hang_s": 2.0},
        {"records": 2, "max_parallel": 1, "timeout_s": 1.0, "retry_backoff_max_s": 0.2,
         "retry_backoff_base_s": 0.2},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("real-runs")
    return {
        name: record_run(directory, name, knobs, **pipeline)
        for name, (knobs, pipeline) in SCENARIOS.items()
    }


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def of_kind(items: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (e for e in items if e["kind"] == kind)


def share_429(items: list[dict[str, Any]]) -> float:
    finished = [e for e in of_kind(items, "attempt_finished") if e["domain"] == DOMAIN]
    return sum(e["outcome"] == "rate_limited" for e in finished) / len(finished)


def time_at_floor_s(items: list[dict[str, Any]], max_parallel: int) -> float:
    """Replays the limit changes: total time with the limit at 1, up to the run's end."""
    limit, since, total = max_parallel, items[0]["t_ns"], 0
    for e in of_kind(items, "limit_changed"):
        if limit == 1:
            total += e["t_ns"] - since
        limit, since = e["new"], e["t_ns"]
    if limit == 1:
        total += items[-1]["t_ns"] - since
    return total / S


def idle_slot_s(items: list[dict[str, Any]], capacity: int) -> float:
    """capacity × window − the time attempts were on the wire (clipped to the window)."""
    start, end = items[0]["t_ns"], items[-1]["t_ns"]
    opened: dict[tuple[int, int], int] = {}
    busy = 0
    for e in items:
        key = (e.get("request_id"), e.get("attempt"))
        if e["kind"] == "attempt_started":
            opened[key] = e["t_ns"]  # type: ignore[index]
        elif e["kind"] == "attempt_finished" and key in opened:
            busy += e["t_ns"] - opened.pop(key)  # type: ignore[arg-type]
    busy += sum(end - t for t in opened.values())
    return (capacity * (end - start) - busy) / S


def levels_above_info(report: HealthReport) -> set[str]:
    return {f.code for f in report.findings if f.level != "info"}


def test_healthy_run(runs):
    report = analyze(runs["healthy"])
    assert report.verdict == "healthy" and report.reasons == []
    assert levels_above_info(report) == set()
    assert report.totals.outcome == "complete"
    assert (report.totals.rows_completed, report.totals.rows_dropped) == (12, 0)
    d = report.domains[0]
    assert d.attempts == {"ok": 36} and d.share_429 == 0.0 and d.tokens_out > 0
    assert d.attempt_ok.count == 36 and 0 < d.attempt_ok.p50 <= d.attempt_ok.p95


def test_degraded_run_has_some_429s(runs):
    items = events(runs["degraded"])
    report = analyze(runs["degraded"])
    assert report.verdict == "degraded" and "rate_limited" in report.reasons
    assert report.totals.outcome == "complete" and report.totals.rows_completed == 16
    d = report.domains[0]
    assert 0 < d.share_429 < 0.5
    assert d.share_429 == pytest.approx(share_429(items))
    assert d.cooldowns.count == sum(1 for _ in of_kind(items, "cooldown_started")) > 0
    assert d.limit.min < d.limit.initial == 4


def test_saturated_run_names_the_domain_and_its_floor(runs):
    items = events(runs["saturated"])
    report = analyze(runs["saturated"])
    assert report.verdict == "saturated" and report.reasons == ["breaker_opened"]
    assert report.totals.outcome == "shutdown" and report.totals.reason == "endpoint_saturated"
    d = report.domains[0]
    assert d.breaker_openings == 1 and d.breaker_events[0].state == "open"
    assert d.share_429 == pytest.approx(share_429(items)) and d.share_429 > 0.8
    assert d.time_at_floor_s == pytest.approx(time_at_floor_s(items, 4), abs=1e-6)
    assert d.time_at_floor_s > 0 and d.limit.min == 1
    finding = next(f for f in report.findings if f.code == "breaker_opened")
    total = sum(1 for e in of_kind(items, "attempt_finished"))
    assert finding.domain == DOMAIN and "of recent requests refused" in finding.message
    assert f"refused {d.share_429:.0%} of {total} requests" in finding.recommendation
    assert "raise its quota or lower max_parallel_requests" in finding.recommendation
    assert report.scheduler.shutdown is not None
    assert report.scheduler.shutdown.domain == DOMAIN
    assert "shutdown" in report.totals.drops_by_reason  # the unfinished rows, not a failure


def test_failed_run_with_non_retryable_drops(runs):
    items = events(runs["dropped"])
    dropped = sorted(e["row"] for e in of_kind(items, "row_dropped"))
    report = analyze(runs["dropped"])
    assert dropped and report.verdict == "failed" and report.reasons == ["rows_dropped"]
    assert report.totals.drops_by_reason == {"client_error": len(dropped)}
    finding = next(f for f in report.findings if f.code == "rows_dropped")
    assert f"client_error ×{len(dropped)}" in finding.message
    assert f"inspect the prompt of row {dropped[0]} (column summary)" in finding.recommendation
    assert report.totals.rows_completed == 12 - len(dropped)


def test_failed_run_shut_down_by_the_error_rate(runs):
    report = analyze(runs["error_rate"])
    assert report.verdict == "failed" and "error_rate_shutdown" in report.reasons
    assert report.totals.outcome == "shutdown" and report.totals.reason == "error_rate"
    d = report.domains[0]
    assert d.attempts.get("server_error", 0) >= 10 and "ok" not in d.attempts
    errors = next(f for f in report.findings if f.code == "request_errors")
    assert "5xx" in errors.recommendation


def test_stalled_run_points_at_the_hanging_request(runs):
    items = events(runs["stalled"])
    report = analyze(runs["stalled"], thresholds=Thresholds(stall_s=0.5))
    assert report.verdict == "stalled" and report.reasons == ["no_progress"]
    assert report.totals.outcome == "complete"
    gap = report.scheduler.longest_no_progress
    assert gap is not None and gap.cause == "on_the_wire"
    timeouts = [e for e in of_kind(items, "attempt_finished") if e["outcome"] == "timeout"]
    assert len(timeouts) == 1
    assert 1.0 <= gap.duration_s < 1.5  # the 1 s model timeout, plus the retry
    assert gap.start_s <= timeouts[0]["t_ns"] / S <= gap.end_s
    finding = next(f for f in report.findings if f.code == "no_progress")
    assert "timeout_s" in finding.recommendation
    assert analyze(runs["stalled"]).verdict == "degraded"  # the 30 s default: just a timeout


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_idle_attribution_sums_to_idle_time(runs, name):
    items = events(runs[name])
    capacity = SCENARIOS[name][1].get("max_parallel", 4)
    d = analyze(runs[name]).domains[0]
    expected = idle_slot_s(items, capacity)
    parts = d.idle.ready_work_waiting.total_slot_s + d.idle.no_ready_work.total_slot_s
    assert parts == pytest.approx(expected, rel=0.01)
    assert d.idle.idle_slot_s == pytest.approx(expected, rel=0.01)
    assert d.idle.capacity_slot_s == pytest.approx(d.idle.busy_slot_s + expected, rel=0.01)


def test_narrow_frontier_idle_is_no_ready_work_and_says_what_to_raise(runs):
    report = analyze(runs["narrow"])
    assert report.verdict == "healthy"
    d = report.domains[0]
    none = d.idle.no_ready_work
    assert none.total_slot_s > 0.5 * d.idle.capacity_slot_s
    assert none.horizon_slot_s > 0 and none.dependencies_slot_s > 0
    finding = next(f for f in report.findings if f.code == "no_ready_work")
    assert finding.level == "info"
    assert "raise row_groups_in_flight (now 1) or use adaptive" in finding.recommendation


def test_saturated_run_idle_is_mostly_cooldown_and_breaker(runs):
    d = analyze(runs["saturated"]).domains[0]
    waiting = d.idle.ready_work_waiting
    blocked = waiting.cooldown_slot_s + waiting.breaker_slot_s + waiting.shutdown_slot_s
    assert blocked > 0.5 * d.idle.idle_slot_s


def test_at_before_the_breaker_is_not_yet_saturated(runs):
    items = events(runs["saturated"])
    opened = next(of_kind(items, "breaker"))["t_ns"] / S
    report = analyze(runs["saturated"], at_s=opened - 0.01)
    assert report.totals.state == "running" and report.verdict not in ("saturated", "failed")
    assert report.domains[0].breaker_openings == 0
    health = report.engine_health
    assert health is None or health.t_s <= opened - 0.01
