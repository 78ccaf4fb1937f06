"""The task graph: which cells of a row group are ready, and the cheap cells computed inline.

A *cell* is one column of one row. A cell is ready when the cells it reads (its column's
dependencies, same row) are done. Sampler and expression cells are cheap: they are computed
inline the moment they become ready (no lease, no events), and may make further cells ready in
turn. Model cells become :class:`ModelTask` objects for the scheduler's ready queue.

:class:`ColumnPlan` is the static per-column view of the pipeline; :class:`RowGroup` holds the
per-row state of one row group. Pure: no asyncio, no events (the scheduler emits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddscope.engine.pipeline.model import (
    ExpressionColumn,
    LlmTextColumn,
    ModelAlias,
    Pipeline,
    SamplerColumn,
)
from ddscope.engine.pipeline.samplers import sample_cell
from ddscope.engine.pipeline.templates import render
from ddscope.errors import TemplateError


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    name: str
    column: SamplerColumn | LlmTextColumn | ExpressionColumn
    deps: tuple[str, ...]
    dependents: tuple[str, ...]
    alias: ModelAlias | None  # set for model (llm_text) columns only

    @property
    def is_model(self) -> bool:
        return self.alias is not None

    @property
    def domain(self) -> str | None:
        return self.alias.domain if self.alias else None


def plan_columns(pipeline: Pipeline) -> dict[str, ColumnPlan]:
    """Column name → plan, in topological order."""
    order = pipeline.topological_order()
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for dep in pipeline.dependencies(name):
            dependents[dep].append(name)
    return {
        name: ColumnPlan(
            name=name,
            column=pipeline.column(name),
            deps=tuple(pipeline.dependencies(name)),
            dependents=tuple(dependents[name]),
            alias=pipeline.model_for(name),
        )
        for name in order
    }


@dataclass(eq=False, slots=True)
class ModelTask:
    """One model cell. ``request_id`` stays the same across its retries and salvage rounds;
    ``attempts`` counts every try of that request (1-based once the first try starts)."""

    plan: ColumnPlan
    row: int
    row_group: int
    request_id: int = 0  # assigned at the first try
    attempts: int = 0
    last_error: str | None = None  # error kind of the last failed try
    last_message: str | None = None
    budget_failures: int = 0  # failed tries that use up its budget (see patience.py)
    salvage_round: int | None = None  # None in the main pass
    rounds: int = 0  # salvage rounds this task has been in (a round may run mid-main-pass)
    succeeded: bool = False
    # "column:row", built once: every event of the task carries it (plan and row never change)
    task_id: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.task_id = f"{self.plan.name}:{self.row}"

    @property
    def domain(self) -> str:
        assert self.plan.domain is not None  # model tasks exist for model columns only
        return self.plan.domain


@dataclass(frozen=True, slots=True)
class CellFailure:
    """An inline cell that could not be computed: its row must be dropped."""

    row: int
    column: str
    reason: str
    message: str


@dataclass(slots=True)
class Settled:
    """What settling some cells produced: model tasks now ready, and rows that failed (at most
    one failure per row: settling a row stops at its first failure)."""

    tasks: list[ModelTask] = field(default_factory=list)
    failures: list[CellFailure] = field(default_factory=list)


class RowGroup:
    """Per-row cell state of one row group. Invariant: ``completed + len(dropped) <= size``;
    the group is *resolved* when every row is completed or dropped."""

    def __init__(
        self, index: int, first_row: int, size: int, plans: dict[str, ColumnPlan], seed: int
    ) -> None:
        self.index = index
        self.first_row = first_row
        self.size = size
        self._plans = plans
        self._seed = seed
        self.values: list[dict[str, object]] = [{} for _ in range(size)]
        # unmet dependency count per (row, column); columns with none are ready at start
        waiting = {name: len(p.deps) for name, p in plans.items() if p.deps}
        self._waiting = [dict(waiting) for _ in range(size)]
        self.dropped: dict[int, str] = {}  # global row → reason
        self._carried: set[int] = set()  # rows completed by an earlier segment (resume)
        self.completed = 0
        self.live = 0  # model tasks queued or leased (maintained by the scheduler)
        self.deferred = 0  # model tasks waiting for salvage (maintained by the scheduler)

    @property
    def rows(self) -> range:
        return range(self.first_row, self.first_row + self.size)

    @property
    def resolved(self) -> bool:
        return self.completed + len(self.dropped) == self.size

    @property
    def active(self) -> bool:
        """Unresolved with work that can still run in this pass (not only salvage leftovers)."""
        return not self.resolved and self.live > 0

    def carry(self, row: int, values: dict[str, object]) -> None:
        """Resume: ``row`` was completed by an earlier segment (its values read back from
        ``data.jsonl``); it is written again with the group but not generated again. Call
        before :meth:`start`."""
        if set(values) != set(self._plans):
            raise ValueError(f"row {row}: carried values lack columns of the pipeline")
        offset = row - self.first_row
        self.values[offset] = dict(values)
        self._waiting[offset] = {}
        self._carried.add(row)
        self.completed += 1

    def start(self) -> Settled:
        """Settles the columns that read nothing, for every row not carried over."""
        roots = [name for name, p in self._plans.items() if not p.deps]
        out = Settled()
        for row in self.rows:
            if row in self._carried:
                continue
            found = self._settle(row, list(roots))
            out.tasks.extend(found.tasks)
            out.failures.extend(found.failures)
        return out

    def complete_cell(self, row: int, column: str, value: object) -> Settled:
        """Records a model cell's value; returns the cells that became ready, settled."""
        if self.is_dropped(row):
            return Settled()
        ready = self._mark_done(row, column, value)
        return self._settle(row, ready)

    def is_dropped(self, row: int) -> bool:
        return row in self.dropped

    def drop(self, row: int, reason: str) -> bool:
        """Marks ``row`` dropped; False if it was already dropped or completed."""
        offset = row - self.first_row
        if row in self.dropped or self._row_complete(offset):
            return False
        self.dropped[row] = reason
        return True

    def values_if_complete(self, row: int) -> dict[str, object] | None:
        """The row's values once every column is done (and the row not dropped)."""
        offset = row - self.first_row
        if row in self.dropped or not self._row_complete(offset):
            return None
        return self.values[offset]

    def unresolved_rows(self) -> list[int]:
        return [
            row
            for row in self.rows
            if row not in self.dropped and not self._row_complete(row - self.first_row)
        ]

    def completed_rows(self) -> list[tuple[int, dict[str, object]]]:
        """(row, values) of completed rows, in row order."""
        return [
            (row, self.values[row - self.first_row])
            for row in self.rows
            if row not in self.dropped and self._row_complete(row - self.first_row)
        ]

    # -- internals --------------------------------------------------------------------------

    def _row_complete(self, offset: int) -> bool:
        return len(self.values[offset]) == len(self._plans)

    def _mark_done(self, row: int, column: str, value: object) -> list[str]:
        offset = row - self.first_row
        values = self.values[offset]
        values[column] = value
        if len(values) == len(self._plans):
            self.completed += 1
        waiting = self._waiting[offset]
        ready: list[str] = []
        for dependent in self._plans[column].dependents:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
        return ready

    def _settle(self, row: int, ready: list[str]) -> Settled:
        """Computes inline cells (and what they make ready) until only model cells are left."""
        out = Settled()
        stack = list(reversed(ready))
        while stack:
            plan = self._plans[stack.pop()]
            if plan.is_model:
                out.tasks.append(ModelTask(plan, row, self.index))
                continue
            try:
                value = self._inline_value(plan, row)
            except TemplateError as exc:
                message = f"column {plan.name!r} could not be computed for row {row}: {exc}"
                out.failures.append(CellFailure(row, plan.name, "template_error", message))
                return out
            stack.extend(reversed(self._mark_done(row, plan.name, value)))
        return out

    def _inline_value(self, plan: ColumnPlan, row: int) -> object:
        column = plan.column
        if isinstance(column, SamplerColumn):
            return sample_cell(column, self._seed, row)
        assert isinstance(column, ExpressionColumn)
        return render(column.expr, self.values[row - self.first_row])
