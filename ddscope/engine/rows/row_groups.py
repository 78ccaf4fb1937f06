"""Row groups: how many are admitted at once, and their checkpoint to the output, in order.

**Admission target.** Fixed (``row_groups_in_flight: N``): keep N row groups active. Adaptive:
admit another row group while model capacity sits idle and the ready model work cannot fill it
(``queued < idle slots``), bounded by ``max_row_groups_in_flight``. The decision runs right after
the dispatcher has leased every ready task it could, so "idle slots" means "no ready work for
them": a narrow frontier (one small row group feeding a chain of model columns) widens until the
request slots are busy, and stops widening during a cooldown (capacity is then 0, nothing idles).
Only *active* row groups count: a group whose remaining tasks all wait for salvage does not hold
the main pass back — up to a point: every admitted group that is not yet *written* (waiting for
salvage, or resolved but held back behind an earlier group) stays in memory, so their number is
capped too (:attr:`AdmissionTarget.max_unwritten`, twice the active cap). When the cap is reached
the scheduler runs a salvage round early instead of admitting more, so memory is bounded by the
groups in flight whatever the salvage state.

**Slices.** Memory and the time to stop also grow with the rows per group, so a ``buffer_size``
above :data:`MAX_GROUP_ROWS` is processed in slices of that many rows: each slice is a row group
of the record (admitted, checkpointed and written on its own), which only makes checkpoints more
frequent. :func:`engine_group_rows` is the one place that decides it (resume uses it too).

**Checkpoint.** A row group is written when all its rows are completed or dropped, and only after
every earlier row group was written, so the output is in row order whatever order groups finish
in. ``RowGroupFinished`` is emitted at the write, so the record never claims a checkpoint that
is not on disk. On shutdown or cancellation unfinished groups are written with the rows they
completed (outcome ``abandoned``; the scheduler drops their unfinished rows first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ddscope import events
from ddscope.engine.emitter import Emitter
from ddscope.engine.scheduling.tasks import RowGroup

if TYPE_CHECKING:
    from ddscope.engine.rows.output import RowWriter

# Rows per engine row group at most (see "Slices"): 1,000 rows keep a group's memory to a few MB
# and its stop (one drop event per unfinished row) well under a second.
MAX_GROUP_ROWS = 1000
UNWRITTEN_FACTOR = 2  # admitted-but-unwritten groups allowed, as a multiple of the active cap


def engine_group_rows(buffer_size: int) -> int:
    """Rows per row group as the engine runs them: ``buffer_size``, sliced above the maximum."""
    return min(buffer_size, MAX_GROUP_ROWS)


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

    @property
    def max_unwritten(self) -> int:
        """Admitted groups not yet written (any state) that may be held in memory."""
        return UNWRITTEN_FACTOR * (self.fixed if self.fixed is not None else self.cap)

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

    def __init__(
        self,
        output: RowWriter,
        emitter: Emitter,
        on_failure: Callable[[str], None] | None = None,
        *,
        first_index: int = 0,
        rows_before: int = 0,
    ) -> None:
        self._output = output
        self._emitter = emitter
        self._on_failure = on_failure
        self._ready: dict[int, tuple[RowGroup, bool]] = {}
        self.next_index = first_index  # the next row group to write (resume: after the kept)
        self.rows_written = rows_before  # rows on disk, including a resumed run's earlier ones
        self.failure: str | None = None  # set once a write failed: nothing more is written

    def finished(self, group: RowGroup, *, abandoned: bool = False) -> list[RowGroup]:
        """Hands over a resolved group; writes it and any successors now in order. Returns the
        groups written."""
        self._ready[group.index] = (group, abandoned)
        written: list[RowGroup] = []
        while self.failure is None and self.next_index in self._ready:
            ready, was_abandoned = self._ready.pop(self.next_index)
            if not self._write(ready, was_abandoned):
                self._ready.clear()  # nothing after a failed group can be written in order
                break
            written.append(ready)
            self.next_index += 1
        return written

    @property
    def waiting(self) -> int:
        """Resolved groups held back until an earlier group is written."""
        return len(self._ready)

    def _write(self, group: RowGroup, abandoned: bool) -> bool:
        """Writes one group; False (and ``failure`` set, the run told) when the write failed."""
        from ddscope.engine.rows.output import OutputWriteError

        rows = [{**values, "_row": row} for row, values in group.completed_rows()]
        if rows:
            try:
                self._output.write_rows(rows)
            except (OutputWriteError, OSError) as exc:
                self.failure = str(exc)
                if self._on_failure is not None:
                    self._on_failure(self.failure)
                return False
            except Exception as exc:  # a writer's own bug: the rows are not on disk either
                self.failure = f"{type(exc).__name__}: {exc}"
                if self._on_failure is not None:
                    self._on_failure(self.failure)
                return False
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
        return True
