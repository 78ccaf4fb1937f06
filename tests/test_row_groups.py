"""Tests of row-group admission targets (adaptive widening) and the in-order checkpoint."""

from __future__ import annotations

from scheduler_support import MemoryWriter, plain_pipeline

from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.engine.rows.row_groups import (
    AdmissionTarget,
    Checkpointer,
    row_group_bounds,
    row_group_count,
)
from ddscope.engine.scheduling.tasks import RowGroup, plan_columns
from ddscope.events import EventBus, ListSink


def test_bounds_cover_every_row_once():
    assert row_group_count(10, 4) == 3
    assert [row_group_bounds(10, 4, g) for g in range(3)] == [(0, 4), (4, 4), (8, 2)]
    assert row_group_count(8, 8) == 1


def test_fixed_target_ignores_idle_capacity():
    target = AdmissionTarget.from_settings(2, 8)
    assert target.should_admit(active=1, idle_model_slots=0, queued_model_tasks=50)
    assert not target.should_admit(active=2, idle_model_slots=16, queued_model_tasks=0)


def test_adaptive_widens_only_while_capacity_idles_without_ready_work():
    target = AdmissionTarget.from_settings("adaptive", 4)
    assert target.should_admit(active=0, idle_model_slots=0, queued_model_tasks=0)
    assert target.should_admit(active=1, idle_model_slots=8, queued_model_tasks=0)
    assert target.should_admit(active=2, idle_model_slots=8, queued_model_tasks=7)
    assert not target.should_admit(active=2, idle_model_slots=8, queued_model_tasks=8)
    assert not target.should_admit(active=2, idle_model_slots=0, queued_model_tasks=0)  # cooldown
    assert not target.should_admit(active=4, idle_model_slots=16, queued_model_tasks=0)  # cap


def _resolved_group(index: int, size: int = 2) -> RowGroup:
    plans = plan_columns(plain_pipeline())
    group = RowGroup(index, index * size, size, plans, seed=0)
    group.start()  # sampler + expression only: resolved at once
    return group


def test_checkpoints_are_written_in_row_group_order():
    sink, writer = ListSink(), MemoryWriter()
    checkpointer = Checkpointer(writer, Emitter(EventBus([sink]), FakeClock()))
    assert checkpointer.finished(_resolved_group(1)) == []  # waits for group 0
    assert checkpointer.waiting == 1 and writer.groups == []
    written = checkpointer.finished(_resolved_group(0))
    assert [g.index for g in written] == [0, 1]
    assert [row["_row"] for row in writer.rows] == [0, 1, 2, 3]
    assert [(e.row_group, e.outcome) for e in sink.of_kind("row_group_finished")] == [
        (0, "checkpointed"),
        (1, "checkpointed"),
    ]
    assert checkpointer.rows_written == 4


def test_an_abandoned_group_writes_its_completed_rows_only():
    sink, writer = ListSink(), MemoryWriter()
    checkpointer = Checkpointer(writer, Emitter(EventBus([sink]), FakeClock()))
    group = RowGroup(0, 0, 3, plan_columns(plain_pipeline(model=True)), seed=0)
    group.start()
    group.complete_cell(1, "summary", "S")
    for row in group.unresolved_rows():
        group.drop(row, "shutdown")
    checkpointer.finished(group, abandoned=True)
    assert [row["_row"] for row in writer.rows] == [1]
    [event] = sink.of_kind("row_group_finished")
    assert (event.outcome, event.rows_completed, event.rows_dropped) == ("abandoned", 1, 2)
