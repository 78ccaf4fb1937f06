"""The one place a DataDesigner file's line is checked before it is translated.

The translator (:mod:`.translate`, :mod:`.layout`, :mod:`.snapshots`) reads a few fields of
each event; :func:`check_event` makes sure those have the types DataDesigner 0.9.5 writes
(``data_designer/engine/observability.py``: ``SchedulerAdmissionEvent``, and the scheduler's
diagnostics dicts) and sizes ddscope can hold, so a damaged or hand-edited file is refused with
``field: why`` naming the line (or, with ``--lenient``, that line is skipped) instead of
failing somewhere in the translation or allocating per row for a number from the file.

``null`` is accepted wherever DataDesigner writes it (the ids, ``reason_or_result``, the
correlation's ``row_group``…) and for the health snapshots' figures, which a newer
DataDesigner may leave empty; a missing key is always "absent". The counts that shape the run
(``num_records``, ``buffer_size``, a row group's number and size) are never ``null`` in a real
file, so ``null`` there is refused like any other wrong type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# A monotonic clock counts seconds since boot: 1e9 s is 31 years. Bounding it keeps
# (t − origin) × 1e9 a 64-bit nanosecond count (an unbounded one overflows int() or Perfetto).
MONOTONIC_LIMIT_S = 1e9
# Rows in one row group, at most. The translator builds a task-id table per (column, row group)
# and drops a whole group row by row, so this bounds per-line work and memory (~150 MB, ~1 s
# at the bound). DataDesigner's default buffer_size is 1,000.
MAX_ROW_GROUP_ROWS = 1_000_000
# A row group's number, at most: its first row (number × buffer_size) stays a 64-bit count.
MAX_ROW_GROUPS = 1_000_000_000
# Any other count (limits, queue lengths, outcome counts): exact in a double, fits int64.
MAX_COUNT = 2**53
# A 429 cooldown longer than this (~115 days) is not one; the bound keeps its end a 64-bit ns.
MAX_COOLDOWN_S = 1e7

Check = Callable[[Any], str | None]


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages (the value itself may be huge or hostile)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value:g}" if isinstance(value, float) else f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(minimum: int, *, nullable: bool, maximum: int = MAX_COUNT) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not _is_int(value) or value < minimum:
            return f"not an integer ≥ {minimum} ({_kind(value)})"
        if value > maximum:
            return f"{value:,} is out of range (at most {maximum:,})"
        return None

    return check


def _seconds(limit: float, *, nullable: bool) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"not a number ({_kind(value)})"
        if abs(value) > limit:
            return f"{value:g} s is out of range (at most {limit:g})"
        return None

    return check


def _str_or_null(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else f"not a string ({_kind(value)})"


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"not an object ({_kind(value)})"


def _object_or_null(value: Any) -> str | None:
    return None if value is None else _object(value)


def _array_or_null(value: Any) -> str | None:
    return None if value is None or isinstance(value, list) else f"not an array ({_kind(value)})"


COUNT = _count(0, nullable=False)
COUNT_OR_NULL = _count(0, nullable=True)
ROW_GROUP = _count(0, nullable=False, maximum=MAX_ROW_GROUPS)
ROWS = _count(0, nullable=False, maximum=MAX_ROW_GROUP_ROWS)
TIME = _seconds(MONOTONIC_LIMIT_S, nullable=False)
COOLDOWN = _seconds(MAX_COOLDOWN_S, nullable=True)

# Every line: (field, check). The ids are read by every lease handler; ``diagnostics`` is
# ``dict[str, JsonValue]`` with a default in DataDesigner's model, so never null.
TOP: tuple[tuple[str, Check], ...] = (
    ("captured_at_monotonic", TIME),
    ("captured_correlation", _object_or_null),
    ("task_id", _str_or_null),
    ("task_lease_id", _str_or_null),
    ("task_execution_id", _str_or_null),
    ("reason_or_result", _str_or_null),
)
TASK_CORRELATION: tuple[tuple[str, Check], ...] = (
    ("task_column", _str_or_null),
    ("task_type", _str_or_null),
    ("row_group", _count(0, nullable=True, maximum=MAX_ROW_GROUPS)),
)
SNAPSHOT_FIGURES: tuple[tuple[str, Check], ...] = (
    ("queued_total", COUNT_OR_NULL),
    ("in_flight_tasks", COUNT_OR_NULL),
    ("deferred_tasks", COUNT_OR_NULL),
    ("active_row_groups", COUNT_OR_NULL),
    ("reason", _str_or_null),
    ("request_pressure", _object_or_null),
    ("retryable_outcomes", _object_or_null),
)
RESOURCE_FIGURES: tuple[tuple[str, Check], ...] = (
    ("current_limit", COUNT_OR_NULL),
    ("in_flight_count", COUNT_OR_NULL),
    ("waiters", COUNT_OR_NULL),
    ("cooldown_remaining_seconds", COOLDOWN),
    ("last_outcome", _str_or_null),
)
# Per kind, the diagnostics the translator reads (kinds not here: only the TOP fields).
DIAGNOSTICS: dict[str, tuple[tuple[str, Check], ...]] = {
    "scheduler_job_started": (
        ("run_id", _str_or_null),
        ("num_records", COUNT),
        ("buffer_size", _count(1, nullable=False)),
        ("row_group_count", COUNT),
        ("column_scheduling", _array_or_null),
        ("resource_limits", _object_or_null),
    ),
    "row_group_admitted": (("row_group", ROW_GROUP), ("row_group_size", COUNT)),
    "row_group_checkpointed": (
        ("row_group", ROW_GROUP),
        ("surviving_rows", ROWS),
        ("dropped_rows", ROWS),
        ("result", _str_or_null),
    ),
    "task_lease_acquired": (("resource_request", _object_or_null),),
    "non_retryable_dropped": (("error_type", _str_or_null),),
    "scheduler_health_snapshot": SNAPSHOT_FIGURES,
    "scheduler_job_completed": (
        *SNAPSHOT_FIGURES,
        ("outcome", _str_or_null),
        ("error_type", _str_or_null),
    ),
}
REQUIRED = {  # diagnostics keys a real file always has, and without which rows are guesses
    "row_group_admitted": ("row_group",),
    "row_group_checkpointed": ("row_group",),
}
TASK_KINDS = frozenset({"task_lease_acquired"})  # the kinds that read the task's correlation


def check_event(event: Mapping[str, Any], num_records: int) -> str | None:
    """``None`` when ``event`` (a parsed line with a string ``event_kind``) can be translated,
    else ``"field: why"``. ``num_records`` is the run's (0 while reading its job start)."""
    for name, check in TOP:
        if name in event and (why := check(event[name])) is not None:
            return f"{name}: {why}"
    if "captured_at_monotonic" not in event:
        return "captured_at_monotonic: missing"
    diag = event.get("diagnostics", {})
    if not isinstance(diag, dict):
        return f"diagnostics: {_object(diag)}"
    kind = event["event_kind"]
    corr = event.get("captured_correlation") if kind in TASK_KINDS else None
    why = (
        _fields(corr, TASK_CORRELATION, "captured_correlation") if isinstance(corr, dict) else None
    )
    if why is not None:
        return why
    fields = DIAGNOSTICS.get(kind)
    if fields is None:
        return None
    for name in REQUIRED.get(kind, ()):
        if name not in diag:
            return f"diagnostics.{name}: missing"
    if (why := _fields(diag, fields, "diagnostics")) is not None:
        return why
    return _SHAPES[kind](diag, num_records) if kind in _SHAPES else None


