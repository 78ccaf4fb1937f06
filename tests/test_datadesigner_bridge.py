"""The live bridge's ordering, on DataDesigner-shaped events (no DataDesigner needed).

DataDesigner's admission controller publishes a request's events when the *calling* waiter's
acquire returns, so a request's ``request_lease_acquired`` can arrive after its
``request_lease_released``. The bridge puts events back in capture order before translating;
these tests deliver a request's events scrambled exactly that way."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from datadesigner_support import SyntheticDD, synthetic_events

from ddscope.events import EventSink, ListSink
from ddscope.integrations.datadesigner.live import LiveRun, _Bridge
from ddscope.record.jsonl import read_events

KEY = {"provider_name": "mock", "model_id": "mock", "domain": "chat"}


def _bridge(tmp_path: Path, reorder_s: float) -> tuple[_Bridge, ListSink, LiveRun]:
    sink, live = ListSink(), LiveRun()

    def extra() -> tuple[list[EventSink], Any]:
        return [sink], list

    return _Bridge(tmp_path / "run.jsonl", extra, live, reorder_s), sink, live


def _scheduler_events(t0: float) -> dict[str, dict[str, Any]]:
    """job_started, one summary cell's lease (execution task-exec-2), job_completed."""
    lines = synthetic_events(SyntheticDD(records=1, buffer_size=1, t0=t0))
    by_kind: dict[str, dict[str, Any]] = {}
    for line in lines:
        corr = line["captured_correlation"]
        if corr["task_column"] in (None, "summary"):
            by_kind.setdefault(line["event_kind"], line)
    return by_kind


def _request(kind: str, at: float, outcome: str | None = None) -> dict[str, Any]:
    return {
        "event_kind": kind,
        "captured_at_monotonic": at,
        "sequence": 0,
        "captured_correlation": {"task_execution_id": "task-exec-2", "row_group": 0},
        "request_attempt_id": "request-1",
        "request_lease_id": "rl-1",
        "request_resource_key": KEY,
        "reason_or_outcome": outcome,
        "pressure_snapshot": {"cooldown_remaining_seconds": 0.0},
        "diagnostics": {},
    }


def _deliver_scrambled(bridge: _Bridge, t0: float) -> None:
    s = _scheduler_events(t0)
    lease_at = s["task_lease_acquired"]["captured_at_monotonic"]
    for kind in ("scheduler_job_started", "row_group_admitted", "task_lease_acquired"):
        bridge.emit_scheduler_event(s[kind])
    bridge.emit_scheduler_event(s["worker_spawned"])
    # as DataDesigner delivers them: the release first, the admission after it
    bridge.on_request_event(_request("request_wait_started", lease_at + 0.002))
    bridge.on_request_event(_request("request_lease_released", lease_at + 0.010, "success"))
    bridge.on_request_event(_request("request_wait_completed", lease_at + 0.004))
    bridge.on_request_event(_request("request_lease_acquired", lease_at + 0.004))
    for kind in ("task_completed", "task_lease_released"):
        bridge.emit_scheduler_event(dict(s[kind], captured_at_monotonic=lease_at + 0.012))
    bridge.emit_scheduler_event(
        dict(s["scheduler_job_completed"], captured_at_monotonic=lease_at + 0.02)
    )


def test_events_delivered_out_of_order_are_translated_in_capture_order(tmp_path: Path) -> None:
    bridge, sink, live = _bridge(tmp_path, reorder_s=3600)
    _deliver_scrambled(bridge, time.monotonic() - 1.0)
    bridge.close()
    kinds = [e.kind for e in sink.events if e.kind.startswith(("wait", "attempt"))]
    assert kinds == ["wait_started", "wait_finished", "attempt_started", "attempt_finished"]
    by_kind = {e.kind: e for e in sink.events}
    assert by_kind["wait_finished"].outcome == "admitted"
    assert by_kind["attempt_finished"].outcome == "ok"
    attempt = by_kind["attempt_finished"].t_ns - by_kind["attempt_started"].t_ns
    assert abs(attempt - 6_000_000) < 10_000  # 6 ms, from the captured times
    assert by_kind["attempt_started"].lease_id == by_kind["lease_started"].lease_id
    assert live.late_events == 0 and live.errors == 0 and live.records == [tmp_path / "run.jsonl"]
    _, recorded = read_events(tmp_path / "run.jsonl")
    assert [e.kind for e in recorded] == [e.kind for e in sink.events]


def test_without_reordering_the_stragglers_are_late_and_counted_not_raised(tmp_path: Path) -> None:
    bridge, sink, live = _bridge(tmp_path, reorder_s=0.0)
    _deliver_scrambled(bridge, time.monotonic() - 1.0)
    bridge.close()
    assert live.late_events == 2 and live.errors == 0
    assert not sink.of_kind("attempt_started")  # what reordering exists to prevent
    assert sink.of_kind("run_finished")[0].outcome == "complete"


def test_waiting_events_go_out_on_a_tick_while_datadesigner_is_quiet(tmp_path: Path) -> None:
    # reorder_s is long enough that a loaded machine cannot age the event past it between its
    # capture and the first check, and short enough that the ticks release it well before 5 s
    bridge, sink, _ = _bridge(tmp_path, reorder_s=1.0)
    s = _scheduler_events(time.monotonic())
    bridge.emit_scheduler_event(s["scheduler_job_started"])
    # its own capture time (1 ms after the job's start): never "late", and younger than reorder_s
    bridge.emit_scheduler_event(s["row_group_admitted"])
    assert not sink.of_kind("row_group_started")  # younger than reorder_s: still waiting
    deadline = time.monotonic() + 5
    while not sink.of_kind("row_group_started") and time.monotonic() < deadline:
        time.sleep(0.02)
        bridge.tick()
    assert sink.of_kind("row_group_started")
    bridge.close()
    assert sink.closed


def test_an_existing_record_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "run.jsonl").write_text("an earlier run\n")
    for _ in range(2):
        bridge, _, live = _bridge(tmp_path, reorder_s=0.0)
        _deliver_scrambled(bridge, time.monotonic() - 1.0)
        bridge.close()
    assert (tmp_path / "run.jsonl").read_text() == "an earlier run\n"
    assert [p.name for p in sorted(tmp_path.glob("run-*.jsonl"))] == ["run-2.jsonl", "run-3.jsonl"]
    assert live.records == [tmp_path / "run-3.jsonl"]
    assert "run.jsonl exists; this job is recorded in run-3.jsonl" in live.warnings[0]
