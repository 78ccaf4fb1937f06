"""Running the real CLI against a mock endpoint whose error bodies quote the prompt and may be
huge, and measuring the run: its peak RSS and the largest attempt event it recorded. Shared by
tests/test_error_bodies.py and benchmarks/bench_error_body.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from ddscope.mock import MockBehavior, MockServerProcess

PIPELINE = """
name: error-bodies
providers: [{{name: mock, endpoint: "{endpoint}"}}]
models: [{{alias: writer, provider: mock, model: mock-model, max_parallel_requests: 4}}]
columns:
  - {{name: topic, type: sampler, sampler: uuid}}
  - {{name: summary, type: llm_text, model: writer, prompt: "Summarise {{{{ topic }}}}."}}
run: {{num_records: {records}, buffer_size: 8, salvage_rounds: 3}}
"""
# The CLI's own process reports its peak RSS when it exits (in KiB on Linux).
RUN_AND_MEASURE = (
    "import resource, sys\n"
    "from ddscope.cli.main import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    print(f'MAXRSS_KB {peak}', file=sys.stderr)\n"
)


def measure(error_body_bytes: int, records: int, workdir: Path) -> dict[str, int]:
    behavior = MockBehavior(quote_prompt_every=4, error_body_bytes=error_body_bytes)
    with MockServerProcess(behavior) as server:
        pipeline = workdir / f"p{error_body_bytes}.yaml"
        pipeline.write_text(PIPELINE.format(endpoint=server.base_url, records=records))
        out = workdir / f"out{error_body_bytes}"
        proc = subprocess.run(
            [sys.executable, "-c", RUN_AND_MEASURE, "run", str(pipeline), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        server_errors = server.stats().server_errors
    peak_kb = next(
        int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB")
    )
    line_bytes, error_chars = largest_attempt_finished(out / "run.jsonl")
    return {
        "exit_code": proc.returncode,
        "server_errors": server_errors,
        "peak_rss_kb": peak_kb,
        "largest_attempt_line_bytes": line_bytes,
        "largest_error_chars": error_chars,
    }


def largest_attempt_finished(record: Path) -> tuple[int, int]:
    line_bytes = error_chars = 0
    with record.open("rb") as lines:
        for line in lines:
            if b'"attempt_finished"' in line:
                line_bytes = max(line_bytes, len(line))
                error_chars = max(error_chars, len(orjson.loads(line).get("error") or ""))
    return line_bytes, error_chars
