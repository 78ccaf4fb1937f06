"""Whole runs against rate-limited endpoints (issue 11): scripted answers on a FakeClock for the
engine's decisions, and the real mock over 127.0.0.1 for what ``ddtrace health`` says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scheduler_support import MemoryWriter, chain3
from test_scheduler_clock import drive

from ddscope.engine.scheduler import run_pipeline
from ddscope.errors import RateLimited, ServerError
from ddscope.events import EventBus
from ddscope.exporters.health import analyze
from ddscope.exporters.health.report import Thresholds
from ddscope.mock import MockServer
from ddscope.record.jsonl import JsonlRecorder

NOWHERE = "http://127.0.0.1:9/v1"  # the scripted client never connects


def refused(retry_after_s: float = 1.0) -> RateLimited:
    return RateLimited("HTTP 429", retry_after_s=retry_after_s)


def server_error(retry_after_s: float | None = None) -> ServerError:
    error = ServerError("HTTP 503 Service Unavailable", status_code=503)
    error.retry_after_s = retry_after_s
    return error


# -- the engine's decisions, on a FakeClock ------------------------------------------------------


def test_429s_never_drop_a_row_while_the_breaker_is_closed_even_under_fail_fast() -> None:
    # Every other request refused; one try per pass and no salvage budget to speak of: before
    # issue 11 every refused row was dropped `retries_exhausted` after its last round.
    pipeline = chain3(NOWHERE, records=6, max_attempts_in_pass=1, salvage_rounds=0)
    summary, sink, writer = drive(
        pipeline, lambda i, prompt: refused() if i % 2 == 0 else 0.01, step=0.01
    )
    assert summary.outcome == "complete" and summary.rows_dropped == 0
    assert len(writer.rows) == 6
    assert sink.of_kind("salvage_started")  # they waited, round after round, paced by cooldowns
    assert sink.of_kind("breaker") == []


def test_a_fail_fast_stop_reports_unfinished_rows_as_saturation_not_exhaustion() -> None:
    pipeline = chain3(
        NOWHERE, records=4, max_attempts_in_pass=1, salvage_rounds=0, breaker_window_s=3.0
    )
    summary, sink, _ = drive(pipeline, lambda i, prompt: refused(), step=0.01)
    assert summary.outcome == "shutdown" and summary.reason == "endpoint_saturated"
    assert summary.drops_by_reason == {"shutdown": 4}
    assert all("endpoint_saturated" in d.message for d in sink.of_kind("row_dropped"))
    (opened,) = sink.of_kind("breaker")
    assert opened.reason == "sustained_429" and opened.window_s == 3.0
    assert "attempts refused" in (summary.message or "")


def test_5xx_retries_back_off_exponentially_with_full_jitter() -> None:
    pipeline = chain3(
        NOWHERE,
        records=1,
        max_parallel=1,
        max_attempts_in_pass=4,
        retry_backoff_base_s=1.0,
        retry_backoff_max_s=3.0,
    )
    summary, sink, _ = drive(
        pipeline, lambda i, prompt: server_error() if i < 3 else 0.01, step=0.005
    )
    assert summary.outcome == "complete" and summary.rows_dropped == 0
    finished = sink.of_kind("attempt_finished")
    started = sink.of_kind("attempt_started")
    backoffs = [f.backoff_s for f in finished[:3]]
    assert all(b is not None for b in backoffs)
    # the n-th backoff is uniform in [0, min(3, 1 · 2^(n−1))]: ceilings 1, 2, 3
    ceilings = (1.0, 2.0, 3.0)
    assert all(b is not None and b <= c for b, c in zip(backoffs, ceilings, strict=True))
    for failed, retry in zip(finished[:3], started[1:4], strict=True):
        gap_s = (retry.t_ns - failed.t_ns) / 1e9
        assert failed.backoff_s is not None and gap_s >= failed.backoff_s - 0.006
    assert finished[3].outcome == "ok" and finished[3].backoff_s is None


def test_a_503_with_retry_after_is_paced_like_a_429_and_spares_the_budget() -> None:
    # One try per pass, no salvage rounds: a plain 503 would drop the row at once.
    pipeline = chain3(NOWHERE, records=1, max_parallel=1, max_attempts_in_pass=1, salvage_rounds=0)
    summary, sink, _ = drive(
        pipeline, lambda i, prompt: server_error(2.0) if i < 2 else 0.01, step=0.01
    )
    assert summary.outcome == "complete" and summary.rows_dropped == 0
    cooldowns = sink.of_kind("cooldown_started")
    assert [(c.cause, c.duration_s) for c in cooldowns] == [("rate_limited", 2.0)] * 2
    assert all(f.backoff_s is None for f in sink.of_kind("attempt_finished"))


# -- what health says, on real runs against the mock --------------------------------------------


def record_run(tmp_path: Path, knobs: dict[str, Any], **run: Any) -> Path:
    path = tmp_path / "run.jsonl"
    with MockServer(**knobs) as server:
        pipeline = chain3(server.base_url, **run)
        bus = EventBus([JsonlRecorder(path)])
        asyncio.run(run_pipeline(pipeline, bus=bus, output=MemoryWriter()))
    return path


def codes(path: Path, **thresholds: Any) -> dict[str, str]:
    report = analyze(path, thresholds=Thresholds(**thresholds))
    return {f.code: f.level for f in report.findings}


def test_health_calls_a_run_paced_by_the_quota_quota_bound(tmp_path: Path) -> None:
    path = record_run(tmp_path, {"quota_rate": 20.0, "quota_burst": 4, "latency_ms": 5}, records=8)
    found = codes(path)
    assert found.get("quota_bound") == "info"
    assert "breaker_opened" not in found and "no_progress" not in found
    report = analyze(path)
    assert report.totals.rows_completed == 8 and report.domains[0].quota.pauses > 0


def test_health_calls_a_recovered_burst_a_transient_outage(tmp_path: Path) -> None:
    knobs = {"rate_limit_k": 10, "rate_limit_n": 10, "retry_after": "1", "rate_limit_for_s": 1.5}
    path = record_run(tmp_path, {**knobs, "latency_ms": 5}, records=4)
    found = codes(path, stall_s=1.0)  # the stall rule scaled down with the outage
    assert found.get("transient_outage") == "degraded"
    assert "no_progress" not in found and "breaker_opened" not in found
