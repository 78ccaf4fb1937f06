from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from ddscope.engine.rows.output import JsonlRowWriter, read_rows


def test_rows_are_written_in_order_with_the_row_index_first(tmp_path: Path) -> None:
    path = tmp_path / "out" / "data.jsonl"
    with JsonlRowWriter(path) as writer:
        writer.write_rows(
            [{"topic": "a", "_row": 0, "summary": "s0"}, {"_row": 2, "topic": "b", "summary": "s2"}]
        )
        writer.write_rows([{"_row": 3, "topic": "c", "summary": "s3"}])
    rows = read_rows(path)
    assert [r["_row"] for r in rows] == [0, 2, 3]
    assert list(rows[0]) == ["_row", "topic", "summary"]
    assert rows[1] == {"_row": 2, "topic": "b", "summary": "s2"}
    assert writer.rows_written == 3


def test_each_row_group_is_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    writer = JsonlRowWriter(path)
    writer.write_rows([{"_row": 0, "x": 1}])
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [{"_row": 0, "x": 1}]
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="write after close"):
        writer.write_rows([{"_row": 1}])


def test_rows_without_an_index_continue_from_the_last_written(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    with JsonlRowWriter(path) as writer:
        writer.write_rows([{"_row": 4, "x": "a"}, {"x": "b"}])
        writer.write_rows([{"x": "c"}])
    assert [r["_row"] for r in read_rows(path)] == [4, 5, 6]


def test_values_that_are_not_json_are_written_as_text(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    value = uuid.UUID(int=7)
    with JsonlRowWriter(path) as writer:
        writer.write_rows([{"_row": 0, "id": value, "text": "héllo\nworld"}])
    assert read_rows(path) == [{"_row": 0, "id": str(value), "text": "héllo\nworld"}]
    assert path.read_text(encoding="utf-8").count("\n") == 1


def test_a_non_integer_row_index_is_refused(tmp_path: Path) -> None:
    with JsonlRowWriter(tmp_path / "d.jsonl") as writer, pytest.raises(ValueError, match="_row"):
        writer.write_rows([{"_row": "1"}])


def test_discarding_writer_counts_rows_and_keeps_none() -> None:
    from ddscope.engine.rows.output import DiscardingRowWriter

    writer = DiscardingRowWriter()
    writer.write_rows([{"a": 1}, {"a": 2}])
    writer.write_rows([{"a": 3}])
    writer.close()
    assert writer.rows_written == 3
