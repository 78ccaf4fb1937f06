"""Every bad input of issue 12's list: one line naming the file, line, field or option, and the
documented exit code (2 for usage, configuration and input)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from engine_records import EngineSpec, write_engine_record
from fault_support import mounted_tmpfs, pipeline_dict, write_pipeline

from ddscope.cli.console.progress import ProgressSink
from ddscope.cli.main import cli
from ddscope.events import RowDropped
from ddscope.mock import MockServer

SPEC = EngineSpec(rows=6, buffer_size=3)


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_line(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    error = lines[-1]  # warnings may come first; nothing else may
    assert all(line.startswith("warning: ") for line in lines[:-1]), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in error, error
    return error


@pytest.fixture
def record(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    write_engine_record(path, SPEC)
    return path


# -- pipeline values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "field", "value", "named"),
    [
        ("models", "timeout_s", float("inf"), "models[0].timeout_s"),
        ("run", "acquire_timeout_s", float("inf"), "run.acquire_timeout_s"),
        ("run", "num_records", True, "run.num_records"),
    ],
)
def test_bad_pipeline_values_are_one_line_exit_2(
    srv: MockServer, tmp_path: Path, where: str, field: str, value: object, named: str
) -> None:
    data = pipeline_dict(srv.base_url, 10)
    if where == "models":
        data["models"][0][field] = value
    else:
        data["run"][field] = value
    path = write_pipeline(tmp_path, data)
    result = _invoke("run", str(path), "--out", str(tmp_path / "out"))
    line = _one_line(result, 2, "ConfigError: ", named)
    assert str(path) in line
    assert not (tmp_path / "out").exists()


# -- output locations ---------------------------------------------------------------------------


def test_out_under_a_file_is_one_line_exit_2(srv: MockServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = write_pipeline(tmp_path, pipeline_dict(srv.base_url, 5))
    result = _invoke("run", str(path), "--out", str(blocker / "out"))
    _one_line(result, 2, "ConfigError: --out ", str(blocker / "out"), "Not a directory")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    why = "a read-only file system needs root to mount (and as root, modes do not bind)"
    with mounted_tmpfs(tmp_path / "ro", "ro,size=64k", why) as mount_point:
        yield mount_point


def test_out_on_a_read_only_file_system_is_one_line_exit_2(
    srv: MockServer, tmp_path: Path, read_only_dir: Path
) -> None:
    path = write_pipeline(tmp_path, pipeline_dict(srv.base_url, 5))
    result = _invoke("run", str(path), "--out", str(read_only_dir / "out"))
    _one_line(result, 2, "ConfigError: --out ", "Read-only file system")
    result = _invoke("run", str(path), "--out", str(read_only_dir))
    _one_line(result, 2, "ConfigError: --out ", "read-only file system")


def test_export_refuses_to_overwrite_its_record(record: Path) -> None:
    before = record.read_bytes()
    result = _invoke("export", str(record), "-o", str(record))
    _one_line(result, 2, "ConfigError: -o ", "is a record being read")
    assert record.read_bytes() == before


@pytest.mark.parametrize("which", [0, 1], ids=["the_report_s_record", "the_compared_record"])
def test_report_refuses_to_overwrite_a_record_it_reads(
    record: Path, tmp_path: Path, which: int
) -> None:
    other = tmp_path / "b" / "run.jsonl"
    other.parent.mkdir()
    other.write_bytes(record.read_bytes())
    records = [record] if which == 0 else [record, other]
    before = [path.read_bytes() for path in records]
    result = _invoke("report", *map(str, records), "-o", str(records[which]))
    _one_line(result, 2, "ConfigError: -o ", "is a record being read")
    assert [path.read_bytes() for path in records] == before


def test_report_to_a_path_under_a_file_is_one_line_exit_2(record: Path) -> None:
    result = _invoke("report", str(record), "-o", str(record / "deeper" / "report.html"))
    _one_line(result, 2, "ConfigError: -o ", "is not a directory")


def test_report_makes_the_directories_its_output_needs(record: Path, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "monday" / "run.html"
    result = _invoke("report", str(record), "--no-trace", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("fmt", ["--perfetto", "--chrome-json"])
def test_export_to_a_path_under_a_file_is_one_line_exit_2(record: Path, fmt: str) -> None:
    result = _invoke("export", str(record), fmt, "-o", str(record / "trace.out"))
    _one_line(result, 2, "ConfigError: -o ", "is not a directory")


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_health_at_must_be_a_finite_time(record: Path, value: str) -> None:
    result = _invoke("health", str(record), "--at", value)
    _one_line(result, 2, "--at")


def test_mock_server_port_out_of_range_is_a_usage_error() -> None:
    result = _invoke("mock-server", "--port", "99999")
    _one_line(result, 2, "--port", "99999")


def test_otlp_endpoints_that_are_not_urls_are_refused(srv: MockServer, tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, pipeline_dict(srv.base_url, 5))
    out = tmp_path / "out"
    result = _invoke("run", str(path), "--out", str(out), "--otlp-endpoint", "not-a-url")
    _one_line(result, 2, "ConfigError: --otlp-endpoint: 'not-a-url' is not a URL")
    assert not out.exists()
    record = tmp_path / "r.jsonl"
    write_engine_record(record, SPEC)
    result = _invoke("export", str(record), "--otlp", "not-a-url")
    _one_line(result, 2, "ConfigError: --otlp: 'not-a-url' is not a URL")


# -- records ----------------------------------------------------------------------------------


def test_health_names_a_line_without_a_field(record: Path) -> None:
    lines = record.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if '"row_group_started"' in line)
    lines[number - 1] = lines[number - 1].replace('"first_row"', '"first"')
    record.write_text("\n".join(lines) + "\n")
    for command in ("health", "export"):
        result = _invoke(command, str(record))
        _one_line(result, 2, f"RecordError: {record}:{number}: ", "'first_row'")


def test_an_unknown_schema_version_is_named(record: Path) -> None:
    text = record.read_text().replace('"ddscope.run/1"', '"ddscope.run/9"', 1)
    record.write_text(text)
    result = _invoke("health", str(record))
    _one_line(result, 2, f"RecordError: {record}:1: ", "'ddscope.run/9'")


def test_a_gzipped_record_is_read(record: Path, tmp_path: Path) -> None:
    packed = tmp_path / "run.jsonl.gz"
    packed.write_bytes(gzip.compress(record.read_bytes()))
    plain = _invoke("health", str(record), "--json")
    zipped = _invoke("health", str(packed), "--json")
    assert zipped.exit_code == 0, zipped.output
    assert zipped.stdout.replace(str(packed), "R") == plain.stdout.replace(str(record), "R")


# -- server text ------------------------------------------------------------------------------


def test_server_text_in_a_progress_line_is_escaped() -> None:
    stream = io.StringIO()
    sink = ProgressSink(stream, interactive=False)
    hostile = "upstream said \x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b"
    sink.handle(RowDropped(t_ns=1, row_group=0, row=3, reason="client_error", message=hostile))
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\\x1b]0;pwned" in text and "row 3 dropped" in text
