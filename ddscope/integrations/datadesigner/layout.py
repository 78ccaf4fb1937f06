"""The shape of a DataDesigner run as ddscope sees it: header, row groups, and cell → row.

Everything here comes from the ``scheduler_job_started`` event's diagnostics (num_records,
buffer_size, row groups, per-column scheduling and the scheduler's resource limits) plus, when
known, each column's inputs. DataDesigner names a task by ``stable_task_id``: the first 16 hex
digits of ``sha1(column \\0 row_group \\0 row_index \\0 task_type)``; the row index inside its row
group is recovered exactly by hashing the candidates 0…size-1 once per (column, row group).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ddscope.events import SCHEMA, ColumnInfo, DomainInfo, RunHeader, split_domain

REQUEST_RESOURCE_PREFIX = "request:"  # DataDesigner's scheduler resource per provider/model
CELL_TASK_TYPE = "cell"
# Task-id table entries kept at once (~150 B each): tables are a cache, the oldest go first.
# Without a bound, leases naming many (column, row group) pairs would each add a group's rows.
TABLE_ROWS_LIMIT = 2_000_000


def stable_task_id(column: str, row_group: int, row_index: int | None, task_type: str) -> str:
    """DataDesigner's task id (``data_designer.engine.dataset_builders.scheduling.resources``)."""
    raw = f"{column}\0{row_group}\0{row_index}\0{task_type}".encode()
    return "task-" + hashlib.sha1(raw).hexdigest()[:16]  # an id, not security: same as theirs


def domain_of_resource(resource: str) -> str | None:
    """``request:provider/model`` → ``provider/model``; other scheduler resources → None."""
    if resource.startswith(REQUEST_RESOURCE_PREFIX):
        return resource[len(REQUEST_RESOURCE_PREFIX) :]
    return None


@dataclass
class RunLayout:
    """What the header says, and the row bookkeeping the translator needs."""

    run_id: str
    num_records: int
    buffer_size: int
    row_groups: int
    columns: list[ColumnInfo]
    domains: list[DomainInfo]
    sizes: dict[int, int] = field(default_factory=dict)
    _rows: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    _table_rows: int = 0  # entries in _rows' tables

    @classmethod
    def from_job_started(
        cls, event: Mapping[str, Any], dependencies: Mapping[str, list[str]] | None
    ) -> RunLayout:
        diag = _dict(event.get("diagnostics"))
        correlation = _dict(event.get("captured_correlation"))
        limits = _dict(diag.get("resource_limits"))
        domains = [
            _domain_info(domain, limit)
            for key, limit in sorted(limits.items())
            if (domain := domain_of_resource(key)) is not None and isinstance(limit, int)
        ]
        known = {d.domain for d in domains}
        scheduling = diag.get("column_scheduling")
        columns = [
            _column_info(spec, dependencies, known)
            for spec in (scheduling if isinstance(scheduling, list) else ())
            if isinstance(spec, dict) and isinstance(spec.get("column"), str)
        ]
        num_records = _int(diag.get("num_records"))
        buffer_size = max(1, _int(diag.get("buffer_size"), num_records or 1))
        return cls(
            run_id=str(diag.get("run_id") or correlation.get("run_id") or "datadesigner"),
            num_records=num_records,
            buffer_size=buffer_size,
            row_groups=_int(diag.get("row_group_count"), -(-num_records // buffer_size)),
            columns=columns,
            domains=domains,
        )

    def header(
        self, started_at_unix_ns: int, pipeline_name: str, version: str, **settings: Any
    ) -> RunHeader:
        return RunHeader(
            schema=SCHEMA,
            ddscope_version=version,
            run_id=self.run_id,
            started_at_unix_ns=started_at_unix_ns,
            pipeline_name=pipeline_name,
            num_records=self.num_records,
            buffer_size=self.buffer_size,
            # Not in ``columns``: ddscope's idle attribution would infer ready model work from
            # them assuming non-model columns are computed inline, while DataDesigner runs them
            # as tasks of their own (a sampler takes a lease per row group) and says itself
            # when a cell is ready. Without columns, health counts DataDesigner's own request
            # waits as ready work waiting (live), and the column list stays in the settings.
            columns=[],
            domains=self.domains,
            settings={
                "source": "datadesigner",
                "row_groups": self.row_groups,
                "columns": [c.model_dump(exclude_none=True) for c in self.columns],
                **settings,
            },
        )

    def first_row(self, row_group: int) -> int:
        return row_group * self.buffer_size

    def group_size(self, row_group: int) -> int:
        size = self.sizes.get(row_group)
        if size is not None:
            return size
        return max(0, min(self.buffer_size, self.num_records - self.first_row(row_group)))

    def locate(
        self, column: str, row_group: int, dd_task_id: str | None, task_type: str | None
    ) -> tuple[str, int]:
        """(ddscope task id, row) of a DataDesigner task. A cell is ``column:row``; a task over
        a whole row group (sampler, batch) is ``column:rg<N>`` on the group's first row."""
        first = self.first_row(row_group)
        if task_type == CELL_TASK_TYPE and dd_task_id:
            index = self._row_index(column, row_group, dd_task_id)
            if index is not None:
                return f"{column}:{first + index}", first + index
        return f"{column}:rg{row_group}", first

    def forget(self, row_group: int) -> None:
        """The group is checkpointed: its cells' id tables are not needed any more."""
        for key in [k for k in self._rows if k[1] == row_group]:
            self._table_rows -= len(self._rows.pop(key))

    def _row_index(self, column: str, row_group: int, dd_task_id: str) -> int | None:
        table = self._rows.get((column, row_group))
        if table is None:  # once per (column, row group): size sha1s of a few µs each
            size = min(self.group_size(row_group), TABLE_ROWS_LIMIT)
            while self._rows and self._table_rows + size > TABLE_ROWS_LIMIT:
                self._table_rows -= len(self._rows.pop(next(iter(self._rows))))
            table = {stable_task_id(column, row_group, i, CELL_TASK_TYPE): i for i in range(size)}
            self._rows[(column, row_group)] = table
            self._table_rows += size
        return table.get(dd_task_id)


def dependencies_from_config(columns: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each column's inputs, from DataDesigner column configs (``builder_config.json``'s
    ``data_designer.columns``): the columns its templates reference as ``{{ name``."""
    specs = [c for c in columns if isinstance(c.get("name"), str)]
    names = [str(c["name"]) for c in specs]
    out: dict[str, list[str]] = {}
    for spec in specs:
        text = " ".join(_strings(spec))
        out[str(spec["name"])] = [
            other
            for other in names
            if other != spec["name"] and re.search(r"\{\{-?\s*" + re.escape(other) + r"\b", text)
        ]
    return out


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _column_info(
    spec: dict[str, Any], dependencies: Mapping[str, list[str]] | None, known: set[str]
) -> ColumnInfo:
    name = str(spec["column"])
    request = _dict(spec.get("resource_request"))
    domain = next((d for key in request if (d := domain_of_resource(key)) in known), None)
    return ColumnInfo(
        name=name,
        type="llm_text" if domain else "local",
        domain=domain,
        depends_on=list((dependencies or {}).get(name, [])),
    )


def _domain_info(domain: str, limit: int) -> DomainInfo:
    provider, model = split_domain(domain)
    return DomainInfo(domain=domain, provider=provider, model=model, max_parallel_requests=limit)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
