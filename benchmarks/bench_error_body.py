"""Huge error bodies: does a 50 MB server error message grow the run's events or its memory?

    .venv/bin/python benchmarks/bench_error_body.py [--mb 50 --records 24]

Runs the real CLI (``ddtrace run`` in a child process) twice against the mock endpoint (another
child process) answering every fourth request with a 500 whose message quotes the prompt: once
with ordinary error bodies, once padded to ``--mb`` MB. Prints, for each, the run's peak RSS
(``ru_maxrss`` of the ddtrace process), the largest ``attempt_finished`` line of its record and
the largest ``error`` text; then the RSS growth and one JSON line. Reading the 50 MB body whole
would add well over 100 MB (the bytes, the decoded text, the JSON); the client reads 64 KiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from error_body_support import measure


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
    growth_mb = (huge["peak_rss_kb"] - small["peak_rss_kb"]) / 1024
    print(f"peak RSS growth from {args.mb} MB bodies: {growth_mb:+.1f} MB")
    print(
        "JSON " + json.dumps({"mb": args.mb, "small": small, "huge": huge, "growth_mb": growth_mb})
    )


if __name__ == "__main__":
    main()
