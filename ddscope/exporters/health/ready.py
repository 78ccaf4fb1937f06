"""Which model cells were ready, inferred from the record: the input of idle attribution.

A model cell (an ``llm_text`` column × a row) is *ready* when its row group was admitted, the
row is not dropped, and every model column it reads — directly or through sampler/expression
columns, which the engine computes inline — has completed for that row (a ``lease_finished``
with outcome ``ok``). A cell leaves the ready set when it completes, is deferred to salvage
(``lease_finished`` ``deferred``; a ``salvage_started`` makes every deferred cell ready again)
or its row is dropped. The counts live on each domain's :class:`DomainTracker` (``ready``,
``deferred``, ``remaining``); this module keeps the per-row bitmasks that decide them, only for
rows of row groups not yet finished, so memory follows the rows in flight. Events about a row
group that is not open (finished, or never started) change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddscope.events import ColumnInfo
from ddscope.exporters.health.domain import DomainTracker


@dataclass
class _ModelColumn:
    bit: int
    tracker: DomainTracker
    deps: int = 0  # bitmask of the model columns it reads
    dependents: list[_ModelColumn] = field(default_factory=list)


class Readiness:
    def __init__(self, columns: list[ColumnInfo], trackers: dict[str, DomainTracker]) -> None:
        by_name = {c.name: c for c in columns}
        model = [c for c in columns if c.domain is not None and c.domain in trackers]
        self._cols = {
            c.name: _ModelColumn(1 << i, trackers[c.domain])  # type: ignore[index]
            for i, c in enumerate(model)
        }
        for col in model:
            mine = self._cols[col.name]
            for dep in _model_inputs(col.name, by_name, set(self._cols)):
                mine.deps |= self._cols[dep].bit
                self._cols[dep].dependents.append(mine)
        self._per_tracker: dict[int, tuple[DomainTracker, int, int]] = {}
        for mc in self._cols.values():
            tracker = mc.tracker
            tracker.readiness_known = True
            _, total, roots = self._per_tracker.get(id(tracker), (tracker, 0, 0))
            self._per_tracker[id(tracker)] = (tracker, total + 1, roots + (mc.deps == 0))
        self._done: dict[int, int] = {}  # row → bitmask of completed model columns
        self._deferred: dict[int, int] = {}  # row → bitmask of cells awaiting salvage
        self._dropped: set[int] = set()
        self._groups: dict[int, tuple[int, int]] = {}  # row group → (first row, rows)

    def row_group_started(self, t: int, group: int, first: int, rows: int) -> None:
        self._groups[group] = (first, rows)
        for tracker, total, roots in self._per_tracker.values():
            tracker.touch(t)
            tracker.remaining += rows * total
            tracker.ready += rows * roots

    def cell_done(self, t: int, column: str, row: int, group: int) -> None:
        col = self._cols.get(column)
        if col is None or row in self._dropped or group not in self._groups:
            return
        done = self._done.get(row, 0)
        if done & col.bit:
            return
        done |= col.bit
        self._done[row] = done
        tracker = col.tracker
        tracker.touch(t)
        tracker.ready -= 1
        tracker.remaining -= 1
        for dependent in col.dependents:
            if dependent.deps & done == dependent.deps:
                dependent.tracker.touch(t)
                dependent.tracker.ready += 1

    def cell_deferred(self, t: int, column: str, row: int, group: int) -> None:
        col = self._cols.get(column)
        if col is None or row in self._dropped or group not in self._groups:
            return
        tracker = col.tracker
        tracker.touch(t)
        tracker.ready -= 1
        tracker.deferred += 1
        self._deferred[row] = self._deferred.get(row, 0) | col.bit

    def salvage_started(self, t: int) -> None:
        for tracker, _, _ in self._per_tracker.values():
            tracker.touch(t)
            tracker.ready += tracker.deferred
            tracker.deferred = 0
        self._deferred.clear()

    def row_dropped(self, t: int, row: int, group: int) -> None:
        if row in self._dropped or group not in self._groups:
            return
        self._dropped.add(row)
        done = self._done.get(row, 0)
        deferred = self._deferred.pop(row, 0)
        for col in self._cols.values():
            if done & col.bit:
                continue
            tracker = col.tracker
            tracker.touch(t)
            tracker.remaining -= 1
            if deferred & col.bit:
                tracker.deferred -= 1
            elif col.deps & done == col.deps:
                tracker.ready -= 1

    def row_group_finished(self, group: int) -> None:
        """Forgets the group's rows: nothing about them can change any more."""
        first, rows = self._groups.pop(group, (0, 0))
        for row in range(first, first + rows):
            self._done.pop(row, None)
            self._deferred.pop(row, None)
            self._dropped.discard(row)

    def resumed(self, t: int) -> None:
        """A later segment starts with nothing in flight: the groups a kill left open, and the
        work they counted as ready or remaining, are gone (their rows are generated again)."""
        for group in list(self._groups):
            self.row_group_finished(group)
        for tracker, _, _ in self._per_tracker.values():
            tracker.touch(t)
            tracker.ready = tracker.remaining = tracker.deferred = 0


def _model_inputs(name: str, by_name: dict[str, ColumnInfo], model: set[str]) -> set[str]:
    """The model columns ``name`` reads, looking through non-model columns (a DAG: bounded)."""
    found: set[str] = set()
    stack = list(by_name[name].depends_on)
    seen: set[str] = set()
    while stack:
        dep = stack.pop()
        if dep in seen or dep not in by_name:
            continue
        seen.add(dep)
        if dep in model:
            found.add(dep)
        else:
            stack.extend(by_name[dep].depends_on)
    return found
