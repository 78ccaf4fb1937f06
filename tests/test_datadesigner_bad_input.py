"""A damaged DataDesigner ``scheduler_events.jsonl``: one field of one line with the wrong type
or an absurd size is a one-line ``RecordError: FILE:LINE: field: why`` (exit 2), or with
``--lenient`` that line is skipped with a warning; never a traceback, and never an allocation
per row for a number read from the file. The bad files are the two real DataDesigner 0.9.5
recordings with one field changed."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from datadesigner_support import HEALTHY_FIXTURE, S1_FIXTURE, iter_lines, requires_fixtures

from ddscope.cli.main import cli
from ddscope.errors import RecordError
from ddscope.exporters.health import analyze
from ddscope.integrations.datadesigner import layout
from ddscope.integrations.datadesigner.checks import DIAGNOSTICS, TOP
from ddscope.integrations.datadesigner.reader import MAX_LINE_BYTES, DataDesignerReader

Edit = Callable[[dict[str, Any]], None]


def _bad_copy(
    tmp_path: Path, fixture: Path, kind: str, edit: Edit, nth: int = 1
) -> tuple[Path, int]:
    """The fixture, plain, with ``edit`` applied to its ``nth`` event of ``kind``; and that
    line's number."""
    requires_fixtures()
    lines = list(iter_lines(fixture))
    at = [i for i, x in enumerate(lines) if x["event_kind"] == kind][nth - 1]
    edit(lines[at])
    path = tmp_path / "bad.scheduler_events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return path, at + 1


def _set(*keys: str, value: Any) -> Edit:
    def edit(line: dict[str, Any]) -> None:
        target = line
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _one_line_error(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert result.exit_code == 2, result.output
    errors = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("RecordError: "), result.stderr
    assert expected in errors[0], errors[0]


# -- the audit's findings --------------------------------------------------------------------


def test_a_bad_time_on_the_job_start_line_names_line_1(tmp_path: Path) -> None:
    path, line = _bad_copy(
        tmp_path, S1_FIXTURE, "scheduler_job_started", _set("captured_at_monotonic", value="x")
    )
    assert line == 1
    _one_line_error(["health", str(path)], "bad.scheduler_events.jsonl:1: captured_at_monotonic")
    # lenient, the run has no readable start left: the same line says why
    _one_line_error(["health", str(path), "--lenient"], ":1: captured_at_monotonic: not a number")


def test_column_scheduling_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    edit = _set("diagnostics", "column_scheduling", value=5)
    path, _ = _bad_copy(tmp_path, HEALTHY_FIXTURE, "scheduler_job_started", edit)
    _one_line_error(["health", str(path)], ":1: diagnostics.column_scheduling: not an array")


def test_a_resource_request_that_is_not_an_object_names_its_line(tmp_path: Path) -> None:
    edit = _set("diagnostics", "resource_request", value="x")
    path, line = _bad_copy(tmp_path, HEALTHY_FIXTURE, "task_lease_acquired", edit)
    out = tmp_path / "t.pftrace"
    _one_line_error(["export", str(path), "-o", str(out)], f":{line}: diagnostics.resource_request")
    lenient = CliRunner().invoke(cli, ["export", str(path), "-o", str(out), "--lenient"])
    assert lenient.exit_code == 0, lenient.output
    assert f":{line}: corrupt line skipped: diagnostics.resource_request" in lenient.stderr


def test_a_row_group_larger_than_the_run_is_refused_without_hashing_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = layout.stable_task_id

    def counted(*args: Any) -> str:
        nonlocal calls
        calls += 1
        assert calls < 100_000, "hashing rows of a row group size read from the file"
        return real(*args)

    monkeypatch.setattr(layout, "stable_task_id", counted)
    edit = _set("diagnostics", "row_group_size", value=10**9)
    path, line = _bad_copy(tmp_path, S1_FIXTURE, "row_group_admitted", edit)
    _one_line_error(
        ["health", str(path)],
        f":{line}: diagnostics.row_group_size: 1,000,000,000 rows, more than the run's 15 records",
    )
    path, line = _bad_copy(
        tmp_path, S1_FIXTURE, "row_group_admitted", _set("diagnostics", "row_group_size", value=16)
    )
    with pytest.raises(RecordError, match=f":{line}: diagnostics.row_group_size: 16 rows"):
        analyze(path)


@pytest.mark.parametrize(
    ("name", "why"),
    [("nonexistent.jsonl", "No such file or directory"), ("a-directory", "is a directory")],
)
def test_convert_of_an_unreadable_path_says_it_cannot_open_it(
    tmp_path: Path, name: str, why: str
) -> None:
    source = tmp_path / name
    if name == "a-directory":
        source.mkdir()
    result = CliRunner().invoke(cli, ["convert", str(source)])
    assert result.exit_code == 2 and not isinstance(result.exception, ValueError | TypeError)
    errors = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    assert len(errors) == 1 and why.lower() in errors[0].lower(), result.stderr
    assert "not a DataDesigner" not in errors[0]


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("num_records", "thirty", "diagnostics.num_records: not an integer ≥ 0 (a string)"),
        ("buffer_size", 0, "diagnostics.buffer_size: not an integer ≥ 1 (the number 0)"),
        ("buffer_size", -10, "diagnostics.buffer_size: not an integer ≥ 1 (the number -10)"),
        ("buffer_size", None, "diagnostics.buffer_size: not an integer ≥ 1 (null)"),
        ("row_group_count", [], "diagnostics.row_group_count: not an integer ≥ 0 (an array)"),
    ],
)
def test_a_job_start_with_a_bad_count_is_refused(
    tmp_path: Path, key: str, value: Any, why: str
) -> None:
    edit = _set("diagnostics", key, value=value)
    path, _ = _bad_copy(tmp_path, HEALTHY_FIXTURE, "scheduler_job_started", edit)
    _one_line_error(["health", str(path)], f":1: {why}")


