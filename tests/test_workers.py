"""``ddtrace run --workers N --admission redis://…``: real worker processes, a real Redis, the
real mock endpoint on 127.0.0.1 — the issue's acceptance tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ddscope.engine.admission.shared.local_redis import LocalRedis, RedisServerMissing
from ddscope.mock import MockBehavior, MockServer
from ddscope.record.jsonl import RunReader

PIPELINE = """\
name: shared-test
providers:
  - {{name: mock, endpoint: "{endpoint}"}}
models:
  - {{alias: writer, provider: mock, model: mock-model, max_parallel_requests: 8, timeout_s: 10}}
columns:
  - {{name: topic, type: sampler, sampler: category, values: [a, b, c]}}
  - {{name: summary, type: llm_text, model: writer, prompt: "Summarise {{{{ topic }}}}."}}
  - {{name: label, type: llm_text, model: writer, prompt: "Label {{{{ summary }}}}."}}
run:
  num_records: {records}
  buffer_size: 10
"""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    try:
        server = LocalRedis().start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


class Arrivals:
    """Records when each request reached the mock, and what it was answered (instrumenting the
    real server's decision point; its answers are unchanged)."""

    def __init__(self, server: MockServer) -> None:
        self.times: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        state = server._state
        original = state.arrive

        def arrive(*args: Any, **kwargs: Any) -> Any:
            decision = original(*args, **kwargs)
            with self._lock:
                self.times.append((time.monotonic(), decision.outcome))
            return decision

        state.arrive = arrive  # type: ignore[method-assign]


def pipeline_file(tmp_path: Path, server: MockServer, records: int) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.format(endpoint=server.base_url, records=records))
    return path


def ddtrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "ddscope.cli.main", *args]


