from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from ddscope import __version__
from ddscope.cli.main import cli
from ddscope.engine.rows.output import read_rows
from ddscope.mock import MockBehavior, MockServer
from ddscope.record.jsonl import RunReader

CHAIN3_COLUMNS = ["topic", "summary", "analysis", "rewrite"]


def _pipeline(endpoint: str, *, api_key_env: str | None = None, **run: Any) -> dict[str, Any]:
    provider: dict[str, Any] = {"name": "mock", "endpoint": endpoint}
    if api_key_env:
        provider["api_key_env"] = api_key_env
    return {
        "name": "t",
        "providers": [provider],
        "models": [
            {
                "alias": "m",
                "provider": "mock",
                "model": "mock-model",
                "max_parallel_requests": 4,
                "timeout_s": 5,
            }
        ],
        "columns": [
            {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
            {"name": "summary", "type": "llm_text", "model": "m", "prompt": "On {{ topic }}"},
            {"name": "label", "type": "expression", "expr": "{{ topic }}-{{ summary }}"},
        ],
        "run": {"num_records": 6, "buffer_size": 3, **run},
    }


def _write(tmp_path: Path, data: dict[str, Any], name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    data = _pipeline("http://127.0.0.1:9/v1")
    data["columns"][1]["prompt"] = "On {{ topik }}"
    path = _write(tmp_path, data)
    result = _invoke("run", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.startswith("ConfigError: ")
    assert "columns[1].prompt: unknown column 'topik'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cycle_and_missing_file_exit_2(tmp_path: Path) -> None:
    data = _pipeline("http://127.0.0.1:9/v1")
    data["columns"][1]["prompt"] = "On {{ label }}"
    result = _invoke("run", str(_write(tmp_path, data)))
    assert result.exit_code == 2
    assert "cycle between columns" in result.stderr and "label" in result.stderr
    result = _invoke("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "missing.yaml: cannot read" in result.stderr


def test_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _pipeline("http://127.0.0.1:9/v1"))
    result = _invoke("run", str(path), "--records", "0")
    assert result.exit_code == 2


def test_demo_leaves_a_readable_record_and_every_row(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _invoke("demo", "--out", str(out), "--records", "12")
    assert result.exit_code == 0, result.output
    reader = RunReader(out / "run.jsonl")
    assert reader.header.num_records == 12
    finished = [e for e in reader if e.kind == "run_finished"]
    assert [(e.outcome, e.rows_completed) for e in finished] == [("complete", 12)]
    rows = read_rows(out / "data.jsonl")
    assert [r["_row"] for r in rows] == list(range(12))
    assert all(list(r) == ["_row", *CHAIN3_COLUMNS] for r in rows)
    assert all(isinstance(r[c], str) and r[c] for r in rows for c in CHAIN3_COLUMNS)
    assert "Run complete" in result.stdout
    assert f"ddtrace health {out / 'run.jsonl'}" in result.stdout
    assert "--perfetto" in result.stdout


def test_run_sends_the_key_from_the_env_var_and_never_records_it(tmp_path: Path) -> None:
    secret = "sk-test-5ecret-DO-NOT-LEAK"
    with MockServer(MockBehavior(latency_ms=2, api_key=secret)) as server:
        data = _pipeline(server.base_url, api_key_env="DDSCOPE_TEST_API_KEY")
        path = _write(tmp_path, data)
        out = tmp_path / "out"
        result = _invoke(
            "run",
            str(path),
            "--out",
            str(out),
            "--record-text",
            env={"DDSCOPE_TEST_API_KEY": secret},
        )
    # The mock answers 401 without the right key, so a complete run proves it was sent.
    assert result.exit_code == 0, result.output
    assert len(read_rows(out / "data.jsonl")) == 6
    for text in (result.output, (out / "run.jsonl").read_text(), (out / "data.jsonl").read_text()):
        assert secret not in text
    assert "DDSCOPE_TEST_API_KEY" in (out / "run.jsonl").read_text()  # the name is recorded


def test_overrides_quiet_and_default_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with MockServer(MockBehavior(latency_ms=1)) as server:
        path = _write(tmp_path, _pipeline(server.base_url))
        result = _invoke("run", str(path), "--records", "5", "--buffer-size", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "5/5 rows written" in result.stdout
    header = RunReader(tmp_path / "ddscope-out" / "run.jsonl").header
    assert (header.num_records, header.buffer_size) == (5, 2)
    rows = read_rows(tmp_path / "ddscope-out" / "data.jsonl")
    assert [r["label"] == f"{r['topic']}-{r['summary']}" for r in rows] == [True] * 5


def test_a_run_that_shuts_down_exits_1_with_the_reason(tmp_path: Path) -> None:
    fast_breaker = {
        "breaker_window_s": 0.5,
        "breaker_min_attempts": 2,
        "min_cooldown_s": 0.05,
        "default_cooldown_s": 0.1,
        "max_cooldown_s": 0.2,
        "health_interval_s": 0.5,
    }
    with MockServer(MockBehavior(rate_limit_k=10, rate_limit_n=10, retry_after="0")) as server:
        path = _write(tmp_path, _pipeline(server.base_url, **fast_breaker))
        out = tmp_path / "out"
        started = time.monotonic()
        result = _invoke("run", str(path), "--out", str(out))
    assert time.monotonic() - started < 30
    assert result.exit_code == 1, result.output
    assert "BREAKER OPEN on mock/mock-model" in result.stderr
    assert "Run shut down (endpoint_saturated)" in result.stdout
    finished = [e for e in RunReader(out / "run.jsonl") if e.kind == "run_finished"]
    assert finished[0].outcome == "shutdown"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_exits_1_with_a_closed_record_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "ddscope.cli.main",
        "demo",
        "--scenario",
        "saturated",
        "--out",
        str(out),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as proc:
        deadline = time.monotonic() + 20
        record = out / "run.jsonl"
        while time.monotonic() < deadline and not (
            record.exists() and record.read_text().count("\n") >= 3
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stderr
    assert "Run cancelled" in stdout or "interrupted" in stdout
    assert "Traceback" not in stderr
    events = list(RunReader(record))
    assert events[-1].kind == "run_finished" and events[-1].outcome == "cancelled"
    assert (out / "data.jsonl").exists()


def test_prometheus_linger_keeps_final_metrics_up_after_the_run(tmp_path: Path) -> None:
    """--prometheus-linger: /metrics still answers, with the run's final counts, after it ends."""
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "ddscope.cli.main",
        "demo",
        "--records",
        "6",
        "--quiet",
        "--out",
        str(out),
        "--prometheus-port",
        str(port),
        "--prometheus-linger",
        "20",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            assert proc.stderr is not None
            line = ""
            while time.monotonic() < deadline and "serving final metrics" not in line:
                line = proc.stderr.readline()
                assert line or proc.poll() is None, "the demo ended without lingering"
            assert "serving final metrics" in line
            assert (out / "run.jsonl").read_text().count('"run_finished"') == 1
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            completed = [
                ln for ln in body.splitlines() if ln.startswith("ddscope_rows_completed_total")
            ]
            assert completed and float(completed[0].rsplit(" ", 1)[1]) == 6
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=20)
