"""Bad input to ``--resume`` and ``ddtrace merge``: one line naming the file (and line or
field), exit 2, and no file on disk changed — never a traceback, never an inconsistent job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_support import (
    ddtrace,
    line_count,
    pipeline_dict,
    run_ddtrace,
    wait_until,
    write_pipeline,
)

from ddscope.engine.admission.shared.local_redis import LocalRedis, RedisServerMissing
from ddscope.mock import MockBehavior, MockServer

ROWS = 200


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` -> its bytes (None for a directory); not the run lock,
    which holds the pid of the last process that claimed the directory."""
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
        if p.name != ".ddtrace.lock"
    }


def _refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    for needle in needles:
        assert needle in line, line
    return line


# -- --resume ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(server: MockServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pipeline, out) of a run stopped with SIGTERM part-way: copied by each test."""
    server.reset(MockBehavior(latency_ms=20))
    directory = tmp_path_factory.mktemp("stopped")
    pipeline = write_pipeline(directory, pipeline_dict(server.base_url, ROWS))
    out = directory / "out"
    proc = ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    wait_until(lambda: line_count(out / "data.jsonl") >= 30, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1
    return pipeline, out


@pytest.fixture
def resumable(
    stopped_run: tuple[Path, Path], srv: MockServer, tmp_path: Path
) -> Iterator[tuple[Path, Path]]:
    pipeline, out = stopped_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    yield pipeline, copy


def _resume(pipeline: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet", "--resume")


def _first_row_line(out: Path) -> bytes:
    return (out / "data.jsonl").read_bytes().splitlines(keepends=True)[0]


@pytest.mark.parametrize(
    ("journal", "needles"),
    [
        (b"\xff\n", ["data.pending.jsonl:1: not a row line"]),
        (b'{"_row": "abc"}\n', ["data.pending.jsonl:1: _row 'abc' is not a row of this run"]),
        (b'{"_row": 199, "topic": "a"}\n', ["data.pending.jsonl:1: row 199 has columns topic"]),
        (b'{"_row": 5000}\n', ["data.pending.jsonl:1: _row 5000 is not a row of this run"]),
    ],
)
def test_a_bad_journal_line_is_refused_naming_it(
    resumable: tuple[Path, Path], journal: bytes, needles: list[str]
) -> None:
    pipeline, out = resumable
    (out / "data.pending.jsonl").write_bytes(journal + _first_row_line(out))
    before = _snapshot(out)
    _refused(_resume(pipeline, out), "ConfigError: --resume:", *needles)
    assert _snapshot(out) == before


def test_a_torn_last_journal_line_is_forgiven(resumable: tuple[Path, Path]) -> None:
    """What a kill leaves (a last line without its newline) does not stop the resume."""
    pipeline, out = resumable
    with (out / "data.pending.jsonl").open("ab") as journal:
        journal.write(b'{"_row": 19')
    done = _resume(pipeline, out)
    assert done.returncode == 0, done.stderr
    assert f"{ROWS}/{ROWS} rows" in done.stdout


def test_a_bad_line_in_data_is_refused_naming_it(resumable: tuple[Path, Path]) -> None:
    pipeline, out = resumable
    data = out / "data.jsonl"
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(b"".join([lines[0], b'{"_row": "abc"}\n', *lines[1:]]))
    before = _snapshot(out)
    _refused(_resume(pipeline, out), f"{data}:2: _row 'abc' is not a row of this run")
    assert _snapshot(out) == before


@pytest.mark.parametrize("name", ["data.jsonl", "data.pending.jsonl"])
def test_a_directory_in_place_of_a_file_is_refused_naming_it(
    resumable: tuple[Path, Path], name: str
) -> None:
    pipeline, out = resumable
    target = out / name
    if target.exists():
        target.unlink()
    target.mkdir()
    before = _snapshot(out)
    _refused(_resume(pipeline, out), f"--resume: {target} is not a regular file")
    assert _snapshot(out) == before


def test_a_segment_past_a_gap_is_refused_before_the_resume_joins_it(
    resumable: tuple[Path, Path],
) -> None:
    """run.2.jsonl with no run.1.jsonl: the resume would write run.1.jsonl and every command
    would then read run.2.jsonl as part of the run."""
    pipeline, out = resumable
    (out / "run.2.jsonl").mkdir()
    before = _snapshot(out)
    _refused(_resume(pipeline, out), f"{out / 'run.2.jsonl'} follows no segment of this run")
    assert _snapshot(out) == before


def test_an_empty_last_segment_is_skipped_and_the_run_stays_readable(
    resumable: tuple[Path, Path],
) -> None:
    """A resume killed before it wrote its header leaves an empty run.1.jsonl: the run is
    still read (without it), and the next resume writes that segment."""
    pipeline, out = resumable
    (out / "run.1.jsonl").write_bytes(b"")
    health = run_ddtrace("health", str(out / "run.jsonl"), "--json")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["totals"]["rows_completed"] > 0
    (warning,) = json.loads(health.stdout)["record"]["warnings"]
    assert warning.endswith(
        "run.1.jsonl: empty record segment skipped (a resume stopped before its header?)"
    )
    done = _resume(pipeline, out)
    assert done.returncode == 0, done.stderr
    assert (out / "run.1.jsonl").stat().st_size > 0
    health = run_ddtrace("health", str(out / "run.jsonl"), "--json")
    assert json.loads(health.stdout)["totals"]["rows_completed"] == ROWS


def test_a_directory_named_like_a_segment_is_named_when_a_new_run_starts(
    srv: MockServer, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path, pipeline_dict(srv.base_url, 10))
    out = tmp_path / "out"
    (out / "run.1.jsonl").mkdir(parents=True)
    earlier = b'{"kind": "header"}\n'  # an earlier run's record: refused runs leave it be
    (out / "run.jsonl").write_bytes(earlier)
    done = run_ddtrace("run", str(pipeline), "--out", str(out), "--quiet")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{out / 'run.1.jsonl'} is a directory" in done.stderr
    assert (out / "run.jsonl").read_bytes() == earlier


# -- ddtrace merge ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Two shards of a 40-row job run separately (as on two hosts), and one ordinary run of
    the same pipeline: (hosts dir with host0/host1, the ordinary run's out dir)."""
    try:
        redis = LocalRedis().start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    directory = tmp_path_factory.mktemp("shards")
    try:
        with MockServer(MockBehavior(latency_ms=2)) as server:
            pipeline = write_pipeline(directory, pipeline_dict(server.base_url, 40))
            env = {**os.environ, "DDSCOPE_ADMISSION": redis.url}
            for i in range(2):
                host = str(directory / f"host{i}")
                done = run_ddtrace(
                    "run", str(pipeline), "--shard", f"{i}/2", "-o", host, "-q", env=env
                )
                assert done.returncode == 0, done.stderr
            solo = run_ddtrace("run", str(pipeline), "-o", str(directory / "solo"), "-q")
            assert solo.returncode == 0, solo.stderr
    finally:
        redis.stop()
    yield directory, directory / "solo"


@pytest.fixture
def job(shard_hosts: tuple[Path, Path], tmp_path: Path) -> Path:
    hosts, _ = shard_hosts
    for i in range(2):
        shutil.copytree(hosts / f"host{i}", tmp_path / "job" / "workers" / f"shard-{i}-of-2")
    return tmp_path / "job"


def _merge(job: Path) -> subprocess.CompletedProcess[str]:
    return run_ddtrace("merge", str(job))


def test_the_job_merges_as_before(job: Path) -> None:
    done = _merge(job)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line)["_row"] for line in (job / "data.jsonl").read_text().splitlines()]
    assert rows == list(range(40))


def test_a_shard_without_its_data_is_refused(job: Path) -> None:
    data = job / "workers" / "shard-1-of-2" / "data.jsonl"
    data.unlink()
    before = _snapshot(job)
    _refused(_merge(job), "shard 1/2:", f"{data} is missing")
    assert _snapshot(job) == before


def test_a_shard_with_fewer_rows_than_its_record_says_is_refused(job: Path) -> None:
    data = job / "workers" / "shard-1-of-2" / "data.jsonl"
    data.write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[:-3]))
    before = _snapshot(job)
    _refused(_merge(job), "shard 1/2:", f"{data} holds")
    assert _snapshot(job) == before


