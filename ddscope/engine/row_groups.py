"""Row groups: how many are admitted at once, and their checkpoint to the output, in order.

**Admission target.** Fixed (``row_groups_in_flight: N``): keep N row groups active. Adaptive:
admit another row group while model capacity sits idle and the ready model work cannot fill it
(``queued < idle slots``), bounded by ``max_row_groups_in_flight``. The decision runs right after
the dispatcher has leased every ready task it could, so "idle slots" means "no ready work for
them": a narrow frontier (one small row group feeding a chain of model columns) widens until the
request slots are busy, and stops widening during a cooldown (capacity is then 0, nothing idles).
Only *active* row groups count: a group whose remaining tasks all wait for salvage does not hold
the main pass back.

**Checkpoint.** A row group is written when all its rows are completed or dropped, and only after
every earlier row group was written, so the output is in row order whatever order groups finish
in. ``RowGroupFinished`` is emitted at the write, so the record never claims a checkpoint that
is not on disk. On shutdown or cancellation unfinished groups are written with the rows they
completed (outcome ``abandoned``; the scheduler drops their unfinished rows first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ddscope import events
from ddscope.engine.emitter import Emitter
from ddscope.engine.tasks import RowGroup

if TYPE_CHECKING:
    from ddscope.engine.output import RowWriter


def row_group_bounds(num_records: int, buffer_size: int, index: int) -> tuple[int, int]:
    """(first row, row count) of row group ``index``."""
    first = index * buffer_size
    return first, min(buffer_size, num_records - first)


def row_group_count(num_records: int, buffer_size: int) -> int:
    return -(-num_records // buffer_size)


@dataclass(frozen=True, slots=True)
class AdmissionTarget:
    """How many row groups may be active. ``fixed`` None means adaptive up to ``cap``."""

    fixed: int | None
    cap: int

    @classmethod
    def from_settings(cls, in_flight: int | Literal["adaptive"], cap: int) -> AdmissionTarget:
        if in_flight == "adaptive":
            return cls(None, cap)
        return cls(in_flight, max(cap, in_flight))

    def should_admit(self, active: int, idle_model_slots: int, queued_model_tasks: int) -> bool:
        """Whether to admit one more row group now (called after dispatching ready work)."""
        if self.fixed is not None:
            return active < self.fixed
        if active >= self.cap:
            return False
        if active == 0:
            return True  # nothing in flight: always make progress
        return queued_model_tasks < idle_model_slots


class Checkpointer:
    """Writes resolved row groups in row-group order and emits ``RowGroupFinished``."""

    def __init__(self, output: RowWriter, emitter: Emitter) -> None:
        self._output = output
        self._emitter = emitter
        self._ready: dict[int, tuple[RowGroup, bool]] = {}
        self.next_index = 0  # the next row group to write
        self.rows_written = 0

    def finished(self, group: RowGroup, *, abandoned: bool = False) -> list[RowGroup]:
        """Hands over a resolved group; writes it and any successors now in order. Returns the
        groups written."""
        self._ready[group.index] = (group, abandoned)
        written: list[RowGroup] = []
        while self.next_index in self._ready:
            ready, was_abandoned = self._ready.pop(self.next_index)
            self._write(ready, was_abandoned)
            written.append(ready)
            self.next_index += 1
        return written

    @property
    def waiting(self) -> int:
        """Resolved groups held back until an earlier group is written."""
        return len(self._ready)

    def _write(self, group: RowGroup, abandoned: bool) -> None:
        rows = [{**values, "_row": row} for row, values in group.completed_rows()]
        if rows:
            self._output.write_rows(rows)
        self.rows_written += len(rows)
        self._emitter.emit(
            events.RowGroupFinished(
                t_ns=self._emitter.t_ns(),
                row_group=group.index,
                outcome="abandoned" if abandoned else "checkpointed",
                rows_completed=len(rows),
                rows_dropped=len(group.dropped),
            )
        )
