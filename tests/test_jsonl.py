"""The run record: write → read round trip, and what the reader forgives and what it does not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from synthetic_run import (
    SyntheticSpec,
    synthetic_events,
    synthetic_header,
    write_synthetic_record,
)

from ddscope.errors import RecordError
from ddscope.events import EventBus
from ddscope.record.jsonl import JsonlRecorder, RunReader, read_events

SPEC = SyntheticSpec(rows=9, buffer_size=3, rate_limit_every=4, defer_every=5, drop_rows=(1,))


def _record(tmp_path: Path) -> tuple[Path, list]:
    path = tmp_path / "run.jsonl"
    header, events = synthetic_header(SPEC), list(synthetic_events(SPEC))
    recorder = JsonlRecorder(path)
    bus = EventBus([recorder])
    bus.open(header)
    for event in events:
        bus.emit(event)
    bus.close()
    return path, events


def test_write_then_read_gives_equal_events(tmp_path: Path) -> None:
    path, events = _record(tmp_path)
    header, read = read_events(path)
    assert header == synthetic_header(SPEC)
    assert read == events
    assert path.read_text().count("\n") == len(events) + 1


def test_recorder_flushes_without_close(tmp_path: Path) -> None:
    """A killed process keeps what was flushed: the flusher writes within ~100 ms."""
    path = tmp_path / "run.jsonl"
    recorder = JsonlRecorder(path, flush_interval_s=0.05)
    recorder.open(synthetic_header(SPEC))
    events = list(synthetic_events(SPEC))[:5]
    for event in events:
        recorder.handle(event)
    deadline = time.monotonic() + 5
    while path.read_text().count("\n") < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    _, read = read_events(path)  # read while the writer is still open
    assert read == events
    recorder.close()


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path, events = _record(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # cut the last line mid-way
    reader = RunReader(path)
    read = list(reader)
    assert read == events[:-1]
    assert reader.stats.truncated_last_line
    assert any("truncated last line" in w and f"{path}:" in w for w in reader.finish_warnings())


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path, events = _record(tmp_path)
    lines = path.read_text().splitlines()
    lines[4] = lines[4][:20]  # corrupt line 5
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:5: not JSON"):
        list(RunReader(path))
    lenient = RunReader(path, lenient=True)
    assert len(list(lenient)) == len(events) - 1
    assert lenient.stats.corrupt_lines == 1 and f"{path}:5:" in lenient.stats.warnings[0]


def test_invalid_event_fields_are_a_corrupt_line(tmp_path: Path) -> None:
    path, _ = _record(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"kind": "attempt_finished", "t_ns": 5})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:3: "):
        list(RunReader(path))


def test_unknown_kinds_are_skipped_and_counted(tmp_path: Path) -> None:
    path, events = _record(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(3, json.dumps({"kind": "gpu_melted", "t_ns": 7}))
    lines.insert(3, json.dumps({"kind": "gpu_melted", "t_ns": 7}))
    path.write_text("\n".join(lines) + "\n")
    reader = RunReader(path)
    assert list(reader) == events
    assert reader.stats.unknown_kinds == {"gpu_melted": 2}
    assert any("2 events of unknown kinds" in w for w in reader.finish_warnings())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b'{"kind": "run_started", "t_ns": 0}\n', "not a ddscope run header"),
        (b'{"kind": "header", "schema": "other/1"}\n', "unknown schema"),
        (b"not json\n", "header is not JSON"),
    ],
)
def test_bad_headers_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=rf"^{path}:1: .*{message}"):
        RunReader(path)


def test_missing_file_is_a_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="cannot open"):
        RunReader(tmp_path / "nope.jsonl")


def test_iter_dicts_matches_validated_events(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    count = write_synthetic_record(path, SPEC)
    rows = list(RunReader(path).iter_dicts())
    assert len(rows) == count
    assert [line for line, _ in rows] == list(range(2, count + 2))
    assert [d["kind"] for _, d in rows] == [e.kind for e in synthetic_events(SPEC)]
