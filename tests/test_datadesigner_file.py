"""A DataDesigner ``scheduler_events.jsonl`` read as a ddscope run: detection by content (plain
and gzipped), translation, segments, damaged files, and every view (health, Perfetto, Chrome
JSON, OTLP replay, ``ddtrace convert``) on the two real DataDesigner 0.9.5 recordings and on
synthetic files shaped like them."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from datadesigner_support import (
    HEALTHY_FIXTURE,
    IMPORT_ERRORS_SQL,
    S1_FIXTURE,
    SyntheticDD,
    iter_lines,
    requires_fixtures,
    synthetic_events,
    trace_processor_query,
    write_dd_file,
)
from otlp_receiver import GrpcReceiver

from ddscope.cli.main import cli
from ddscope.errors import RecordError
from ddscope.exporters.health import analyze
from ddscope.exporters.otel.replay import replay_to_otlp
from ddscope.exporters.trace.chrome_json import export_chrome_json
from ddscope.exporters.trace.perfetto import export_perfetto
from ddscope.integrations.datadesigner.reader import DataDesignerReader
from ddscope.record.detect import detect_format, open_record
from ddscope.record.jsonl import RunReader

LEASE_SLICES = (
    "select count(*) as n from slice where name in ('topic', 'summary', 'analysis', 'rewrite')"
)


def _kinds(path: Path, **kwargs: object) -> Counter[str]:
    return Counter(event.kind for event in DataDesignerReader(path, **kwargs))  # type: ignore[arg-type]


# -- detection -------------------------------------------------------------------------------


def test_format_is_detected_by_content_plain_gzipped_or_ddscope(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=4, buffer_size=2))
    plain = write_dd_file(tmp_path / "anything.log", lines)
    zipped = write_dd_file(tmp_path / "no-suffix", lines, gz=True)
    converted = tmp_path / "out"
    CliRunner().invoke(cli, ["convert", str(plain), "-o", str(converted)], catch_exceptions=False)
    (tmp_path / "junk.jsonl").write_text("not json\n")
    assert detect_format(plain) == "datadesigner"
    assert detect_format(zipped) == "datadesigner"
    assert detect_format(converted / "run.jsonl") == "ddscope"
    assert detect_format(tmp_path / "junk.jsonl") == "unknown"
    assert isinstance(open_record(converted / "run.jsonl"), RunReader)
    assert isinstance(open_record(zipped), DataDesignerReader)
    with pytest.raises(RecordError, match=r"junk\.jsonl:1:"):
        open_record(tmp_path / "junk.jsonl")


def test_plain_and_gzipped_files_give_the_same_report(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=20, buffer_size=10, every_429=7))
    plain = analyze(write_dd_file(tmp_path / "plain.jsonl", lines)).to_json()
    zipped = analyze(write_dd_file(tmp_path / "zipped.jsonl.gz", lines, gz=True)).to_json()
    for doc in (plain, zipped):
        doc["record"].pop("path")
        doc["record"]["warnings"] = [w.split(": ", 1)[1] for w in doc["record"]["warnings"]]
    assert plain == zipped


# -- translation -----------------------------------------------------------------------------


def test_leases_rows_and_deferrals_are_translated(tmp_path: Path) -> None:
    spec = SyntheticDD(records=20, buffer_size=10, every_429=5)
    lines = synthetic_events(spec)
    reader = DataDesignerReader(write_dd_file(tmp_path / "s.jsonl", lines))
    events = list(reader)
    leases = [e for e in events if e.kind == "lease_started"]
    assert len(leases) == sum(1 for line in lines if line["event_kind"] == "task_lease_acquired")
    # every cell's row comes back from DataDesigner's task id: 20 rows × 3 model columns
    cells = {e.task_id for e in leases if not e.task_id.startswith("topic:")}
    assert cells == {f"{c}:{r}" for c in ("summary", "analysis", "rewrite") for r in range(20)}
    assert {e.task_id for e in leases if e.task_id.startswith("topic:")} == {
        "topic:rg0",
        "topic:rg1",
    }
    deferred = [e for e in events if e.kind == "task_deferred"]
    assert len(deferred) == sum(1 for line in lines if line["event_kind"] == "retry_deferred") > 0
    assert {e.error_kind for e in deferred} == {"rate_limited"}  # from the snapshots' counts
    reruns = [e for e in leases if e.salvage_round is not None]
    assert len(reruns) == len(deferred) and {e.salvage_round for e in reruns} == {1}
    outcomes = Counter(e.outcome for e in events if e.kind == "lease_finished")
    assert outcomes == {"ok": len(leases) - len(deferred), "deferred": len(deferred)}
    times = [e.t_ns for e in events]
    assert times == sorted(times)
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
    assert reader.header.num_records == 20 and reader.header.buffer_size == 10
    assert [d.domain for d in reader.header.domains] == ["mock/mock"]
    assert reader.header.domains[0].max_parallel_requests == 4
    # per-task state lives only while its row group is open: memory follows the groups in flight
    assert reader.translator._tasks == {} and reader.layout._rows == {}


def test_snapshots_give_limit_changes_and_cooldowns(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=10, buffer_size=10, every_429=4))
    kinds = _kinds(write_dd_file(tmp_path / "s.jsonl", lines))
    assert kinds["limit_changed"] >= 1
    assert kinds["cooldown_started"] == kinds["cooldown_finished"] >= 1
    assert kinds["health"] == sum(
        1 for x in lines if x["event_kind"] == "scheduler_health_snapshot"
    )


def test_unknown_kinds_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=4, buffer_size=4))
    lines.insert(3, dict(lines[2], event_kind="scheduler_future_thing"))
    lines.insert(3, dict(lines[2], event_kind="scheduler_future_thing"))
    report = analyze(write_dd_file(tmp_path / "s.jsonl", lines))
    assert report.verdict == "healthy"
    assert any(
        "2 DataDesigner events of unknown kinds (scheduler_future_thing×2)" in w
        for w in report.record.warnings
    )


def test_each_segment_is_a_run_and_the_last_is_shown(tmp_path: Path) -> None:
    first = synthetic_events(
        SyntheticDD(records=4, buffer_size=4, run_id="run-a", outcome="cancelled")
    )
    second = synthetic_events(SyntheticDD(records=4, buffer_size=4, run_id="run-b", t0=2000.0))
    path = write_dd_file(tmp_path / "s.jsonl", first + second)
    shown = DataDesignerReader(path)
    assert shown.header.run_id == "run-b" and shown.segments == 2
    assert any("2 runs (segments)" in w for w in shown.finish_warnings())
    assert DataDesignerReader(path, segment=1).header.run_id == "run-a"
    assert analyze(path).totals.outcome == "complete"
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    outcomes = [RunReader(tmp_path / "out" / f"run-{i}.jsonl") for i in (1, 2)]
    assert [r.header.run_id for r in outcomes] == ["run-a", "run-b"]
    assert [analyze(tmp_path / "out" / f"run-{i}.jsonl").totals.outcome for i in (1, 2)] == [
        "cancelled",
        "complete",
    ]


def test_a_corrupt_line_names_file_and_line_and_lenient_skips_it(tmp_path: Path) -> None:
    lines = [orjson.dumps(x) for x in synthetic_events(SyntheticDD(records=4, buffer_size=4))]
    lines[5] = b'{"event_kind": "selected", "captured_at_mono'
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordError, match=r"s\.jsonl:6: not JSON"):
        analyze(path)
    report = analyze(path, lenient=True)
    assert any("s.jsonl:6: corrupt line skipped" in w for w in report.record.warnings)
    result = CliRunner().invoke(cli, ["health", str(path)])
    assert result.exit_code == 2 and "s.jsonl:6" in result.output


def test_a_cut_last_line_is_a_warning_and_open_intervals_are_closed(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=10, buffer_size=10))
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines[:40])
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(data + orjson.dumps(lines[40])[:30]))
    report = analyze(path)
    assert report.totals.state == "crashed" and report.verdict == "failed"
    assert any("truncated last line" in w for w in report.record.warnings)
    result = export_perfetto(path, tmp_path / "cut.pftrace")
    assert result.events > 0


def test_error_text_of_a_dropped_row_is_scrubbed(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=2, buffer_size=2))
    at = next(
        i
        for i, x in enumerate(lines)
        if x["event_kind"] == "task_completed"
        and x["captured_correlation"]["task_column"] == "summary"
    )
    dropped = dict(lines[at], event_kind="non_retryable_dropped")
    dropped["diagnostics"] = {"error_type": "ModelBadRequest\x1b[31mError"}
    lines.insert(at, dropped)
    events = list(DataDesignerReader(write_dd_file(tmp_path / "s.jsonl", lines)))
    drop = next(e for e in events if e.kind == "row_dropped")
    assert drop.reason == "client_error" and drop.row == 0 and drop.column == "summary"
    assert "\x1b" not in drop.message and "\\x1b" in drop.message
    lease = next(e for e in events if e.kind == "lease_finished" and e.outcome == "dropped")
    assert lease.error_kind == "client_error"


# -- the two real DataDesigner 0.9.5 recordings ----------------------------------------------


def test_fixture_healthy_run_is_healthy() -> None:
    requires_fixtures()
    report = analyze(HEALTHY_FIXTURE)
    doc = report.to_json()
    assert report.verdict == "healthy", report.findings
    assert doc["totals"]["outcome"] == "complete"
    assert doc["totals"]["rows_completed"] == 30 and doc["totals"]["row_groups_finished"] == 3
    assert doc["scheduler"]["leases_by_outcome"] == {"ok": 93}
    assert any("no per-request events" in w for w in doc["record"]["warnings"])
    # with no attempts on record, idle capacity is unknown: no finding may blame the row groups
    assert [f.code for f in report.findings] == []


def test_fixture_s1_is_an_interrupted_rate_limited_run_with_its_deferrals_counted() -> None:
    requires_fixtures()
    doc = analyze(S1_FIXTURE).to_json()
    retry_deferred = sum(1 for x in iter_lines(S1_FIXTURE) if x["event_kind"] == "retry_deferred")
    assert retry_deferred == 13
    assert doc["verdict"] == "failed" and "run_cancelled" in doc["reasons"]
    codes = {f["code"] for f in doc["findings"]}
    assert {"tasks_deferred", "no_progress"} <= codes
    assert doc["scheduler"]["tasks_deferred"] == {"rate_limited": 13}
    assert doc["scheduler"]["leases_by_outcome"] == {"ok": 2, "deferred": 13, "cancelled": 2}
    domain = doc["domains"][0]
    assert domain["limit"]["min"] == 1 and domain["cooldowns"]["count"] >= 1
    assert any("rate_limit:http_429×11" in w for w in doc["record"]["warnings"])


@pytest.mark.parametrize(("fixture", "leases"), [(HEALTHY_FIXTURE, 93), (S1_FIXTURE, 17)])
def test_fixture_traces_load_in_perfetto_with_a_slice_per_lease(
    tmp_path: Path, fixture: Path, leases: int
) -> None:
    requires_fixtures()
    trace = tmp_path / "run.pftrace"
    export_perfetto(fixture, trace)
    assert trace_processor_query(trace, IMPORT_ERRORS_SQL) == []
    assert trace_processor_query(trace, LEASE_SLICES) == [{"n": str(leases)}]
    chrome = tmp_path / "run.trace.json"
    export_chrome_json(fixture, chrome)
    assert trace_processor_query(chrome, IMPORT_ERRORS_SQL) == []


def test_cli_health_and_export_take_a_datadesigner_file(tmp_path: Path) -> None:
    requires_fixtures()
    runner = CliRunner()
    health = runner.invoke(cli, ["health", str(S1_FIXTURE), "--json"])
    assert health.exit_code == 0, health.output
    assert orjson.loads(health.stdout)["verdict"] == "failed"
    out = tmp_path / "s1.pftrace"
    export = runner.invoke(cli, ["export", str(S1_FIXTURE), "--perfetto", "-o", str(out)])
    assert export.exit_code == 0 and out.stat().st_size > 0, export.output


def test_a_datadesigner_file_replays_to_a_real_otlp_receiver() -> None:
    requires_fixtures()
    with GrpcReceiver() as receiver:
        result = replay_to_otlp(S1_FIXTURE, endpoint=receiver.endpoint, protocol="grpc")
        assert receiver.wait_for(lambda r: len(r.spans()) >= 17)
    names = Counter(receiver.span_names())
    assert result.events > 0
    assert names["task summary"] + names["task analysis"] == 16 and names["run"] == 1
    assert names["cooldown"] >= 1


def test_cli_report_takes_a_datadesigner_file(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=20, buffer_size=10, every_429=6, run_id="run-x"))
    source = write_dd_file(tmp_path / "scheduler_events.jsonl.gz", lines, gz=True)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "run-x" in out.read_text(encoding="utf-8")


def test_convert_never_replaces_a_record(tmp_path: Path) -> None:
    source = write_dd_file(tmp_path / "s.jsonl", synthetic_events(SyntheticDD(records=2)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.jsonl").write_text("precious\n")
    result = CliRunner().invoke(cli, ["convert", str(source), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "run.jsonl: exists" in result.output
    assert (tmp_path / "out" / "run.jsonl").read_text() == "precious\n"
    empty = tmp_path / "no-job.jsonl"
    empty.write_text('{"event_kind": "selected", "captured_at_monotonic": 1.0}\n')
    result = CliRunner().invoke(cli, ["convert", str(empty)])
    assert result.exit_code == 2 and "no-job.jsonl:1:" in result.output


def test_lines_before_the_first_job_start_are_skipped_with_a_warning(tmp_path: Path) -> None:
    lines = synthetic_events(SyntheticDD(records=4, buffer_size=4))
    stray = [dict(lines[5], sequence=99), dict(lines[6], sequence=100)]
    report = analyze(write_dd_file(tmp_path / "s.jsonl", stray + lines))
    assert report.verdict == "healthy"
    assert any(
        "lines 1-2 come before the first scheduler_job_started" in w for w in report.record.warnings
    )
