"""A test that tries to leak (issue 19): planted secrets and text must not leave the process
except where the user opted in.

It plants a unique API key, prompt and system-prompt markers, an OTLP header token, an OTLP
endpoint password and (for shared admission) a Redis password; runs the real CLI (``ddtrace
run`` in a subprocess) against the real mock endpoint on 127.0.0.1 misbehaving as content
filters do (500s whose message quotes the prompt, with a terminal escape, in bodies larger than
the client reads); ships OTLP/HTTP to a raw receiver that keeps every body; then exports
Perfetto and Chrome JSON, runs health (text and JSON) and ``ddtrace report`` when the command
exists; and scans every byte of every output (the out directory whole, workers' parts and logs
included).

Completion markers are the mock's reply digests (``#`` + 8 hex, unique per request), read back
from the dataset. The chained column's prompt carries the previous completion, so its quoted
errors test masking of earlier columns' values. Markers sit early in the prompts, so an unmasked
quote would land inside the 200 characters an event keeps (checked by disabling the masking:
this test then fails). The first column's endpoint sends its quote whole (parsed JSON, a raw
terminal escape); the second's pads every error to 100 KB, past what the client reads.

Allowed: with text recording off, only ``data.jsonl`` may hold prompt or completion markers;
with it on (and the GenAI content opt-in for spans), also ``run.jsonl`` and the OTLP bodies.
Secrets: nowhere (the OTLP token and password may only reach the receiver's request headers).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from otlp_receiver import HttpReceiver

from ddscope.engine.admission.shared.local_redis import LocalRedis, RedisServerMissing
from ddscope.mock import MockBehavior, MockServerProcess

RUN_TIMEOUT_S = 180
_UID = uuid.uuid4().hex[:12]
API_KEY = f"sk-leaktest-{_UID}-key"
PROMPT_MARK = f"PROMPTMARK{_UID}"
SYSTEM_MARK = f"SYSTEMMARK{_UID}"
OTLP_TOKEN = f"otlptoken{_UID}"
OTLP_PASSWORD = f"otlppass{_UID}"
REDIS_PASSWORD = f"redispass{_UID}"
SECRETS = (API_KEY, OTLP_TOKEN, OTLP_PASSWORD, REDIS_PASSWORD)
TEXT_MARKS = (PROMPT_MARK, SYSTEM_MARK)
# The mock's completion echoes the prompt's first twelve words: the marker and ten short ones.
PIPELINE = """
name: leak-test
providers:
  - {{name: quoting, endpoint: "{endpoint}", api_key_env: LEAK_TEST_API_KEY}}
  - {{name: oversized, endpoint: "{endpoint2}", api_key_env: LEAK_TEST_API_KEY}}
models:
  - {{alias: writer, provider: quoting, model: mock-model, max_parallel_requests: 4}}
  - {{alias: critic, provider: oversized, model: mock-model, max_parallel_requests: 4}}
columns:
  - {{name: topic, type: sampler, sampler: category, values: [tides, lanterns, ferns]}}
  - {{name: uid, type: sampler, sampler: uuid}}
  - name: summary
    type: llm_text
    model: writer
    system_prompt: "{system_mark} You answer plainly."
    prompt: "{mark} a b c d e f g h i j {{{{ topic }}}} {{{{ uid }}}}"
  - name: analysis
    type: llm_text
    model: critic
    prompt: "{{{{ summary }}}} Analyse this summary carefully."
run: {{num_records: 24, buffer_size: 8, salvage_rounds: 3, seed: 3}}
"""


def _ddtrace(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes, bytes]:
    proc = subprocess.run(
        [sys.executable, "-m", "ddscope.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def mock_endpoints() -> Iterator[tuple[MockServerProcess, MockServerProcess]]:
    # A 500 quoting the whole prompt for every fifth request; the second endpoint's error
    # bodies are larger than the 64 KiB the client reads of one.
    quoting = MockBehavior(api_key=API_KEY, latency_ms=5, quote_prompt_every=5)
    oversized = quoting.replace(error_body_bytes=100_000)
    with MockServerProcess(quoting) as first, MockServerProcess(oversized) as second:
        yield first, second


def _write_pipeline(path: Path, endpoints: tuple[MockServerProcess, MockServerProcess]) -> Path:
    path.write_text(
        PIPELINE.format(
            endpoint=endpoints[0].base_url,
            endpoint2=endpoints[1].base_url,
            mark=PROMPT_MARK,
            system_mark=SYSTEM_MARK,
        )
    )
    return path


def _outputs(
    tmp_path: Path,
    endpoints: tuple[MockServerProcess, MockServerProcess],
    receiver: HttpReceiver,
    record_text: bool,
    admission: str | None = None,
) -> dict[str, bytes]:
    """Runs everything a user would and returns every output by name."""
    pipeline = _write_pipeline(tmp_path / "pipeline.yaml", endpoints)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "LEAK_TEST_API_KEY": API_KEY,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-leak-token={OTLP_TOKEN}",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true" if record_text else "false",
    }
    otlp = f"http://leaker:{OTLP_PASSWORD}@127.0.0.1:{receiver.port}"
    run_args = ["run", str(pipeline), "-o", str(out), "--otlp-endpoint", otlp]
    run_args += ["--otlp-protocol", "http/protobuf", *(["--record-text"] if record_text else [])]
    if admission is not None:  # two shard workers sharing request admission through Redis
        run_args += ["--workers", "2", "--admission", admission]
    record = str(out / "run.jsonl")
    commands = {
        "run": run_args,
        "export-perfetto": ["export", record, "--perfetto"],
        "export-chrome": ["export", record, "--chrome-json"],
        "health-text": ["health", record],
        "health-json": ["health", record, "--json"],
    }
    if _has_report(env, tmp_path):
        commands["report"] = ["report", record]
    outputs: dict[str, bytes] = {}
    for name, args in commands.items():
        code, stdout, stderr = _ddtrace(args, env, tmp_path)
        assert name != "run" or code == 0, stderr.decode(errors="replace")
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = stdout, stderr
    for path in sorted(out.rglob("*")):
        if path.is_file():
            outputs[str(path.relative_to(out))] = path.read_bytes()  # workers/… too
    for i, body in enumerate(receiver.bodies):
        outputs[f"otlp body {i}"] = body
    return outputs


def _has_report(env: dict[str, str], cwd: Path) -> bool:
    code, stdout, _ = _ddtrace(["--help"], env, cwd)
    return code == 0 and re.search(rb"^\s+report\s", stdout, re.MULTILINE) is not None


def _completion_marks(data: bytes) -> list[str]:
    marks = set()
    for line in data.splitlines():
        row = orjson.loads(line)
        for column in ("summary", "analysis"):
            if isinstance(row.get(column), str):
                marks.update(re.findall(r"#[0-9a-f]{8}\b", row[column]))
    return sorted(marks)


def _holders(outputs: dict[str, bytes], needles: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Output name → the first planted value it holds."""
    found: dict[str, str] = {}
    for name, content in outputs.items():
        for needle in needles:
            if needle.encode() in content:
                found[name] = needle
                break
    return found


