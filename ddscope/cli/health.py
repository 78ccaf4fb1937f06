"""``ddtrace health RUN.jsonl``: what happened in a run and why, on one screen (or as JSON).

Exit codes: 0 the snapshot was made (and ``--fail-on`` did not trip); 1 ``--fail-on LEVEL`` and
the verdict is LEVEL or worse, in the order ``healthy < degraded < stalled < saturated <
failed``; 2 bad usage or a record that cannot be read (one line on stderr naming file:line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from ddscope.cli.common import (
    EXIT_FAILED,
    MAX_RECORD_S,
    NonEmptyPath,
    handle_errors,
    seconds_callback,
    warn,
)
from ddscope.exporters.health.report import VERDICTS, Thresholds, verdict_rank

_FAIL_ON = [v for v in VERDICTS if v != "healthy"]


@click.command("health")
@click.argument("record", type=NonEmptyPath(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (ddscope.health/1).")
@click.option(
    "--at",
    "at_s",
    type=click.FloatRange(min=0),
    # the snapshot time becomes int nanoseconds: bounded to what a record's times can be
    callback=seconds_callback(
        "--at", MAX_RECORD_S, " (about 292 years: the longest run a record can hold)"
    ),
    default=None,
    metavar="SECONDS",
    help="The snapshot as of SECONDS after the run started (later events are ignored).",
)
@click.option(
    "--fail-on",
    type=click.Choice(_FAIL_ON),
    default=None,
    help="Exit 1 when the verdict is this or worse "
    "(healthy < degraded < stalled < saturated < failed).",
)
@click.option(
    "--stall-s",
    type=click.FloatRange(min=0, min_open=True),
    callback=seconds_callback("--stall-s"),
    default=Thresholds.stall_s,
    show_default=True,
    help="A no-progress interval this long (with work pending) makes the run 'stalled'.",
)
@click.option("--lenient", is_flag=True, help="Skip corrupt lines instead of failing.")
@handle_errors
def health_command(
    record: Path,
    as_json: bool,
    at_s: float | None,
    fail_on: str | None,
    stall_s: float,
    lenient: bool,
) -> None:
    """Explain a recorded run (run.jsonl): verdict, reasons, per-model figures, idle time.

    \b
    Verdicts, worst last: healthy, degraded (429s, retries, errors), stalled (a long
    interval without a completed task), saturated (a model refused requests at
    concurrency 1, or its circuit breaker opened), failed (crash, early shutdown,
    rows dropped). Each finding comes with one concrete recommendation.
    """
    from ddscope.exporters.health import analyze

    report = analyze(record, at_s=at_s, lenient=lenient, thresholds=Thresholds(stall_s=stall_s))
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    else:
        from ddscope.exporters.health.render import clip, render

        click.echo(render(report, color=sys.stdout.isatty(), warnings=False))
        for line in report.record.warnings:
            warn(clip(line, 1000))  # escaped; a warning names file:line, so it gets more room
    if fail_on is not None and verdict_rank(report.verdict) >= verdict_rank(fail_on):
        sys.exit(EXIT_FAILED)
