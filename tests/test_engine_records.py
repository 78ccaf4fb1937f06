"""The engine-made records that exporter tests and the S6 benchmarks use: the real engine on a
fake clock, every interval kind present and paired, the schedule honoured, same spec → same
bytes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from engine_records import STARTED_AT_UNIX_NS, EngineSpec, engine_events, write_engine_record
from scheduler_support import unpaired_intervals

from ddscope.record.jsonl import RunReader

SPEC = EngineSpec(rows=40, buffer_size=8, rate_limit_every=7, defer_every=9, drop_rows=(3, 20))


def test_every_interval_kind_is_there_and_pairs_up() -> None:
    header, events = engine_events(SPEC)
    kinds = Counter(e.kind for e in events)
    for kind in (
        "run_started",
        "row_group_started",
        "lease_started",
        "wait_started",
        "attempt_started",
        "cooldown_started",
        "limit_changed",
        "task_deferred",
        "salvage_started",
        "row_dropped",
        "health",
        "run_finished",
    ):
        assert kinds[kind] > 0, f"no {kind} in the engine's record"
    assert unpaired_intervals(events) == []
    assert header.num_records == 40 and header.started_at_unix_ns == STARTED_AT_UNIX_NS
    assert [e.t_ns for e in events] == sorted(e.t_ns for e in events)


def test_the_schedule_decides_429s_deferrals_and_drops() -> None:
    _, events = engine_events(SPEC)
    dropped = sorted(e.row for e in events if e.kind == "row_dropped")
    assert dropped == [3, 20]
    refused = {e.task_id for e in events if e.kind == "attempt_finished" and e.status_code == 429}
    failed = {e.task_id for e in events if e.kind == "attempt_finished" and e.status_code == 503}
    deferred = {e.task_id for e in events if e.kind == "task_deferred"}
    # task numbers run 1, 2, 3 … over (row, column); the dropped rows never reach their later tasks
    columns = ("summary", "analysis", "rewrite")
    number = {f"{c}:{r}": r * 3 + i + 1 for r in range(40) for i, c in enumerate(columns)}
    assert refused and all(number[t] % 7 == 0 and number[t] % 9 != 0 for t in refused)
    assert failed == deferred and all(number[t] % 9 == 0 for t in deferred)
    [finished] = [e for e in events if e.kind == "run_finished"]
    assert (finished.rows_completed, finished.rows_dropped) == (38, 2)
    salvaged = [e for e in events if e.kind == "salvage_finished"]
    assert sum(s.recovered for s in salvaged) == len(deferred)


def test_the_record_is_the_same_bytes_for_the_same_spec(tmp_path: Path) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    spec = EngineSpec(rows=12, buffer_size=4, rate_limit_every=5, defer_every=7, seed=3)
    count = write_engine_record(one, spec)
    assert write_engine_record(two, spec) == count
    assert one.read_bytes() == two.read_bytes()
    assert sum(1 for _ in RunReader(one)) == count
    other = tmp_path / "other.jsonl"
    write_engine_record(other, EngineSpec(rows=12, buffer_size=4, rate_limit_every=5, seed=4))
    assert other.read_bytes() != one.read_bytes()
