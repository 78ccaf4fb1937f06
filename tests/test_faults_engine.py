"""Engine faults against the real mock endpoint: a row writer or a record that fails mid-run,
memory held by groups waiting for salvage, huge row groups, a stop requested from outside."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest
from scheduler_support import MemoryWriter, as_dicts, chain3

from ddscope.engine.rows.output import JsonlRowWriter, OutputWriteError, read_rows
from ddscope.engine.rows.row_groups import MAX_GROUP_ROWS, AdmissionTarget
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.events import EventBus, ListSink
from ddscope.mock import MockServer
from ddscope.record.jsonl import JsonlRecorder


class FailingWriter(MemoryWriter):
    """A row writer whose ``fail_at``-th write raises the OS error a full disk gives."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device", "out/data.jsonl")
        super().write_rows(rows)


class FailingSink(ListSink):
    """An essential sink (like the recorder) that fails at its ``fail_at``-th event."""

    essential = True

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def handle(self, event: Any) -> None:
        if len(self.events) + 1 == self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        super().handle(event)


def _run(pipeline: Any, writer: Any, *sinks: Any, **kwargs: Any) -> tuple[RunSummary, ListSink]:
    record = ListSink()
    summary = asyncio.run(
        run_pipeline(pipeline, bus=EventBus([record, *sinks]), output=writer, **kwargs)
    )
    return summary, record


def test_a_writer_failing_at_its_third_write_fails_the_run_promptly(srv: MockServer) -> None:
    srv.update(latency_ms=2)
    writer = FailingWriter(fail_at=3)
    summary, record = _run(chain3(srv.base_url, records=200, buffer_size=5), writer)
    assert summary.outcome == "failed" and summary.reason == "write_failed"
    assert "No space left on device" in (summary.message or "")
    assert "out/data.jsonl" in (summary.message or "")
    # only what is on disk counts as completed, and the record says the same
    assert summary.rows_completed == len(writer.rows) == 10
    [finished] = record.of_kind("run_finished")
    assert (finished.outcome, finished.rows_completed) == ("failed", 10)
    written = [e.row_group for e in record.of_kind("row_group_finished")]
    assert written == [0, 1]  # the group that failed is not claimed as checkpointed
    assert srv.stats().requests < 200 * 3  # stopped, not run to the end
    assert writer.closed


def test_a_real_disk_error_leaves_whole_rows_only(srv: MockServer, tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC: the run fails and names it."""
    srv.update(latency_ms=1)
    writer = JsonlRowWriter("/dev/full")
    summary, _ = _run(chain3(srv.base_url, records=20, buffer_size=5), writer)
    assert summary.outcome == "failed" and summary.reason == "write_failed"
    assert summary.message is not None
    assert summary.message.startswith("/dev/full: cannot write rows: No space left on device")
    assert summary.rows_completed == 0


def test_a_record_that_fails_mid_run_fails_the_run(srv: MockServer) -> None:
    srv.update(latency_ms=2)
    writer = MemoryWriter()
    summary, _record = _run(
        chain3(srv.base_url, records=200, buffer_size=5), writer, FailingSink(40)
    )
    assert summary.outcome == "failed" and summary.reason == "record_write_failed"
    assert "Input/output error" in (summary.message or "")
    assert summary.rows_completed == len(writer.rows) < 200
    assert srv.stats().requests < 200 * 3


def test_a_record_that_cannot_be_created_stops_before_the_dataset_is_touched(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("previous\n")
    with MockServer() as fresh:  # its own: no straggler of an earlier test is counted
        pipeline = chain3(fresh.base_url, records=5)
        recorder = JsonlRecorder("/dev/full")
        with pytest.raises(OutputWriteError, match=r"/dev/full: cannot write: No space left"):
            _run(pipeline, JsonlRowWriter(data), recorder)
        assert fresh.stats().requests == 0
    assert data.read_text() == "previous\n"


def test_groups_held_for_salvage_are_bounded_and_salvaged_early(srv: MockServer) -> None:
    """The first 24 requests fail (503), so group 0 keeps deferred tasks while the main pass
    goes on: the unwritten groups stay under the cap, and salvage runs before the pass ends."""
    srv.update(error_burst=24, latency_ms=1)
    pipeline = chain3(
        srv.base_url, records=400, buffer_size=5, max_parallel=8, error_rate_window=200
    )
    writer = MemoryWriter()
    summary, record = _run(pipeline, writer)
    assert summary.outcome == "complete", summary.message
    assert [r["_row"] for r in writer.rows] == list(range(400))
    cap = AdmissionTarget.from_settings("adaptive", pipeline.run.max_row_groups_in_flight)
    unwritten = peak = 0
    first_salvage = last_admission = None
    for i, event in enumerate(as_dicts(record.events)):
        if event["kind"] == "row_group_started":
            unwritten += 1
            last_admission = i
        elif event["kind"] == "row_group_finished":
            unwritten -= 1
        elif event["kind"] == "salvage_started" and first_salvage is None:
            first_salvage = i
        peak = max(peak, unwritten)
    assert peak <= cap.max_unwritten
    assert first_salvage is not None and last_admission is not None
    assert first_salvage < last_admission  # a round ran mid-pass to free memory


def test_a_huge_buffer_size_is_processed_in_slices(srv: MockServer) -> None:
    pipeline = chain3(srv.base_url, records=2500, buffer_size=100_000, max_parallel=32)
    summary, record = _run(pipeline, MemoryWriter())
    assert summary.outcome == "complete"
    sizes = [e.rows for e in record.of_kind("row_group_started")]
    assert sizes == [MAX_GROUP_ROWS, MAX_GROUP_ROWS, 500]
    assert record.of_kind("run_started")[0].row_groups == 3


def test_a_stop_request_returns_a_cancelled_summary(srv: MockServer, tmp_path: Path) -> None:
    srv.update(latency_ms=20)
    writer = JsonlRowWriter(tmp_path / "data.jsonl")

    async def run_then_stop() -> tuple[RunSummary, ListSink]:
        stop = asyncio.Event()
        record = ListSink()
        run = asyncio.create_task(
            run_pipeline(
                chain3(srv.base_url, records=2000, buffer_size=5),
                bus=EventBus([record]),
                output=writer,
                stop_requested=stop,
            )
        )
        while not record.of_kind("row_group_finished"):
            await asyncio.sleep(0.01)
        stop.set()
        return await asyncio.wait_for(run, timeout=10), record

    summary, record = asyncio.run(run_then_stop())
    assert (summary.outcome, summary.reason) == ("cancelled", "cancelled")
    assert record.of_kind("run_finished")[0].outcome == "cancelled"
    assert summary.rows_completed == len(read_rows(tmp_path / "data.jsonl")) > 0
