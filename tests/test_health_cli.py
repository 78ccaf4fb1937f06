"""``ddtrace health`` through click: text, --json, --at, --fail-on, bad input, colour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_records import EngineSpec, write_engine_record

from ddscope.cli.main import cli
from ddscope.exporters.health import analyze
from ddscope.exporters.health.render import render


def health(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["health", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("health-cli")
    specs = {
        "healthy": EngineSpec(rows=24),
        "degraded": EngineSpec(rows=40, rate_limit_every=6),
        "failed": EngineSpec(rows=20, drop_rows=(3,)),
    }
    out = {}
    for name, spec in specs.items():
        out[name] = base / f"{name}.jsonl"
        write_engine_record(out[name], spec)
    return out


def test_text_report_shows_verdict_findings_and_tables(records):
    code, out, _ = health(str(records["degraded"]))
    assert code == 0
    assert "verdict: DEGRADED" in out
    assert "[degraded] rate_limited: mock/mock-model:" in out and "→ lower" in out
    assert "domain" in out and "mock/mock-model" in out and "model slots:" in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_colour_only_when_asked(records):
    report = analyze(records["failed"])
    assert "\x1b[" in render(report, color=True)
    assert "\x1b[" not in render(report, color=False)


def test_json_document(records):
    code, out, _ = health(str(records["failed"]), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["schema"] == "ddscope.health/1"
    assert document["verdict"] == "failed" and document["reasons"] == ["rows_dropped"]
    assert document["totals"]["drops_by_reason"] == {"client_error": 1}


@pytest.mark.parametrize(
    ("record", "fail_on", "expected"),
    [
        ("healthy", "degraded", 0),
        ("degraded", "degraded", 1),
        ("degraded", "stalled", 0),
        ("failed", "saturated", 1),
        ("failed", "failed", 1),
    ],
)
def test_fail_on_exits_1_at_that_level_or_worse(records, record, fail_on, expected):
    code, _, _ = health(str(records[record]), "--fail-on", fail_on)
    assert code == expected


def test_at_is_a_snapshot_of_a_running_run(records):
    code, out, _ = health(str(records["healthy"]), "--at", "0.2", "--json")
    document = json.loads(out)
    assert code == 0 and document["as_of_s"] == 0.2
    assert document["totals"]["state"] == "running" and document["totals"]["duration_s"] == 0.2


def test_stall_threshold_option(records):
    _, out, _ = health(str(records["healthy"]), "--json", "--stall-s", "0.01")
    document = json.loads(out)
    assert document["verdict"] == "stalled" and document["thresholds"]["stall_s"] == 0.01


def test_missing_file_is_one_line_and_exit_2(tmp_path):
    code, out, err = health(str(tmp_path / "nope.jsonl"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("RecordError:") and "nope.jsonl" in err


def test_corrupt_line_names_file_and_line_and_lenient_goes_on(records, tmp_path):
    lines = records["healthy"].read_text().splitlines()
    lines.insert(5, '{"kind": "attempt_started", "t_ns": "soon"}')
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    code, _, err = health(str(broken))
    assert code == 2 and f"{broken}:6:" in err and err.count("\n") == 1
    code, out, err = health(str(broken), "--lenient")
    assert code == 0 and "verdict: HEALTHY" in out
    assert "warning:" in err and ":6:" in err


def test_not_a_record_is_exit_2(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"_row": 0, "topic": "a"}\n')
    code, _, err = health(str(path))
    assert code == 2 and "not a ddscope run header" in err


def test_bad_option_values_are_usage_errors(records):
    assert health(str(records["healthy"]), "--fail-on", "bad")[0] == 2
    assert health(str(records["healthy"]), "--at", "-1")[0] == 2