@pytest.mark.parametrize(
    ("record_text", "shared"),
    [(False, False), (True, False), (False, True)],
    ids=["text-off", "text-on", "shared-admission"],
)
def test_nothing_leaves_except_what_was_opted_into(
    tmp_path: Path,
    mock_endpoints: tuple[MockServerProcess, MockServerProcess],
    record_text: bool,
    shared: bool,
) -> None:
    before = [e.stats() for e in mock_endpoints]
    with contextlib.ExitStack() as stack:
        admission = _shared_admission(stack) if shared else None
        receiver = stack.enter_context(HttpReceiver())
        outputs = _outputs(tmp_path, mock_endpoints, receiver, record_text, admission)
    after = [e.stats() for e in mock_endpoints]

    # The plants are real: both endpoints misbehaved, OTLP arrived with the credentials in use.
    for old, new in zip(before, after, strict=True):
        assert new.server_errors > old.server_errors and new.unauthorized == 0
    assert receiver.bodies, "no OTLP request reached the receiver"
    assert any(h.get("x-leak-token") == OTLP_TOKEN for h in receiver.headers)
    assert all(h.get("authorization", "").startswith("Basic ") for h in receiver.headers)
    record = outputs["run.jsonl"]
    assert b'"outcome":"server_error"' in record and b"upstream failed on: <" in record
    assert b" bytes in all)" in record  # an oversized body was cut and said so
    completions = _completion_marks(outputs["data.jsonl"])
    assert len(completions) >= 2 * 24  # unique per row (the uuid column) and column
    for name in ("run.pftrace", "run.trace.json", "health-text stdout", "health-json stdout"):
        assert outputs.get(name), f"{name} is missing or empty"

    # Secrets: nowhere. Terminal escapes a server sent: never raw on stdout/stderr.
    assert _holders(outputs, SECRETS) == {}
    assert [
        n for n, c in outputs.items() if n.endswith(("stdout", "stderr")) and b"\x1b" in c
    ] == []

    # Datasets (the run's, and each shard worker's part) may; with text on, records and spans.
    allowed = {n for n in outputs if Path(n).name == "data.jsonl"}
    if record_text:
        allowed |= {n for n in outputs if Path(n).name == "run.jsonl" or n.startswith("otlp")}
    text_holders = _holders(outputs, [*TEXT_MARKS, *completions])
    assert {n: v for n, v in text_holders.items() if n not in allowed} == {}
    if record_text:  # the opt-in works: the record and the spans do carry the text
        assert "run.jsonl" in text_holders
        assert any(n.startswith("otlp body") for n in text_holders)


def test_a_text_record_is_a_private_file(
    tmp_path: Path, mock_endpoints: tuple[MockServerProcess, MockServerProcess]
) -> None:
    pipeline = _write_pipeline(tmp_path / "pipeline.yaml", mock_endpoints)
    pipeline.write_text(pipeline.read_text().replace("num_records: 24", "num_records: 4"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["LEAK_TEST_API_KEY"] = API_KEY
    out = tmp_path / "out"  # the same directory: the second run replaces a 0644 record
    for flag, expected in (([], None), (["--record-text"], 0o600)):
        code, _, stderr = _ddtrace(["run", str(pipeline), "-o", str(out), *flag], env, tmp_path)
        assert code == 0, stderr.decode(errors="replace")
        mode = (out / "run.jsonl").stat().st_mode & 0o777
        if expected is None:
            assert mode == 0o644 & ~_umask()  # the writer's default, less the umask
        else:
            assert mode == expected


def _shared_admission(stack: contextlib.ExitStack) -> str:
    """The URL of a real redis-server with the planted password, or a skip saying why not."""
    try:
        server = stack.enter_context(LocalRedis(password=REDIS_PASSWORD))
    except RedisServerMissing as exc:
        pytest.skip(f"shared admission needs redis-server: {exc}")
    return server.url


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
