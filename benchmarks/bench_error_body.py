"""Huge error bodies: does a 50 MB server error message grow the run's events or its memory?

    .venv/bin/python benchmarks/bench_error_body.py [--mb 50 --records 24]

Runs the real CLI (``ddtrace run`` in a child process) twice against the mock endpoint (another
child process) answering every fourth request with a 500 whose message quotes the prompt: once
with ordinary error bodies, once padded to ``--mb`` MB. Prints, for each, the run's peak RSS
(``ru_maxrss`` of the ddtrace process), the largest ``attempt_finished`` line of its record and
the largest ``error`` text; then the RSS growth and one JSON line. Reading the 50 MB body whole
would add well over 100 MB (the bytes, the decoded text, the JSON); the client reads 64 KiB.

Then what scrubbing costs per failed attempt: CPU microseconds of one ``scrub_error_text`` call
(the client and the worker each make one) on a 140-character rate-limit message against prompts
of 2 KB, 20 KB and 100 KB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ddscope.engine.client.scrub import scrub_error_text, sent_texts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from error_body_support import measure

RATE_LIMIT_TEXT = (
    "HTTP 429 rate limited (retry after 2 s): Rate limit reached for gpt-4o in organization "
    "org-xyz on tokens per min. Limit 30000, Used 29000."
)


def scrub_cost_us(prompt_chars: int, calls: int = 300) -> float:
    prompt = " ".join(f"w{i}" for i in range(prompt_chars // 4))[:prompt_chars]
    messages = [{"role": "user", "content": prompt}]
    started = time.process_time()
    for _ in range(calls):
        scrub_error_text(RATE_LIMIT_TEXT, sent=sent_texts(messages))
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="error body size (MB)")
    parser.add_argument("--records", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(0, args.records, Path(tmp))
        huge = measure(args.mb * 1024 * 1024, args.records, Path(tmp))
    for name, figures in (("ordinary error bodies", small), (f"{args.mb} MB error bodies", huge)):
        print(
            f"{name:>22}: exit {figures['exit_code']}, {figures['server_errors']} quoting 500s, "
            f"peak RSS {figures['peak_rss_kb'] / 1024:.1f} MB, largest attempt_finished line "
            f"{figures['largest_attempt_line_bytes']} B, largest error "
            f"{figures['largest_error_chars']} chars"
        )
    growth_mb = round((huge["peak_rss_kb"] - small["peak_rss_kb"]) / 1024, 1)
    print(f"peak RSS growth from {args.mb} MB bodies: {growth_mb:+.1f} MB")
    scrub_us = {size: round(scrub_cost_us(size), 1) for size in (2_000, 20_000, 100_000)}
    for size, cost in scrub_us.items():
        print(f"scrub_error_text, {size:>7,}-char prompt: {cost:8.1f} µs CPU per call")
    summary: dict[str, object] = {"mb": args.mb, "small": small, "huge": huge}
    summary |= {"growth_mb": growth_mb, "scrub_us_by_prompt_chars": scrub_us}
    print("JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