@pytest.mark.parametrize("what", ["run.jsonl", "data.jsonl"])
def test_another_run_s_part_is_refused_naming_it(
    job: Path, shard_hosts: tuple[Path, Path], what: str
) -> None:
    """An ordinary run of the same pipeline copied in as shard 1: its record's row groups (and
    rows) are not shard 1's."""
    _, solo = shard_hosts
    target = job / "workers" / "shard-1-of-2" / what
    shutil.copyfile(solo / what, target)
    before = _snapshot(job)
    _refused(_merge(job), "shard 1/2:", str(target), "not")
    assert _snapshot(job) == before


def test_another_shard_s_record_is_refused(job: Path) -> None:
    workers = job / "workers"
    shutil.copyfile(workers / "shard-0-of-2" / "run.jsonl", workers / "shard-1-of-2" / "run.jsonl")
    before = _snapshot(job)
    _refused(_merge(job), "shard 1/2:", "not this shard's record")
    assert _snapshot(job) == before


def test_a_cut_off_last_data_line_is_left_out_with_a_warning(job: Path) -> None:
    with (job / "workers" / "shard-0-of-2" / "data.jsonl").open("ab") as data:
        data.write(b'{"_row": 3')
    done = _merge(job)
    assert done.returncode == 0, done.stderr
    assert "cut-off last line left out" in done.stderr
    rows = [json.loads(line)["_row"] for line in (job / "data.jsonl").read_text().splitlines()]
    assert rows == list(range(40))