def run_job(
    tmp_path: Path,
    server: MockServer,
    url: str,
    *,
    records: int,
    workers: int = 3,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    pipeline = pipeline_file(tmp_path, server, records)
    command = ddtrace("run", str(pipeline), "--workers", str(workers), "-o", str(tmp_path / "out"))
    return subprocess.run(
        [*command, "--admission", url, *(extra or [])],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def start_job(pipeline: Path, out: Path, workers: int, url: str) -> subprocess.Popen[str]:
    """``ddtrace run --workers N --admission URL`` started quietly, for a test to act on mid-run."""
    command = ddtrace("run", str(pipeline), "--workers", str(workers), "-o", str(out), "-q")
    return subprocess.Popen(
        [*command, "--admission", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(data: Path) -> None:
    """Until a shard's ``data.jsonl`` holds a row (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (data.exists() and data.stat().st_size > 0):
        time.sleep(0.02)


def data_rows(out: Path) -> list[int]:
    with (out / "data.jsonl").open("rb") as handle:
        return [orjson.loads(line)["_row"] for line in handle]


def health_json(record: Path) -> dict[str, Any]:
    done = subprocess.run(
        ddtrace("health", str(record), "--json"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_three_workers_share_one_limit_and_make_one_run(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    with MockServer(MockBehavior(latency_ms=30)) as server:
        done = run_job(tmp_path, server, redis_server.url, records=150)
        stats = server.stats()
        merged = (tmp_path / "out" / "data.jsonl").read_bytes()
        again = run_job(tmp_path, server, redis_server.url, records=150, extra=["--resume"])
        assert server.stats().requests == stats.requests  # every shard had completed
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "data.jsonl").read_bytes() == merged
    assert done.returncode == 0, done.stderr + done.stdout
    assert 1 < stats.max_in_flight <= 8  # 3 workers, one limit of 8 between them
    out = tmp_path / "out"
    assert data_rows(out) == list(range(150))  # every row exactly once, in row order
    parts = sorted((out / "workers").glob("shard-*-of-3"))
    assert len(parts) == 3 and all((p / "run.jsonl").exists() for p in parts)
    report = health_json(out / "run.jsonl")
    assert report["totals"]["rows_completed"] == 150
    assert report["totals"]["outcome"] == "complete"
    assert report["totals"]["row_groups_finished"] == 15
    assert report["verdict"] in ("healthy", "degraded")  # waits for a slot are not a failure
    events = list(RunReader(out / "run.jsonl"))
    assert [e.kind for e in events].count("run_started") == 1
    attempts = [e for e in events if e.kind == "attempt_started"]
    assert len(attempts) == stats.requests  # every worker's attempts, none twice
    assert len({(e.request_id, e.attempt) for e in attempts}) == len(attempts)
    assert "Job of 3 workers complete" in done.stdout
    check_in_trace_processor(out / "run.jsonl", ok_attempts=stats.ok)


TRACE_PROCESSOR = Path(__file__).resolve().parents[2] / "shared/tools/trace_processor_shell"


def check_in_trace_processor(record: Path, *, ok_attempts: int) -> None:
    """The merged run exported for Perfetto loads in Perfetto's own trace processor without
    errors or data loss, with one ``chat ok`` slice per successful attempt of every worker."""
    if not TRACE_PROCESSOR.exists():
        return  # ../shared absent: the other checks of the test still ran
    trace = record.with_suffix(".pftrace")
    exported = subprocess.run(
        ddtrace("export", str(record), "--perfetto", "-o", str(trace)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    sql = (
        "select (select count(*) from stats where value > 0 and severity in "
        "('error', 'data_loss')) as problems, "
        "(select count(*) from slice where name = 'chat ok') as ok"
    )
    done = subprocess.run(
        [str(TRACE_PROCESSOR), "query", str(trace), sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"0,{ok_attempts}"


def test_a_429_seen_by_one_worker_holds_every_worker_for_its_retry_after(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    behavior = MockBehavior(latency_ms=30, rate_limit_k=1, rate_limit_n=100, retry_after="2")
    with MockServer(behavior) as server:
        arrivals = Arrivals(server)
        done = run_job(tmp_path, server, redis_server.url, records=90)
    assert done.returncode == 0, done.stderr + done.stdout
    refused = [t for t, outcome in arrivals.times if outcome == "rate_limited_pattern"]
    assert len(refused) >= 2  # the first request and the 101st
    for t429 in refused:
        # Requests admitted before the cooldown reached Redis may still land just after the
        # 429: on a loaded two-CPU machine a worker process can be off the CPU for ~100 ms
        # between its admission and its send (seen once in CI: two requests 0.11 s after the
        # job's first 429). After that grace, nobody sends until the 2 s are over. How fast
        # the cooldown itself reaches another worker is test_shared_admission's (< 50 ms).
        early = [t - t429 for t, _ in arrivals.times if t429 + 0.3 < t < t429 + 1.95]
        assert not early, f"requests {early[:3]} s after a 429 with Retry-After 2"
        later = [t for t, _ in arrivals.times if t >= t429 + 1.95]
        assert later or t429 == refused[-1]
    assert data_rows(tmp_path / "out") == list(range(90))
    cooled = {
        p.name
        for p in (tmp_path / "out" / "workers").iterdir()
        if any(e.kind == "cooldown_started" for e in RunReader(p / "run.jsonl"))
    }
    assert len(cooled) == 3  # each worker's record shows the cooldown, whoever saw the 429


def child_pids(parent: int) -> dict[int, str]:
    """pid -> command line of ``parent``'s children (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_worker_killed_mid_run_is_taken_over_and_every_row_is_made_once(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    with MockServer(MockBehavior(latency_ms=40)) as server:
        pipeline = pipeline_file(tmp_path, server, 240)
        out = tmp_path / "out"
        with start_job(pipeline, out, 3, redis_server.url) as job:
            wait_for_rows(out / "workers" / "shard-1-of-3" / "data.jsonl")
            victims = [p for p, cmd in child_pids(job.pid).items() if "--shard 1/3" in cmd]
            assert victims, "the worker of shard 1/3 was not found running"
            os.kill(victims[0], signal.SIGKILL)
            stdout, stderr = job.communicate(timeout=180)
    assert job.returncode == 0, stderr + stdout
    assert "shard 1/3: worker killed (SIGKILL); taken over with --resume" in stderr
    assert data_rows(out) == list(range(240))
    assert (out / "workers" / "shard-1-of-3" / "run.1.jsonl").exists()  # the takeover's segment
    assert health_json(out / "run.jsonl")["totals"]["rows_completed"] == 240


def test_redis_unreachable_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = "redis://:topsecret@127.0.0.1:1/0"  # nothing listens on port 1
    with MockServer() as server:
        pipeline = pipeline_file(tmp_path, server, 10)
        out = tmp_path / "out"
        done = subprocess.run(
            [*ddtrace("run", str(pipeline), "--workers", "2", "-o", str(out)), "--admission", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in lines[0]
    assert "topsecret" not in done.stderr + done.stdout
    assert not (out / "run.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--workers needs --admission"),
        (["--shard", "0/2"], "--shard needs --admission"),
        (["--workers", "2", "--shard", "0/2", "--admission", "redis://h/0"], "choose one"),
        (["--shard", "2/2", "--admission", "redis://127.0.0.1:1/0"], "--shard"),
    ],
)
def test_bad_sharding_options_are_usage_errors(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    with MockServer() as server:
        pipeline = pipeline_file(tmp_path, server, 10)
        done = subprocess.run(
            ddtrace("run", str(pipeline), "-o", str(tmp_path / "out"), *extra),
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "DDSCOPE_ADMISSION"},
        )
    assert done.returncode == 2
    assert message in done.stderr


def test_a_password_in_the_url_is_never_printed_or_recorded(tmp_path: Path) -> None:
    secret = "pw-0f5e-do-not-leak"
    try:
        redis = LocalRedis(password=secret).start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    try:
        with MockServer(MockBehavior(latency_ms=5)) as server:
            done = run_job(tmp_path, server, redis.url, records=30, workers=2)
    finally:
        redis.stop()
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_redis_lost_mid_run_stops_the_workers_with_a_stated_reason(tmp_path: Path) -> None:
    try:
        redis = LocalRedis().start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    with MockServer(MockBehavior(latency_ms=40)) as server:
        pipeline = pipeline_file(tmp_path, server, 300)
        out = tmp_path / "out"
        with start_job(pipeline, out, 2, redis.url) as job:
            wait_for_rows(out / "workers" / "shard-0-of-2" / "data.jsonl")
            redis.stop()
            stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 1, stderr + stdout
    finished = [e for e in RunReader(out / "run.jsonl") if e.kind == "run_finished"]
    assert len(finished) == 1
    assert finished[0].reason == "admission_lost"
    assert "lost the shared admission state at redis://127.0.0.1:" in stdout
    kept = data_rows(out)
    assert kept and kept == sorted(set(kept))  # what was done is kept, once each


def test_shards_run_separately_then_merge_into_one_run(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    """Two "hosts" each run one shard into their own directory; ``ddtrace merge`` joins them."""
    with MockServer(MockBehavior(latency_ms=20)) as server:
        pipeline = pipeline_file(tmp_path, server, 50)
        env = {**os.environ, "DDSCOPE_ADMISSION": redis_server.url}
        hosts = [
            subprocess.Popen(
                ddtrace(
                    "run",
                    str(pipeline),
                    "--shard",
                    f"{i}/2",
                    "-o",
                    str(tmp_path / f"host{i}"),
                    "-q",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(2)
        ]
        outputs = [host.communicate(timeout=120) for host in hosts]
        peak = server.stats().max_in_flight
    assert [h.returncode for h in hosts] == [0, 0], outputs
    assert "20/20 rows" in outputs[0][0] and "30/30 rows" in outputs[1][0]  # 5 groups: 2 + 3
    assert peak <= 8
    job = tmp_path / "job"
    for i in range(2):
        shutil.copytree(tmp_path / f"host{i}", job / "workers" / f"shard-{i}-of-2")
    merged = subprocess.run(ddtrace("merge", str(job)), capture_output=True, text=True, timeout=60)
    assert merged.returncode == 0, merged.stderr
    assert data_rows(job) == list(range(50))
    assert health_json(job / "run.jsonl")["totals"]["rows_completed"] == 50
    again = subprocess.run(ddtrace("merge", str(job)), capture_output=True, text=True, timeout=60)
    assert again.stdout == merged.stdout  # merging again gives the same run


@pytest.mark.parametrize(("extra", "mode"), [(["--record-text"], 0o600), ([], 0o644)])
def test_the_job_s_record_is_private_when_its_parts_hold_text(
    tmp_path: Path, redis_server: LocalRedis, extra: list[str], mode: int
) -> None:
    """With ``--record-text`` each worker's record is 0600, and so is the merged one (and
    again after ``ddtrace merge``): it holds the same prompts and completions."""
    with MockServer(MockBehavior(latency_ms=1)) as server:
        done = run_job(tmp_path, server, redis_server.url, records=20, workers=2, extra=extra)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    parts = sorted((out / "workers").glob("*/run.jsonl"))
    assert len(parts) == 2
    assert [stat.S_IMODE(p.stat().st_mode) for p in [out / "run.jsonl", *parts]] == [mode] * 3
    merged = subprocess.run(ddtrace("merge", str(out)), capture_output=True, text=True, timeout=60)
    assert merged.returncode == 0, merged.stderr
    assert stat.S_IMODE((out / "run.jsonl").stat().st_mode) == mode


def test_merge_refuses_a_job_with_a_missing_shard(tmp_path: Path) -> None:
    (tmp_path / "workers" / "shard-0-of-2").mkdir(parents=True)
    (tmp_path / "workers" / "shard-1-of-2").mkdir(parents=True)
    done = subprocess.run(
        ddtrace("merge", str(tmp_path)), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "shard 0/2: no record at" in done.stderr


def test_sigterm_to_the_coordinator_stops_every_worker_and_keeps_one_run(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    with MockServer(MockBehavior(latency_ms=40)) as server:
        pipeline = pipeline_file(tmp_path, server, 600)
        out = tmp_path / "out"
        with start_job(pipeline, out, 2, redis_server.url) as job:
            wait_for_rows(out / "workers" / "shard-0-of-2" / "data.jsonl")
            job.send_signal(signal.SIGTERM)
            stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 1, stderr + stdout
    finished = [e for e in RunReader(out / "run.jsonl") if e.kind == "run_finished"]
    assert [e.outcome for e in finished] == ["cancelled"]
    kept = data_rows(out)
    assert 0 < len(kept) < 600 and kept == sorted(set(kept))


def test_two_separate_jobs_with_admission_share_the_providers_limit(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    """``--admission`` without ``--workers``/``--shard``: whole runs that still act as one client
    toward the provider (two teams, one quota)."""
    with MockServer(MockBehavior(latency_ms=30)) as server:
        pipeline = pipeline_file(tmp_path, server, 60)
        jobs = [
            subprocess.Popen(
                [
                    *ddtrace("run", str(pipeline), "-o", str(tmp_path / f"job{i}"), "-q"),
                    "--admission",
                    redis_server.url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outputs = [job.communicate(timeout=120) for job in jobs]
        stats = server.stats()
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert stats.requests == 2 * 120
    assert stats.max_in_flight <= 8
    for i in range(2):
        assert data_rows(tmp_path / f"job{i}") == list(range(60))
