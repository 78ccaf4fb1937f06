"""The run record: write → read round trip, and what the reader forgives and what it does not."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from engine_records import EngineSpec, engine_events, write_engine_record

from ddscope.errors import RecordError
from ddscope.events import Event, EventBus, RunHeader, RunStarted
from ddscope.record.jsonl import JsonlRecorder, RecordWriteError, RunReader, read_events

SPEC = EngineSpec(rows=9, buffer_size=3, rate_limit_every=4, defer_every=5, drop_rows=(1,))


def _run() -> tuple[RunHeader, list[Event]]:
    """The header and events of an engine-made run (tests/engine_records.py)."""
    header, events = engine_events(SPEC)
    return header, list(events)


def _record(tmp_path: Path) -> tuple[Path, list]:
    path = tmp_path / "run.jsonl"
    header, events = _run()
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
    assert header == _run()[0]
    assert read == events
    assert path.read_text().count("\n") == len(events) + 1


def test_recorder_flushes_without_close(tmp_path: Path) -> None:
    """A killed process keeps what was flushed: the flusher writes within ~100 ms."""
    path = tmp_path / "run.jsonl"
    recorder = JsonlRecorder(path, flush_interval_s=0.05)
    recorder.open(_run()[0])
    events = _run()[1][:5]
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
    count = write_engine_record(path, SPEC)
    rows = list(RunReader(path).iter_dicts())
    assert len(rows) == count
    assert [line for line, _ in rows] == list(range(2, count + 2))
    assert [d["kind"] for _, d in rows] == [e.kind for e in _run()[1]]


# -- refusals the reader names ----------------------------------------------------------------


def test_a_newer_schema_is_refused_naming_the_version(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_engine_record(path, SPEC)
    text = path.read_text().replace('"schema":"ddscope.run/1"', '"schema":"ddscope.run/2"', 1)
    path.write_text(text)
    with pytest.raises(RecordError, match=r"run.jsonl:1: record schema 'ddscope.run/2' is not"):
        RunReader(path)


def test_a_line_without_a_required_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_engine_record(path, SPEC)
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if '"row_group_finished"' in line)
    lines[number - 1] = lines[number - 1].replace('"rows_completed"', '"rows_done"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"run.jsonl:{number}: .*without 'rows_completed'"):
        list(RunReader(path).iter_dicts())
    lenient = RunReader(path, lenient=True)
    assert len(list(lenient.iter_dicts())) == len(lines) - 2  # header and the bad line
    assert lenient.stats.corrupt_lines == 1


def test_a_gzipped_record_is_read_like_a_plain_one(tmp_path: Path) -> None:
    import gzip

    plain = tmp_path / "run.jsonl"
    write_engine_record(plain, SPEC)
    packed = tmp_path / "run.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_events(packed) == read_events(plain)


# -- segments -------------------------------------------------------------------------------


def _segment(path: Path, header: RunHeader, events: list, segment: int, shift_ns: int) -> None:
    recorder = JsonlRecorder(path, replace_segments=False)
    start = header.started_at_unix_ns + shift_ns
    recorder.open(header.model_copy(update={"segment": segment, "started_at_unix_ns": start}))
    for event in events:
        recorder.handle(event)
    recorder.close()


def test_segments_beside_the_record_are_read_as_one_run(tmp_path: Path) -> None:
    from ddscope.events import Resumed
    from ddscope.record.jsonl import record_parts, segment_path

    header, events = _run()
    base = tmp_path / "run.jsonl"
    half = len(events) // 2
    _segment(base, header, events[:half], 0, 0)
    later = [events[0], Resumed(t_ns=1, segment=1, row_groups_done=1, rows_done=3)]
    later += events[half:]
    _segment(segment_path(base, 1), header, later, 1, 5 * 10**9)
    assert record_parts(base) == [base, tmp_path / "run.1.jsonl"]
    read = list(RunReader(base))
    kinds = [e.kind for e in read]
    assert kinds.count("run_started") == 1 and kinds.count("resumed") == 1
    assert len(read) == len(events) + 1
    seam = kinds.index("resumed")
    assert read[seam].t_ns >= 5 * 10**9  # on the first segment's time axis, after the gap
    assert all(a.t_ns <= b.t_ns for a, b in zip(read[seam:], read[seam + 1 :], strict=False))
    # an explicit list reads exactly those parts
    assert len(list(RunReader([base]))) == half


def test_a_part_of_another_run_is_refused(tmp_path: Path) -> None:
    header, events = _run()
    first, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _segment(first, header, events[:3], 0, 0)
    _segment(other, header.model_copy(update={"run_id": "another"}), events[3:], 1, 0)
    with pytest.raises(RecordError, match="part of run 'another'"):
        list(RunReader([first, other]))


def test_opening_a_new_record_removes_stale_segments(tmp_path: Path) -> None:
    stale = tmp_path / "run.2.jsonl"
    stale.write_text("old\n")
    recorder = JsonlRecorder(tmp_path / "run.jsonl")
    recorder.open(_run()[0])
    recorder.close()
    assert not stale.exists()


# -- the writer's failures surface ----------------------------------------------------------


def test_a_failed_flush_is_raised_by_the_next_event_and_by_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from ddscope.record import recorder as writer_module

    recorder = JsonlRecorder(tmp_path / "run.jsonl", flush_interval_s=0.01)
    recorder.open(_run()[0])
    events = _run()[1]
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module.os, "write", full_disk)
    recorder.handle(events[0])
    deadline = time.monotonic() + 5
    while recorder.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(
        writer_module.RecordWriteError, match=r"run\.jsonl: cannot write: No space left"
    ):
        recorder.handle(events[1])
    monkeypatch.setattr(writer_module.os, "write", real_write)
    with pytest.raises(writer_module.RecordWriteError):
        recorder.close()
    assert (tmp_path / "run.jsonl").read_text().endswith("\n")  # whole lines only


def test_the_buffer_is_bounded_when_the_disk_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ddscope.record import recorder as writer_module

    monkeypatch.setattr(writer_module, "STALL_S", 0.2)
    recorder = JsonlRecorder(tmp_path / "run.jsonl", max_buffer_events=3)
    recorder.open(_run()[0])
    stalled = writer_module.threading.Event()
    monkeypatch.setattr(recorder, "_write", lambda lines: stalled.wait(5))
    events = _run()[1]
    with pytest.raises(writer_module.RecordWriteError, match="did not take the record's events"):
        for event in events * 50:
            recorder.handle(event)
    assert recorder.events_written < len(events) * 50  # it stopped taking events
    stalled.set()


def test_events_are_written_by_the_flusher_in_order_and_a_failed_serialisation_stops_it(
    tmp_path: Path,
) -> None:
    """handle() only queues (issue 17): the flusher writes the queued events within its
    interval, in order; an event it cannot serialise fails the recorder like a disk error."""
    path = tmp_path / "run.jsonl"
    header, events = _run()
    recorder = JsonlRecorder(path, flush_interval_s=0.01)
    recorder.open(header)
    for event in events[:5]:
        recorder.handle(event)
    deadline = time.monotonic() + 5
    while path.read_text().count("\n") < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = path.read_text().splitlines()[1:]
    assert [json.loads(line)["t_ns"] for line in lines] == [e.t_ns for e in events[:5]]

    # Built without validation (as a bug could): a value no JSON serializer knows.
    broken = RunStarted.model_construct(t_ns=events[5].t_ns, num_records=1, row_groups=object())
    recorder.handle(broken)
    while recorder.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RecordWriteError, match=r"run\.jsonl: cannot serialise an event: Unable"):
        recorder.handle(events[6])
    with pytest.raises(RecordWriteError):
        recorder.close()
    assert path.read_text().count("\n") == 6  # what was written stays, whole lines


def test_concurrent_flushes_keep_the_events_in_order(tmp_path: Path) -> None:
    """A flush owns the file from its swap to its write: flushes racing the writer thread (and
    each other) cannot put a later batch before an earlier one."""
    import threading

    path = tmp_path / "run.jsonl"
    header, events = _run()
    recorder = JsonlRecorder(path, flush_interval_s=0.001)
    recorder.open(header)
    stop = threading.Event()

    def flush_often() -> None:
        for _ in range(100_000):  # bounded; ends when the events are all handed over
            if stop.is_set():
                return
            recorder.flush()

    flushers = [threading.Thread(target=flush_often) for _ in range(3)]
    for thread in flushers:
        thread.start()
    for _ in range(5):
        for event in events:
            recorder.handle(event)
    stop.set()
    for thread in flushers:
        thread.join(timeout=10)
    recorder.close()
    written = [json.loads(line)["t_ns"] for line in path.read_text().splitlines()[1:]]
    assert written == [e.t_ns for e in events] * 5


def test_a_line_is_byte_for_byte_what_model_dump_json_gives() -> None:
    """The writer serialises with the model's serializer straight to bytes (issue 17); the
    lines are the documented ``model_dump_json(exclude_none=True)`` for every kind of event."""
    from ddscope.record.recorder import _line

    events = list(engine_events(EngineSpec(rows=20, rate_limit_every=5, defer_every=7))[1])
    assert len({e.kind for e in events}) >= 12  # cooldowns, limits, salvage, health …
    for event in events:
        assert _line(event) == event.model_dump_json(exclude_none=True).encode()


def test_a_cut_gzip_record_is_one_error_naming_the_file(tmp_path: Path) -> None:
    """Reading straight from the (gzip) file's own iterator keeps the one-line error."""
    import gzip

    plain = tmp_path / "run.jsonl"
    write_engine_record(plain, EngineSpec(rows=60))
    packed = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) * 6 // 10])
    reader = RunReader(cut)
    with pytest.raises(RecordError, match=r"cut\.jsonl\.gz: cannot read: Compressed file ended"):
        for _ in reader.iter_dicts():
            pass
    whole = RunReader(plain)
    assert sum(1 for _ in whole.iter_dicts()) > 100  # the whole one reads


def test_events_handled_while_the_flusher_takes_batches_are_each_written_once_in_order(
    tmp_path: Path,
) -> None:
    """handle() appends without a lock while the flusher thread keeps taking what is queued
    (every millisecond here): no event is lost, doubled or reordered."""
    path = tmp_path / "run.jsonl"
    header, events = _run()
    template = events[1]
    many = [template.model_copy(update={"t_ns": t}) for t in range(20_000)]
    recorder = JsonlRecorder(path, flush_interval_s=0.001)
    recorder.open(header)
    batches: list[int] = []
    write = recorder._write

    def counted_write(lines: list[bytes]) -> None:
        batches.append(len(lines))
        write(lines)

    recorder._write = counted_write  # type: ignore[method-assign]
    for i, event in enumerate(many):
        recorder.handle(event)
        if i % 1_000 == 999:
            time.sleep(0.003)  # the flusher takes a batch meanwhile
    recorder.close()
    written = [json.loads(line)["t_ns"] for line in path.read_text().splitlines()[1:]]
    assert written == list(range(20_000))
    assert recorder.events_written == 20_000
    assert len(batches) >= 5 and sum(batches) == 20_000  # written in many takes
