"""Every kind of trace we export, loaded by Perfetto's own trace processor — the engine behind
ui.perfetto.dev (``../shared/tools/trace_processor_shell``, its README beside it): the import
reports no ``error`` / ``data_loss`` stat, and SQL over the imported trace counts the same
slices, flows and counter values as the run record says.

Records are REAL runs (``ddtrace demo`` against the mock endpoint on 127.0.0.1): healthy, with
429s, saturated (the breaker stops the run), one cut off mid-line as a killed writer leaves it;
each exported as Perfetto protobuf, and the 429 run also as Chrome JSON.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_support import cut_record, demo_record

from ddscope.exporters.trace.chrome_json import export_chrome_json
from ddscope.exporters.trace.perfetto import export_perfetto

SHELL = Path(__file__).resolve().parent.parent.parent / "shared/tools/trace_processor_shell"
pytestmark = pytest.mark.skipif(
    not SHELL.exists(), reason=f"Perfetto's trace processor is not at {SHELL} (../shared absent)"
)

STATS_PROBLEMS = (
    "select name, idx, severity, source, value from stats "
    "where value > 0 and severity in ('error', 'data_loss')"
)


def query(trace: Path, sql: str) -> list[dict[str, str]]:
    """Runs ``sql`` on ``trace`` in trace_processor_shell; rows as dicts (CSV text values)."""
    done = subprocess.run(
        [str(SHELL), "query", str(trace), sql], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"trace processor failed on {trace}: {done.stderr[-2000:]}"
    return list(csv.DictReader(io.StringIO(done.stdout)))


def events(record: Path) -> list[dict[str, Any]]:
    lines = record.read_bytes().splitlines()[1:]
    out = []
    for line in lines:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:  # the cut-off record's last line
            continue
    return out


def expected_slices(items: list[dict[str, Any]]) -> Counter[str]:
    """Slice (and instant) counts by name, from the record alone (README: the tracks)."""
    want: Counter[str] = Counter()
    for e in items:
        kind = e["kind"]
        if kind == "attempt_finished" and e["outcome"] in ("ok", "rate_limited"):
            want["chat ok" if e["outcome"] == "ok" else "chat 429"] += 1
            want["429"] += e["outcome"] == "rate_limited"
        elif kind == "wait_started":
            want["wait"] += 1
        elif kind == "lease_finished":
            want[f"lease {e['outcome']}"] += 1
        elif kind == "row_dropped":
            want["row dropped"] += 1
        elif kind == "task_deferred":
            want["task deferred"] += 1
        elif kind == "cooldown_started" and e.get("cause", "rate_limited") == "rate_limited":
            want["cooldown"] += 1
        elif kind == "row_group_started":
            want[f"row group {e['row_group']}"] += 1
    want["run"] = 1
    return want


def expected_flows(items: list[dict[str, Any]]) -> int:
    """Each task is one flow through its leases, waits, attempts and lease-end instants (and,
    when its last lease was deferred, the instant that ends it: row dropped / never resumed);
    a flow through n marks is n - 1 arrows."""
    marks: Counter[str] = Counter()
    last_outcome: dict[str, str] = {}
    kinds = ("lease_started", "wait_started", "attempt_started", "lease_finished")
    for e in items:
        if e["kind"] in kinds:
            marks[e["task_id"]] += 1
        if e["kind"] == "lease_finished":
            last_outcome[e["task_id"]] = e["outcome"]
    ended_deferred = sum(1 for outcome in last_outcome.values() if outcome == "deferred")
    return sum(n - 1 for n in marks.values()) + ended_deferred


def limit_values(items: list[dict[str, Any]], capacity: int) -> list[float]:
    changes = [e for e in items if e["kind"] == "limit_changed"]
    first = changes[0]["old"] if changes else capacity
    return [float(first)] + [float(e["new"]) for e in changes]


def slice_counts(trace: Path) -> Counter[str]:
    rows = query(trace, "select name, count(*) as n from slice group by name")
    return Counter({r["name"]: int(r["n"]) for r in rows})


def counter_values(trace: Path, name_like: str) -> list[float]:
    rows = query(
        trace,
        "select c.value from counter c join counter_track t on c.track_id = t.id "
        f"where t.name like '{name_like}' order by c.ts, c.id",
    )
    return [float(r["value"]) for r in rows]


def check_against_record(trace: Path, record: Path, *, flows: bool = True) -> None:
    assert query(trace, STATS_PROBLEMS) == []
    items = events(record)
    got, want = slice_counts(trace), expected_slices(items)
    for name, n in want.items():
        assert got[name] == n, f"{trace.name}: {name!r} slices {got[name]}, record says {n}"
    by_column = Counter(e["column"] for e in items if e["kind"] == "lease_started")
    for column, n in by_column.items():
        leases = sum(v for k, v in got.items() if k == column or k.startswith(f"{column} · "))
        assert leases == n, f"{column}: {leases} lease slices, record says {n}"
    attempts = sum(v for k, v in got.items() if k.startswith("chat "))
    assert attempts == sum(1 for e in items if e["kind"] == "attempt_started")
    if flows:
        (row,) = query(trace, "select count(*) as n from flow")
        assert int(row["n"]) == expected_flows(items)
    finished = next((e for e in items if e["kind"] == "run_finished"), None)
    if finished is not None:
        for counter, key in (("%rows done%", "rows_completed"), ("%rows dropped%", "rows_dropped")):
            values = counter_values(trace, counter)  # no sample at all while it stayed 0
            assert (values[-1] if values else 0) == finished[key], counter


@pytest.mark.parametrize("scenario", ["healthy", "rate-limited", "saturated"])
def test_perfetto_trace_of_a_real_run_matches_its_record(scenario: str, tmp_path: Path) -> None:
    record = demo_record(scenario)
    trace = tmp_path / "run.pftrace"
    result = export_perfetto(record, trace)
    assert result.warnings == []
    check_against_record(trace, record)
    header = orjson.loads(record.read_bytes().splitlines()[0])
    capacity = header["domains"][0]["max_parallel_requests"]
    assert counter_values(trace, "AIMD limit") == limit_values(events(record), capacity)
    assert query(trace, "select count(*) as n from slice where dur = -1") == [{"n": "0"}]


def test_the_runs_are_what_their_names_say() -> None:
    """Guards the parametrisation above: each scenario shows what it is meant to."""
    kinds = {s: Counter(e["kind"] for e in events(demo_record(s))) for s in SCENARIOS}
    outcomes = {
        s: Counter(e["outcome"] for e in events(demo_record(s)) if e["kind"] == "attempt_finished")
        for s in SCENARIOS
    }
    assert outcomes["healthy"]["rate_limited"] == 0
    assert outcomes["rate-limited"]["rate_limited"] > 0 and kinds["rate-limited"]["limit_changed"]
    assert kinds["saturated"]["breaker"] >= 1 and kinds["saturated"]["shutdown"] == 1


SCENARIOS = ("healthy", "rate-limited", "saturated")


def test_cut_off_record_exports_a_trace_with_every_slice_closed(tmp_path: Path) -> None:
    record = cut_record(demo_record("rate-limited"), tmp_path / "cut.jsonl")
    trace = tmp_path / "cut.pftrace"
    result = export_perfetto(record, trace)
    assert any("truncated last line" in w for w in result.warnings)
    check_against_record(trace, record, flows=False)
    assert query(trace, "select count(*) as n from slice where dur = -1") == [{"n": "0"}]
    unfinished = query(
        trace,
        "select count(*) as n from slice where extract_arg(arg_set_id, 'debug.unfinished') = 1",
    )
    assert int(unfinished[0]["n"]) > 0  # the run itself, at least, was left open


def test_chrome_json_trace_matches_its_record(tmp_path: Path) -> None:
    record = demo_record("rate-limited")
    trace = tmp_path / "run.trace.json"
    export_chrome_json(record, trace)
    check_against_record(trace, record)
    header = orjson.loads(record.read_bytes().splitlines()[0])
    capacity = header["domains"][0]["max_parallel_requests"]
    assert counter_values(trace, "%AIMD limit%") == limit_values(events(record), capacity)


def test_flows_per_task_in_the_trace_follow_the_record(tmp_path: Path) -> None:
    """Beyond the total: every arrow joins two marks of one task (same debug.task_id)."""
    record = demo_record("rate-limited")
    trace = tmp_path / "run.pftrace"
    export_perfetto(record, trace)
    rows = query(
        trace,
        "select extract_arg(a.arg_set_id, 'debug.task_id') as out_task, "
        "extract_arg(b.arg_set_id, 'debug.task_id') as in_task "
        "from flow f join slice a on f.slice_out = a.id join slice b on f.slice_in = b.id",
    )
    per_task: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        if "[NULL]" not in (row["out_task"], row["in_task"]):  # marks without a task_id arg
            assert row["out_task"] == row["in_task"]
            per_task[row["in_task"]] += 1
    assert len(per_task) == len({e["task_id"] for e in events(record) if "task_id" in e})
