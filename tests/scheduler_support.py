"""Helpers shared by the scheduler tests: pipelines, record checks (not a test module)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ddscope.engine.pipeline.model import Pipeline

# interval kind → (start kind, finish kind, the id fields they share)
INTERVALS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "run": ("run_started", "run_finished", ()),
    "row_group": ("row_group_started", "row_group_finished", ("row_group",)),
    "lease": ("lease_started", "lease_finished", ("lease_id",)),
    "wait": ("wait_started", "wait_finished", ("request_id", "attempt")),
    "attempt": ("attempt_started", "attempt_finished", ("request_id", "attempt")),
    "cooldown": ("cooldown_started", "cooldown_finished", ("cooldown_id",)),
    "salvage": ("salvage_started", "salvage_finished", ("round",)),
}


def chain3(
    endpoint: str,
    *,
    records: int = 12,
    max_parallel: int = 4,
    values: list[str] | None = None,
    **run: Any,
) -> Pipeline:
    """SCENARIOS.md's chain-3: topic (sampler) → summary → analysis → rewrite."""
    return Pipeline.from_dict(
        {
            "name": "chain-3",
            "providers": [{"name": "mock", "endpoint": endpoint}],
            "models": [
                {
                    "alias": "m",
                    "provider": "mock",
                    "model": "mock-model",
                    "max_parallel_requests": max_parallel,
                    "timeout_s": 10,
                }
            ],
            "columns": [
                {
                    "name": "topic",
                    "type": "sampler",
                    "sampler": "category",
                    "values": values or ["a", "b", "c"],
                },
                {
                    "name": "summary",
                    "type": "llm_text",
                    "model": "m",
                    "prompt": "Summarise {{ topic }}",
                },
                {
                    "name": "analysis",
                    "type": "llm_text",
                    "model": "m",
                    "prompt": "Analyse {{ summary }}",
                },
                {
                    "name": "rewrite",
                    "type": "llm_text",
                    "model": "m",
                    "prompt": "Rewrite {{ analysis }}",
                },
            ],
            "run": {"num_records": records, "buffer_size": 4, "salvage_pause_s": 0.05, **run},
        }
    )


def as_dicts(events: Iterable[Any]) -> list[dict[str, Any]]:
    return [e if isinstance(e, dict) else e.model_dump() for e in events]


def unpaired_intervals(events: Iterable[Any]) -> list[str]:
    """Every interval must start once, then finish once, in that order. Returns problems."""
    problems: list[str] = []
    open_: dict[tuple[str, tuple[Any, ...]], int] = {}
    starts = {start: (name, keys) for name, (start, _, keys) in INTERVALS.items()}
    finishes = {finish: (name, keys) for name, (_, finish, keys) in INTERVALS.items()}
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    for event in as_dicts(events):
        kind = event["kind"]
        if kind in starts:
            name, keys = starts[kind]
            ident = (name, tuple(event[k] for k in keys))
            if ident in seen:
                problems.append(f"{name} {ident[1]} started twice")
            open_[ident] = 1
            seen.add(ident)
        elif kind in finishes:
            name, keys = finishes[kind]
            ident = (name, tuple(event[k] for k in keys))
            if open_.pop(ident, None) is None:
                problems.append(f"{name} {ident[1]} finished without a start")
    problems += [f"{name} {ident} never finished" for name, ident in open_]
    return problems


def max_concurrency(
    events: Iterable[Any], start: str, finish: str, key: str, group: str
) -> dict[str, int]:
    """Replays start/finish pairs; the peak number open at once per value of ``group``.

    ``group`` is a field of the start event ("domain"), or "resources" to count per resource
    name held by a lease."""
    current: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    open_groups: dict[Any, list[str]] = {}
    for event in as_dicts(events):
        if event["kind"] == start:
            names = list(event["resources"]) if group == "resources" else [event[group]]
            open_groups[tuple(event[k] for k in key.split("+"))] = names
            for name in names:
                current[name] += 1
                peak[name] = max(peak[name], current[name])
        elif event["kind"] == finish:
            for name in open_groups.pop(tuple(event[k] for k in key.split("+")), []):
                current[name] -= 1
    return dict(peak)


def of_kind(events: Iterable[Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in as_dicts(events) if e["kind"] == kind]


class MemoryWriter:
    """A RowWriter that keeps rows in memory (the JSONL writer is used where files matter)."""

    def __init__(self) -> None:
        self.groups: list[list[dict[str, object]]] = []
        self.closed = False

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        assert not self.closed
        self.groups.append(list(rows))

    def close(self) -> None:
        self.closed = True

    @property
    def rows(self) -> list[dict[str, object]]:
        return [row for group in self.groups for row in group]


def plain_pipeline(*, model: bool = False) -> Pipeline:
    """A sampler and an expression, plus (``model``) one llm_text column."""
    columns: list[dict[str, Any]] = [
        {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
        {"name": "label", "type": "expression", "expr": "T={{ topic }}"},
    ]
    if model:
        columns.append(
            {"name": "summary", "type": "llm_text", "model": "m", "prompt": "{{ label }}"}
        )
    return Pipeline.from_dict(
        {
            "providers": [{"name": "p", "endpoint": "http://127.0.0.1:1/v1"}],
            "models": [{"alias": "m", "provider": "p", "model": "x"}],
            "columns": columns,
        }
    )