def test_row_groups_beyond_the_bound_are_refused_at_the_job_start(tmp_path: Path) -> None:
    def records(buffer_size: int) -> Edit:
        def edit(line: dict[str, Any]) -> None:
            line["diagnostics"] |= {"num_records": 10**9, "buffer_size": buffer_size}

        return edit

    path, _ = _bad_copy(tmp_path, HEALTHY_FIXTURE, "scheduler_job_started", records(10))
    DataDesignerReader(path)  # a billion records in groups of 10: big, not wrong
    path, _ = _bad_copy(tmp_path, HEALTHY_FIXTURE, "scheduler_job_started", records(10**7))
    _one_line_error(
        ["health", str(path)],
        ":1: diagnostics.buffer_size: row groups of 10,000,000 rows are more than ddscope reads",
    )


@pytest.mark.parametrize(
    "kind",
    ["task_lease_acquired", "scheduler_health_snapshot", "row_group_checkpointed", "selected"],
)
def test_diagnostics_null_is_refused_on_any_kind(tmp_path: Path, kind: str) -> None:
    path, line = _bad_copy(tmp_path, HEALTHY_FIXTURE, kind, _set("diagnostics", value=None))
    _one_line_error(["health", str(path)], f":{line}: diagnostics: not an object (null)")


# -- found by fuzzing the fixtures -----------------------------------------------------------


def test_an_absurd_time_is_refused_not_an_overflow(tmp_path: Path) -> None:
    edit = _set("captured_at_monotonic", value=1e300)
    path, line = _bad_copy(tmp_path, HEALTHY_FIXTURE, "selected", edit)
    _one_line_error(["health", str(path)], f":{line}: captured_at_monotonic: 1e+300 s is out of")


def test_an_absurd_cooldown_is_refused_not_an_overflow(tmp_path: Path) -> None:
    def edit(line: dict[str, Any]) -> None:
        resources = line["diagnostics"]["request_pressure"]["resources"]
        next(iter(resources.values()))["cooldown_remaining_seconds"] = 1e300

    requires_fixtures()
    snapshots = [
        x for x in iter_lines(S1_FIXTURE) if x["event_kind"] == "scheduler_health_snapshot"
    ]
    nth = 1 + next(
        i for i, x in enumerate(snapshots) if x["diagnostics"]["request_pressure"]["resources"]
    )
    path, line = _bad_copy(tmp_path, S1_FIXTURE, "scheduler_health_snapshot", edit, nth=nth)
    _one_line_error(
        ["health", str(path)],
        f":{line}: diagnostics.request_pressure.resources.mock/mock/chat"
        ".cooldown_remaining_seconds: 1e+300 s is out of range",
    )


def test_a_huge_outcome_count_does_not_allocate_per_count(tmp_path: Path) -> None:
    requires_fixtures()
    lines = list(iter_lines(S1_FIXTURE))
    deferral = next(i for i, x in enumerate(lines) if x["event_kind"] == "retry_deferred")
    after = next(
        i
        for i, x in enumerate(lines)
        if i > deferral and x["event_kind"] == "scheduler_health_snapshot"
    )
    lines[after]["diagnostics"]["retryable_outcomes"]["cumulative_counts"]["rate_limit"] = 10**7
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    tracemalloc.start()
    try:
        analyze(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30 << 20, f"peak {peak >> 20} MiB"  # a 10**7-entry list alone is 80 MiB


def test_a_line_longer_than_the_bound_is_not_read_whole(tmp_path: Path) -> None:
    requires_fixtures()
    lines = [orjson.dumps(x) for x in iter_lines(HEALTHY_FIXTURE)]
    lines.insert(3, b'{"event_kind": "selected", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}')
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _one_line_error(["health", str(path)], "long.jsonl:4: line longer than 16 MiB")
    lenient = CliRunner().invoke(cli, ["health", str(path), "--lenient"])
    assert lenient.exit_code == 0 and "long.jsonl:4: corrupt line skipped" in lenient.stderr


def test_one_field_of_the_wrong_type_never_escapes_as_a_traceback(tmp_path: Path) -> None:
    """A small fuzz: every field the translator reads, on the first event of each kind of the
    interrupted run, set to each JSON type in turn: translated, or a RecordError naming it."""
    requires_fixtures()
    lines = list(iter_lines(S1_FIXTURE))
    firsts: dict[str, int] = {}
    for i, x in enumerate(lines):
        firsts.setdefault(x["event_kind"], i)
    path = tmp_path / "fuzz.jsonl"
    tried = 0
    for kind, at in firsts.items():
        fields = [(name,) for name, _ in TOP] + [
            ("diagnostics", name) for name, _ in DIAGNOSTICS.get(kind, ())
        ]
        for keys in fields:
            values: list[Any] = ["x", -5, 2**64 - 1, [], None, {}, True]
            for value in values:
                original = lines[at]
                changed = orjson.loads(orjson.dumps(original))
                _set(*keys, value=value)(changed)
                lines[at] = changed
                path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
                lines[at] = original
                try:
                    for _ in DataDesignerReader(path):
                        pass
                except RecordError as exc:
                    assert f"fuzz.jsonl:{at + 1}: {'.'.join(keys)}" in str(exc), (keys, value, exc)
                tried += 1
    assert tried > 300
