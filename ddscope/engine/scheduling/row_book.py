"""What happens to the rows of the admitted row groups: a group admitted, a task's result
applied to its cell, a row dropped (once, with everything it had queued, deferred or running),
a task deferred for salvage, a group checkpointed when all its rows are resolved, and — when
a run stops — every unfinished row dropped and the groups written with what they completed.

The dispatcher (``dispatch.py``) leases and runs tasks; this is the bookkeeping of their rows.
It shares two things with the dispatcher: the ready queue (a finished cell may make others
ready; a dropped row's queued tasks leave it) and the runners (a dropped row's running tasks
are cancelled).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping

from ddscope import events
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import RowWriter
from ddscope.engine.rows.row_groups import Checkpointer, row_group_bounds
from ddscope.engine.scheduling.fair_queue import FairQueue
from ddscope.engine.scheduling.tasks import ColumnPlan, ModelTask, RowGroup, Settled
from ddscope.engine.scheduling.worker import TaskResult, Worker


class RowBook:
    def __init__(
        self,
        pipeline: Pipeline,
        plans: dict[str, ColumnPlan],
        emitter: Emitter,
        output: RowWriter,
        queue: FairQueue[ModelTask],
        workers: Mapping[asyncio.Task[TaskResult], Worker],
        *,
        buffer_size: int,
        resume_from: tuple[int, int],
        carried: Mapping[int, dict[str, object]] | None,
        on_write_failure: Callable[[str], None],
    ) -> None:
        """``resume_from``: (row groups, rows) already written by an earlier segment.
        ``carried``: rows completed by an earlier segment in groups admitted again (row →
        values): written with their group, not generated again. ``on_write_failure`` runs once
        per failed write of the data file or its journal, after :attr:`write_failure` is set."""
        self._emitter = emitter
        self._plans = plans
        self._queue = queue
        self._workers = workers  # the dispatcher's runners → their current cell (read only)
        self._num_records = pipeline.run.num_records
        self._seed = pipeline.run.seed
        self._buffer_size = buffer_size
        self._carried = dict(carried or {})
        self._on_failure = on_write_failure
        self.groups: dict[int, RowGroup] = {}  # admitted and not yet written
        self.deferred: list[ModelTask] = []
        self.drops_by_reason: Counter[str] = Counter()
        self.write_failure: str | None = None  # set by a failed write: the run must stop
        self._abandoned: set[int] = set()
        # the writer's journal of finished rows not yet in data.jsonl (resume needs no request
        # again for them); optional, see output.JsonlRowWriter.note_row
        self._note_row = getattr(output, "note_row", None)
        groups_done, rows_done = resume_from
        self.checkpointer = Checkpointer(
            output, emitter, self._write_failed, first_index=groups_done, rows_before=rows_done
        )

    def _write_failed(self, message: str) -> None:
        self.write_failure = self.write_failure or message
        self._on_failure(message)

    def admit(self, index: int) -> None:
        """Admits row group ``index``: its first cells computed, its ready tasks queued."""
        first, size = row_group_bounds(self._num_records, self._buffer_size, index)
        group = RowGroup(index, first, size, self._plans, self._seed)
        for row in group.rows:
            if row in self._carried:
                group.carry(row, self._carried.pop(row))
        self.groups[index] = group
        self._emitter.emit(
            events.RowGroupStarted(
                t_ns=self._emitter.t_ns(), row_group=index, first_row=first, rows=size
            )
        )
        self._absorb(group, group.start())
        self.checkpoint_if_resolved(group)

    def apply(self, task: ModelTask, result: TaskResult) -> None:
        """A task's result: its cell filled (and the cells it made ready queued), its row
        dropped, or the task deferred for salvage; the group checkpointed if resolved."""
        group = self.groups.get(task.row_group)
        if group is None:  # already written (a stop finalised it): nothing left to update
            return
        group.live -= 1
        if group.is_dropped(task.row):
            pass
        elif result.outcome == "ok":
            task.succeeded = True
            self._absorb(group, group.complete_cell(task.row, task.plan.name, result.value))
            values = group.values_if_complete(task.row)
            if values is not None and self._note_row is not None:
                self._journal(task.row, values)
        elif result.outcome == "dropped":
            message = (
                f"row {task.row} dropped: column {task.plan.name!r} failed with "
                f"{result.error_kind}, which is not retryable ({result.message})"
            )
            self.drop_row(group, task.row, result.error_kind or "error", message, task)
        elif result.outcome == "deferred":
            self._defer(group, task, result)
        self.checkpoint_if_resolved(group)

    def _journal(self, row: int, values: dict[str, object]) -> None:
        assert self._note_row is not None
        if self.write_failure is not None:
            return
        try:
            self._note_row(row, values)
        except Exception as exc:  # any writer failure stops the run the same way
            self._write_failed(str(exc))

    def _defer(self, group: RowGroup, task: ModelTask, result: TaskResult) -> None:
        group.deferred += 1
        self.deferred.append(task)
        self._emitter.emit(
            events.TaskDeferred(
                t_ns=self._emitter.t_ns(),
                task_id=task.task_id,
                row_group=task.row_group,
                column=task.plan.name,
                row=task.row,
                error_kind=result.error_kind or "server_error",
                attempts=task.attempts,
                message=result.message,
            )
        )

    def _absorb(self, group: RowGroup, settled: Settled) -> None:
        for failure in settled.failures:
            self.drop_row(
                group, failure.row, failure.reason, failure.message, None, column=failure.column
            )
        for task in settled.tasks:
            if not group.is_dropped(task.row):
                group.live += 1
                self._queue.push(task.plan.name, task, key=task.row)

    def requeue(self, tasks: list[ModelTask]) -> None:
        """Puts deferred tasks back into the ready queue (a salvage round)."""
        for task in tasks:
            group = self.groups[task.row_group]
            group.deferred -= 1
            group.live += 1
            self._queue.push(task.plan.name, task, key=task.row)

    def drop_row(
        self,
        group: RowGroup,
        row: int,
        reason: str,
        message: str,
        task: ModelTask | None,
        *,
        column: str | None = None,
    ) -> None:
        """Drops a row (once): its queued and deferred tasks are discarded, its running
        workers cancelled (their leases finish ``cancelled``)."""
        if not group.drop(row, reason):
            return
        self.drops_by_reason[reason] += 1
        self._emitter.emit(
            events.RowDropped(
                t_ns=self._emitter.t_ns(),
                row_group=group.index,
                row=row,
                column=task.plan.name if task else column,
                task_id=task.task_id if task else None,
                reason=reason,
                message=message,
            )
        )
        self._discard(group, lambda t: t.row == row)

    def checkpoint_if_resolved(self, group: RowGroup) -> None:
        """Writes the group (in order, see ``Checkpointer``) once all its rows are resolved."""
        if group.resolved:
            abandoned = group.index in self._abandoned
            for written in self.checkpointer.finished(group, abandoned=abandoned):
                self.groups.pop(written.index, None)

    def finalize(self, reason: str, why: str) -> None:
        """A stopped run: every unfinished row of an admitted group is dropped with ``reason``
        (``why`` is the stop's reason code, for the sentence); the groups are written with the
        rows they completed (outcome ``abandoned``)."""
        for index in sorted(self.groups):
            group = self.groups.get(index)
            if group is None or group.resolved:
                continue
            self._abandoned.add(index)
            self._drop_unfinished(group, reason, why)
            self.checkpoint_if_resolved(group)

    def _drop_unfinished(self, group: RowGroup, reason: str, why: str) -> None:
        """Drops every unresolved row of ``group`` at once: one pass over the queue, the
        deferred list and the workers for the whole group, not one per row (a stop of a large
        group would otherwise take time growing with the square of its size)."""
        rows = [row for row in group.unresolved_rows() if group.drop(row, reason)]
        if not rows:
            return
        self.drops_by_reason[reason] += len(rows)
        t_ns = self._emitter.t_ns()
        for row in rows:
            self._emitter.emit(
                events.RowDropped(
                    t_ns=t_ns,
                    row_group=group.index,
                    row=row,
                    reason=reason,
                    message=f"row {row} was not finished when the run stopped ({why})",
                )
            )
        index = group.index
        self._discard(group, lambda t: t.row_group == index)

    def _discard(self, group: RowGroup, dropped: Callable[[ModelTask], bool]) -> None:
        """Takes ``group``'s tasks that ``dropped`` picks out of the queue and the deferred
        list, and cancels their running workers (their results could no longer be used: the
        slot is freed; the leases finish ``cancelled``)."""
        group.live -= self._queue.remove_where(dropped)
        kept = [t for t in self.deferred if not dropped(t)]
        group.deferred -= len(self.deferred) - len(kept)
        self.deferred = kept
        for runner, worker in self._workers.items():
            if dropped(worker.task):
                runner.cancel()

    @property
    def completed(self) -> int:
        pending = sum(g.completed for g in self.groups.values())
        return self.checkpointer.rows_written + pending

    @property
    def dropped(self) -> int:
        return sum(self.drops_by_reason.values())
