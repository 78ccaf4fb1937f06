"""A record with a field of the wrong type, or a value no run can have, is one line naming
``file:line`` and the field, exit 2 — in every command that reads it — never a traceback, a
hang or unbounded memory. The readers' fast path does not check every field's type (that would
cost ≈ 1.5 µs an event on millions); the CLI reads the record again, validated, when a command
fails on a value (``cli/bad_values.py``), and ``--lenient`` skips such lines up front."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from engine_records import EngineSpec, write_engine_record

from ddscope.cli.main import cli

# 429s, cooldowns, limit changes, deferrals, a salvage round and a dropped row: every kind
# a consumer reads but shutdown's
SPEC = EngineSpec(
    rows=6, buffer_size=3, rate_limit_every=4, defer_every=5, drop_rows=(2,), health_interval_s=0.05
)
COMMANDS = {
    "health": ["health"],
    "perfetto": ["export", "--perfetto"],
    "chrome": ["export", "--chrome-json"],
    "report": ["report", "--no-trace"],
}


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    path = tmp_path_factory.mktemp("good") / "run.jsonl"
    write_engine_record(path, SPEC)
    return path.read_text(encoding="utf-8").splitlines()


def _with(lines: list[str], kind: str, field: str, value: Any, tmp_path: Path) -> tuple[Path, int]:
    """The record with ``field`` of the first ``kind`` event set to ``value``; its line."""
    changed = list(lines)
    for number, line in enumerate(changed[1:], start=2):
        data = json.loads(line)
        if data["kind"] == kind:
            data[field] = value
            changed[number - 1] = json.dumps(data)
            path = tmp_path / "run.jsonl"
            path.write_text("\n".join(changed) + "\n", encoding="utf-8")
            return path, number
    raise AssertionError(f"no {kind} event")


def _invoke(command: str, record: Path, *extra: str) -> Result:
    name, *options = COMMANDS[command]
    out = ["-o", str(record.with_suffix(f".{command}.out"))] if name != "health" else []
    return CliRunner().invoke(cli, [name, str(record), *options, *out, *extra])


def _one_line(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("RecordError: "), line
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("command", "kind", "field", "value", "names"),
    [
        ("health", "row_dropped", "message", None, "row_dropped.message: Input should be"),
        ("health", "run_finished", "message", 5, "run_finished.message: Input should"),
        ("report", "task_deferred", "error_kind", None, "task_deferred.error_kind: Input"),
        ("perfetto", "lease_started", "column", 7, "lease_started.column: Input should"),
        ("chrome", "health", "domains", 5, "health.domains: Input should be a valid list"),
        ("health", "cooldown_started", "domain", [1], "cooldown_started.domain: Input should be"),
        ("perfetto", "cooldown_started", "domain", [1], "cooldown_started.domain: Input should be"),
        ("chrome", "cooldown_started", "domain", [1], "cooldown_started.domain: Input should be"),
        ("report", "cooldown_started", "domain", [1], "cooldown_started.domain: Input should be"),
    ],
)  # fmt: skip
def test_a_field_of_the_wrong_type_is_named_with_its_line(
    lines: list[str], tmp_path: Path, command: str, kind: str, field: str, value: Any, names: str
) -> None:
    record, line = _with(lines, kind, field, value, tmp_path)
    _one_line(_invoke(command, record), f"run.jsonl:{line}: {names}")


@pytest.mark.parametrize("command", ["health", "report"])
def test_a_row_group_of_a_trillion_rows_is_refused_not_walked(
    lines: list[str], tmp_path: Path, command: str
) -> None:
    """Walking it row by row would take hours (and the report's plots as long)."""
    record, line = _with(lines, "row_group_started", "rows", 10**12, tmp_path)
    _one_line(_invoke(command, record), f"run.jsonl:{line}: row_group_started.rows: 10000")


def test_lenient_skips_a_line_of_the_wrong_type_with_a_warning(
    lines: list[str], tmp_path: Path
) -> None:
    record, line = _with(lines, "row_dropped", "message", None, tmp_path)
    result = _invoke("health", record, "--lenient")
    assert result.exit_code == 0, result.output
    assert f"run.jsonl:{line}: corrupt line skipped: row_dropped.message" in result.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_damaged_gzip_stream_is_one_line(lines: list[str], tmp_path: Path, command: str) -> None:
    packed = gzip.compress(("\n".join(lines) + "\n").encode())
    record = tmp_path / "run.jsonl.gz"
    record.write_bytes(packed[:20] + bytes(64) + packed[84:])  # the deflate stream broken
    _one_line(_invoke(command, record), "run.jsonl.gz:", "cannot read")


@pytest.mark.parametrize("value", [[1], None, "zz", 10**12, {"a": 1}, -5])
def test_any_field_of_any_kind_with_any_wrong_value_is_exit_0_or_one_line(
    lines: list[str], tmp_path: Path, value: Any
) -> None:
    """The audit's fuzz, kept: the first event of every kind, every field but kind and t_ns,
    each command. A value a command does not use may pass (exit 0); nothing else may."""
    kinds_done: set[str] = set()
    for number, line in enumerate(lines[1:], start=2):
        data = json.loads(line)
        if data["kind"] in kinds_done:
            continue
        kinds_done.add(data["kind"])
        for field in sorted(set(data) - {"kind", "t_ns"}):
            if type(data[field]) is type(value):
                continue
            changed = list(lines)
            changed[number - 1] = json.dumps({**data, field: value})
            record = tmp_path / "run.jsonl"
            record.write_text("\n".join(changed) + "\n", encoding="utf-8")
            for command in COMMANDS:
                result = _invoke(command, record)
                where = f"{data['kind']}.{field}={value!r} {command}"
                assert result.exc_info is None or result.exc_info[0] is SystemExit, where
                assert result.exit_code in (0, 2), where
                if result.exit_code == 2:
                    assert f"run.jsonl:{number}: " in result.stderr, where