def _fields(
    container: Mapping[str, Any], fields: tuple[tuple[str, Check], ...], prefix: str
) -> str | None:
    for name, check in fields:
        if name in container and (why := check(container[name])) is not None:
            return f"{prefix}.{name}: {why}"
    return None


# -- what a type check alone cannot say ------------------------------------------------------


def _job_started(diag: Mapping[str, Any], _num_records: int) -> str | None:
    records = diag.get("num_records", 0)
    group = min(diag.get("buffer_size", records), records)  # the layout's largest row group
    if group > MAX_ROW_GROUP_ROWS:
        name = "buffer_size" if "buffer_size" in diag else "num_records"
        return (
            f"diagnostics.{name}: row groups of {group:,} rows are more than ddscope reads "
            f"(at most {MAX_ROW_GROUP_ROWS:,})"
        )
    for index, spec in enumerate(diag.get("column_scheduling") or ()):
        where = f"diagnostics.column_scheduling[{index}]"
        if not isinstance(spec, dict):
            return f"{where}: {_object(spec)}"
        if (why := _str_or_null(spec.get("column"))) is not None:
            return f"{where}.column: {why}"
        if (why := _object_or_null(spec.get("resource_request"))) is not None:
            return f"{where}.resource_request: {why}"
    return None


def _row_group_admitted(diag: Mapping[str, Any], num_records: int) -> str | None:
    size = diag.get("row_group_size")
    if size is None:
        return None
    bound = min(num_records, MAX_ROW_GROUP_ROWS) if num_records else MAX_ROW_GROUP_ROWS
    if size > bound:
        if bound == num_records:
            return (
                f"diagnostics.row_group_size: {size:,} rows, more than the run's {bound:,} records"
            )
        return f"diagnostics.row_group_size: {size:,} rows is out of range (at most {bound:,})"
    return None


def _snapshot(diag: Mapping[str, Any], _num_records: int) -> str | None:
    pressure = diag.get("request_pressure")
    resources = pressure.get("resources") if isinstance(pressure, dict) else None
    if (why := _object_or_null(resources)) is not None:
        return f"diagnostics.request_pressure.resources: {why}"
    for name, state in (resources or {}).items():
        where = f"diagnostics.request_pressure.resources.{name}"
        if not isinstance(state, dict):
            return f"{where}: {_object(state)}"
        if (why := _fields(state, RESOURCE_FIGURES, where)) is not None:
            return why
    outcomes = diag.get("retryable_outcomes")
    if not isinstance(outcomes, dict):
        return None
    where = "diagnostics.retryable_outcomes"
    if (why := _fields(outcomes, (("rolling_total", COUNT_OR_NULL),), where)) is not None:
        return why
    for counts in ("cumulative_counts", "rolling_counts", "retryable_details"):
        table = outcomes.get(counts)
        if (why := _object_or_null(table)) is not None:
            return f"{where}.{counts}: {why}"
        for key, value in (table or {}).items():
            if (why := COUNT(value)) is not None:
                return f"{where}.{counts}.{key}: {why}"
    return None


_SHAPES: dict[str, Callable[[Mapping[str, Any], int], str | None]] = {
    "scheduler_job_started": _job_started,
    "row_group_admitted": _row_group_admitted,
    "scheduler_health_snapshot": _snapshot,
    "scheduler_job_completed": _snapshot,
}
