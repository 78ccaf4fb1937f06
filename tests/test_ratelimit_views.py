"""The provider's quota headers reach every view: the record, the attempt spans and the gauge
(OTel replay), and the Perfetto domain tracks — from a real run against the mock's token bucket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from otel_support import points, replay
from perfetto_support import ParsedTrace, read_trace
from scheduler_support import MemoryWriter, chain3

from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EventBus
from ddscope.exporters.trace.perfetto import export_perfetto
from ddscope.mock import MockServer
from ddscope.record.jsonl import JsonlRecorder, RunReader


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quota") / "run.jsonl"
    with MockServer(quota_rate=20.0, quota_burst=3, latency_ms=5) as server:
        pipeline = chain3(server.base_url, records=4)
        asyncio.run(
            run_pipeline(pipeline, bus=EventBus([JsonlRecorder(path)]), output=MemoryWriter())
        )
    return path


def test_every_answer_records_the_quota_it_reported(record: Path) -> None:
    finished = [e for e in RunReader(record) if e.kind == "attempt_finished"]
    assert finished and all(e.ratelimit_remaining_requests is not None for e in finished)
    assert all(0 <= (e.ratelimit_remaining_requests or 0) <= 3 for e in finished)
    assert all(e.ratelimit_reset_requests_s is not None for e in finished)
    pauses = [e for e in RunReader(record) if e.kind == "cooldown_started" and e.cause == "quota"]
    assert pauses  # 12 requests through a bucket of 3: it paused for the reset


def test_attempt_spans_and_the_gauge_carry_the_quota(record: Path) -> None:
    otel = replay(record)
    chats = [s for s in otel.spans() if s.name.startswith("chat ")]
    assert chats and all("ddscope.ratelimit.remaining_requests" in s.attributes for s in chats)
    assert all("ddscope.ratelimit.reset_requests_s" in s.attributes for s in chats)
    (gauge,) = points(otel.metrics(), "ddscope.ratelimit.remaining_requests")
    last = [e for e in RunReader(record) if e.kind == "attempt_finished"][-1]
    assert gauge.value == last.ratelimit_remaining_requests
    assert dict(gauge.attributes)["gen_ai.request.model"] == "mock-model"


def test_perfetto_shows_a_quota_counter_and_quota_pauses(record: Path) -> None:
    out = record.with_suffix(".pftrace")
    export_perfetto(record, out)
    trace: ParsedTrace = read_trace(out)
    domain = trace.find("mock/mock-model")
    remaining = trace.counter_values(trace.find("quota: remaining requests", parent=domain))
    finished = [e for e in RunReader(record) if e.kind == "attempt_finished"]
    assert remaining == [e.ratelimit_remaining_requests for e in finished]
    assert any(s.name == "quota pause" for s in trace.slices)
