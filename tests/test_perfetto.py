"""``ddtrace export --perfetto``: traces parsed back with the perfetto package's protobuf classes
and compared with the record they came from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_records import DOMAIN, EngineSpec, engine_events, write_engine_record
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace
from perfetto_support import (
    ParsedTrace,
    peak_concurrency,
    read_trace,
    record_dicts,
    write_record,
)

from ddscope.cli.main import cli
from ddscope.errors import RecordError
from ddscope.events import (
    AttemptFinished,
    AttemptStarted,
    BreakerChanged,
    CooldownFinished,
    CooldownStarted,
    Health,
    LeaseFinished,
    LeaseStarted,
    RowDropped,
    RunStarted,
    Shutdown,
    TaskDeferred,
    WaitFinished,
    WaitStarted,
)
from ddscope.exporters.trace.perfetto import export_perfetto
from ddscope.record.jsonl import read_events

SPEC = EngineSpec(
    rows=60, buffer_size=20, max_parallel=4, rate_limit_every=7, defer_every=11, drop_rows=(3,)
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ParsedTrace]:
    record = tmp_path_factory.mktemp("perfetto") / "run.jsonl"
    write_engine_record(record, SPEC)
    result = export_perfetto(record, record.with_suffix(".pftrace"))
    assert result.warnings == []
    assert result.bytes_written == record.with_suffix(".pftrace").stat().st_size
    assert result.events == len(record_dicts(record))
    return record, read_trace(record.with_suffix(".pftrace"))


def _domain_group(trace: ParsedTrace, child: str) -> int:
    return trace.find(child, parent=trace.find(DOMAIN))


def test_attempt_slices_match_the_record(exported: tuple[Path, ParsedTrace]) -> None:
    record, trace = exported
    finished = [d for d in record_dicts(record) if d["kind"] == "attempt_finished"]
    attempts = trace.on(trace.children(_domain_group(trace, "attempts")))
    assert len(attempts) == len(finished)
    names = Counter(s.name for s in attempts)
    outcomes = Counter(d["outcome"] for d in finished)
    assert names["chat 429"] == outcomes["rate_limited"] > 0
    assert names["chat ok"] == outcomes["ok"]
    assert names["chat 400"] == outcomes["client_error"] == len(SPEC.drop_rows)
    rate_limited = [s for s in attempts if s.name == "chat 429"]
    retry_after = SPEC.retry_after_s
    assert all(
        s.args["status"] == 429 and s.args["retry_after_s"] == retry_after for s in rate_limited
    )
    assert all(s.args["input_tokens"] == 12 for s in attempts if s.name == "chat ok")


def test_lanes_stay_at_the_peak_concurrency(exported: tuple[Path, ParsedTrace]) -> None:
    record, trace = exported
    events = record_dicts(record)
    for group, kind in (("attempts", "attempt"), ("request waits", "wait")):
        lanes = trace.children(_domain_group(trace, group))
        assert len(lanes) == peak_concurrency(events, kind, "domain")[DOMAIN]
    assert len(trace.children(_domain_group(trace, "attempts"))) <= SPEC.max_parallel
    for column, peak in peak_concurrency(events, "lease", "column").items():
        assert len(trace.children(trace.find(column))) == peak
    in_flight = trace.counter_values(_domain_group(trace, "in flight"))
    assert max(in_flight) == peak_concurrency(events, "attempt", "domain")[DOMAIN]
    assert in_flight[-1] == 0


def test_limit_counter_reproduces_the_limit_changes(exported: tuple[Path, ParsedTrace]) -> None:
    record, trace = exported
    changes = [d for d in record_dicts(record) if d["kind"] == "limit_changed"]
    assert changes
    values = trace.counter_values(_domain_group(trace, "AIMD limit"))
    assert values == [changes[0]["old"]] + [d["new"] for d in changes]


def test_point_events_become_instants(exported: tuple[Path, ParsedTrace]) -> None:
    record, trace = exported
    kinds = Counter(d["kind"] for d in record_dicts(record))
    by_name = Counter(i.name for i in trace.instants)
    assert by_name["429"] == kinds["cooldown_started"] > 0
    assert by_name["row dropped"] == kinds["row_dropped"] == len(SPEC.drop_rows)
    dropped = trace.counter_values(trace.find("rows dropped"))
    assert dropped == [1]
    assert trace.counter_values(trace.find("rows done"))[-1] == SPEC.rows - len(SPEC.drop_rows)


def test_flows_follow_a_task_through_its_retries(exported: tuple[Path, ParsedTrace]) -> None:
    _, trace = exported
    retried = next(s for s in trace.slices if s.name == "chat 429")
    flow = retried.flows[0]
    marks = [m for m in trace.slices + trace.instants if flow in m.flows + m.terminating]
    marks.sort(key=lambda m: (m.begin, m.seq))  # the order trace processor reads them in
    kinds = [trace.tracks[trace.tracks[m.track].parent_uuid].name for m in marks]
    names = [m.name for m in marks]
    # The engine records no wait for a try admitted at once; the retry waits out the cooldown.
    column = retried.args["task_id"].split(":")[0]
    assert kinds[:4] == [column, "attempts", "request waits", "attempts"]
    assert names[1:4] == ["chat 429", "wait", "chat ok"]
    assert marks[-1].terminating == [flow] and marks[-1].name == "lease ok"
    assert all(
        m.args.get("task_id", retried.args["task_id"]) == retried.args["task_id"] for m in marks
    )


def test_a_deferred_task_keeps_its_flow_into_salvage(exported: tuple[Path, ParsedTrace]) -> None:
    _, trace = exported
    deferred = next(i for i in trace.instants if i.name == "lease deferred")
    flow = deferred.flows[0]
    leases = [s for s in trace.slices if flow in s.flows and "salvage" in s.name]
    assert len(leases) == 1 and leases[0].begin >= deferred.begin
    ends = [i for i in trace.instants if flow in i.terminating]
    assert len(ends) == 1 and ends[0].name == "lease ok"


def test_timestamps_are_wall_clock_nanoseconds(exported: tuple[Path, ParsedTrace]) -> None:
    record, trace = exported
    start = read_events(record)[0].started_at_unix_ns
    run = trace.on([trace.find("run")])  # the run's slice sits on its own track, no lanes
    last = record_dicts(record)[-1]
    assert [(s.begin, s.end) for s in run] == [(start, start + last["t_ns"])]
    assert run[0].args["outcome"] == last["outcome"] and run[0].args["rows_dropped"] == 1


def test_the_hand_encoder_writes_what_the_protobuf_classes_write(tmp_path: Path) -> None:
    full = tmp_path / "run.jsonl"
    write_engine_record(full, SPEC)
    cut = tmp_path / "cut.jsonl"  # cut mid-line: unfinished slices, flows ended at the end
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    for record in (full, cut):
        wire = export_perfetto(record, tmp_path / "wire.pftrace")
        proto = export_perfetto(record, tmp_path / "proto.pftrace", encoder="proto")
        traces = []
        for path in (wire.out, proto.out):
            trace = Trace()
            trace.ParseFromString(Path(path).read_bytes())
            traces.append(trace)
        assert len(traces[0].packet) > 300
        assert traces[0] == traces[1]
        assert wire.bytes_written == proto.bytes_written


def test_a_record_cut_mid_line_still_exports(tmp_path: Path) -> None:
    full = tmp_path / "full.jsonl"
    write_engine_record(full, SPEC)
    data = full.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) // 2 + 7])
    assert not cut.read_bytes().endswith(b"\n")
    result = export_perfetto(cut, tmp_path / "cut.pftrace")
    assert any("truncated last line" in w for w in result.warnings)
    notes = [w for w in result.warnings if "left open were closed" in w]
    assert len(notes) == 1
    trace = read_trace(tmp_path / "cut.pftrace")  # every slice ended, every flow terminated
    unfinished = [s for s in trace.slices if s.args.get("unfinished") is True]
    assert unfinished and int(notes[0].split()[0]) == len(unfinished)
    last_ts = max(s.end for s in trace.slices)
    assert all(s.end == last_ts for s in unfinished)
    assert any(s.name == "run" for s in unfinished)


def _saturated_task_record(path: Path) -> Path:
    """One task through a 429, a cooldown, an open breaker, deferral, shutdown and its drop."""
    header, _ = engine_events(EngineSpec(rows=2, buffer_size=2))
    task = {"task_id": "summary:0", "domain": DOMAIN}
    lease = {"task_id": "summary:0", "row_group": 0, "column": "summary"}
    request = {"request_id": 7, **task}
    rows = {"rows_completed": 0, "rows_dropped": 0, "row_groups_in_flight": 1}
    saturated = {"reason": "endpoint_saturated", "message": "mock/mock-model keeps answering 429"}
    events = [
        RunStarted(t_ns=0, num_records=2, row_groups=1),
        LeaseStarted(t_ns=1, lease_id=1, row=0, **lease),
        WaitStarted(t_ns=2, attempt=1, lease_id=1, **request),
        WaitFinished(t_ns=3, attempt=1, outcome="admitted", **request),
        AttemptStarted(t_ns=3, attempt=1, lease_id=1, **request),
        AttemptFinished(t_ns=9, attempt=1, outcome="rate_limited", status_code=429, **request),
        CooldownStarted(t_ns=9, cooldown_id=1, domain=DOMAIN, duration_s=2.0, retry_after_s=2.0),
        WaitStarted(t_ns=10, attempt=2, lease_id=1, **request),
        BreakerChanged(
            t_ns=11, domain=DOMAIN, state="open", reason="consecutive_429", consecutive_429=8
        ),
        WaitFinished(t_ns=12, attempt=2, outcome="breaker_open", **request),
        CooldownFinished(t_ns=13, cooldown_id=1, domain=DOMAIN),
        LeaseFinished(t_ns=14, lease_id=1, outcome="deferred", error_kind="breaker_open", **lease),
        TaskDeferred(t_ns=14, row=0, error_kind="breaker_open", attempts=2, **lease),
        Health(t_ns=15, queue_depth=3, leases=0, in_flight=0, deferred=1, **rows),
        Shutdown(t_ns=16, domain=DOMAIN, **saturated),
        RowDropped(t_ns=17, row=0, **lease, **saturated),
    ]
    return write_record(path, header, events)


def test_breakers_shutdowns_and_timeouts_are_instants_with_reasons(tmp_path: Path) -> None:
    record = _saturated_task_record(tmp_path / "run.jsonl")
    result = export_perfetto(record, tmp_path / "run.pftrace")
    trace = read_trace(tmp_path / "run.pftrace")
    instants = {i.name: i for i in trace.instants}
    assert instants["breaker open"].args["reason"] == "consecutive_429"
    assert instants["breaker open"].args["consecutive_429"] == 8
    assert instants["shutdown"].args["reason"] == "endpoint_saturated"
    assert instants["refused: breaker open"].track == _domain_group(
        trace, "429 · timeouts · breaker"
    )
    assert instants["row dropped"].terminating == instants["lease deferred"].flows  # flow ends here
    cooldowns = trace.on(trace.children(_domain_group(trace, "cooldown")))
    assert [(c.end - c.begin, c.args["duration_s"]) for c in cooldowns] == [(4, 2.0)]
    assert trace.counter_values(trace.find("ready queue")) == [3]
    assert any("1 intervals left open" in w for w in result.warnings)  # the run never finished


def test_timestamps_that_go_back_are_clamped(tmp_path: Path) -> None:
    header, _ = engine_events(EngineSpec(rows=1, buffer_size=1))
    task = {"task_id": "summary:0", "domain": DOMAIN}
    events = [
        AttemptStarted(t_ns=100, request_id=1, attempt=1, lease_id=1, **task),
        AttemptFinished(t_ns=50, request_id=1, attempt=1, outcome="ok", status_code=200, **task),
    ]
    record = write_record(tmp_path / "run.jsonl", header, events)
    with record.open("a") as file:
        file.write('{"kind": "from_the_future", "t_ns": 3}\n')
    result = export_perfetto(record, tmp_path / "run.pftrace")
    (chat,) = read_trace(tmp_path / "run.pftrace").slices
    assert chat.end == chat.begin == header.started_at_unix_ns + 100
    assert any("from_the_future×1" in w for w in result.warnings)


def test_track_count_does_not_grow_with_the_run(tmp_path: Path) -> None:
    sizes = []
    for rows in (40, 200):
        record = tmp_path / f"run{rows}.jsonl"
        write_engine_record(record, EngineSpec(rows=rows, buffer_size=20, rate_limit_every=9))
        export_perfetto(record, tmp_path / f"run{rows}.pftrace")
        trace = read_trace(tmp_path / f"run{rows}.pftrace")
        lanes = sum(1 for d in trace.tracks.values() if "#" in d.name)
        sizes.append((lanes, len(trace.slices)))
    assert sizes[0][0] == sizes[1][0]  # lanes follow concurrency, not the number of slices
    assert sizes[1][1] > 4 * sizes[0][1]


def test_cli_prints_path_event_count_and_size(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    events = write_engine_record(record, EngineSpec(rows=6, buffer_size=3))
    result = CliRunner().invoke(cli, ["export", str(record), "--perfetto"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run.pftrace"
    size = out.stat().st_size
    assert result.output.strip() == f"{out}  ({events} events, {size:,} bytes)"
    read_trace(out)


def test_cli_missing_record_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "nope.jsonl"), "--perfetto"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("RecordError: ") and "nope.jsonl" in lines[0]


def test_cli_corrupt_record_is_a_one_line_error_and_leaves_no_file(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    write_engine_record(record, EngineSpec(rows=6, buffer_size=3))
    lines = record.read_text().splitlines()
    lines[5] = "{not json"
    record.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.pftrace"
    result = CliRunner().invoke(cli, ["export", str(record), "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "run.jsonl:6: not JSON" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [record]
    lenient = CliRunner().invoke(cli, ["export", str(record), "-o", str(out), "--lenient"])
    assert lenient.exit_code == 0, lenient.output
    assert "warning: " in lenient.output and "corrupt line skipped" in lenient.output
    read_trace(out)


def test_cli_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    write_engine_record(record, EngineSpec(rows=3, buffer_size=3))
    out = tmp_path / "missing-dir" / "run.pftrace"
    result = CliRunner().invoke(cli, ["export", str(record), "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.startswith("ConfigError: ") and "cannot write" in result.output


def test_a_real_run_exports_and_matches_its_record(tmp_path: Path) -> None:
    """The engine against the mock endpoint over HTTP on 127.0.0.1, with 429s and cooldowns."""
    args = ["demo", "--out", str(tmp_path), "--records", "6", "--scenario", "rate-limited", "-q"]
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    record = tmp_path / "run.jsonl"
    result = export_perfetto(record, tmp_path / "run.pftrace")
    assert result.warnings == []
    trace = read_trace(tmp_path / "run.pftrace")
    events = record_dicts(record)
    kinds = Counter(d["kind"] for d in events)
    (domain,) = {d["domain"] for d in events if d["kind"] == "attempt_started"}
    attempts = trace.on(trace.children(trace.find("attempts", parent=trace.find(domain))))
    assert len(attempts) == kinds["attempt_started"] == kinds["attempt_finished"]
    rate_limited = sum(1 for d in events if d.get("outcome") == "rate_limited")
    assert sum(1 for s in attempts if s.name == "chat 429") == rate_limited
    assert sum(1 for i in trace.instants if i.name == "429") == rate_limited
    lanes = trace.children(trace.find("attempts", parent=trace.find(domain)))
    assert len(lanes) <= peak_concurrency(events, "attempt", "domain")[domain]
    limit = trace.counter_values(trace.find("AIMD limit", parent=trace.find(domain)))
    changes = [d for d in events if d["kind"] == "limit_changed"]
    assert rate_limited and changes  # the scenario's 429s make AIMD back off
    assert limit == [changes[0]["old"]] + [d["new"] for d in changes]
    header, _ = read_events(record)
    columns = [trace.find(c.name) for c in header.columns if c.domain]
    leases = trace.on(lane for column in columns for lane in trace.children(column))
    assert len(leases) == kinds["lease_started"]
    lease_ends = [i for i in trace.instants if i.name.startswith("lease ")]
    assert len(lease_ends) == kinds["lease_finished"]


def test_an_event_missing_a_field_is_named_or_skipped_when_lenient(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    write_engine_record(record, EngineSpec(rows=3, buffer_size=3))
    lines = record.read_text().splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if '"attempt_finished"' in line)
    lines[line_no - 1] = lines[line_no - 1].replace('"request_id"', '"request"')
    record.write_text("\n".join(lines) + "\n")
    expected = rf"run.jsonl:{line_no}: attempt_finished event without 'request_id'"
    with pytest.raises(RecordError, match=expected):
        export_perfetto(record, tmp_path / "run.pftrace")
    assert not (tmp_path / "run.pftrace").exists()
    result = export_perfetto(record, tmp_path / "run.pftrace", lenient=True)
    notes = [w for w in result.warnings if f"run.jsonl:{line_no}: attempt_finished" in w]
    assert len(notes) == 1 and notes[0].endswith("skipped")
    read_trace(tmp_path / "run.pftrace")  # the attempt it could not close is closed at the end
