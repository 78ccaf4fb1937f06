"""``ddtrace report RUN.jsonl [B.jsonl] [-o FILE]``: a run, or two runs compared, as one
self-contained HTML page (no network needed to view it)."""

from __future__ import annotations

from pathlib import Path

import click

from ddscope.cli.common import NonEmptyPath, handle_errors, warn
from ddscope.cli.console.next_steps import invoked_as
from ddscope.cli.out_file import check_target, write_errors


def default_out(records: tuple[Path, ...]) -> Path:
    """Beside the (first) record: ``run.report.html``, or ``A-vs-B.html`` for a comparison,
    where a record called ``run.jsonl`` is named after its folder."""
    first = records[0]
    if len(records) == 1:
        return first.with_suffix(".report.html")

    def label(p: Path) -> str:
        return p.resolve().parent.name if p.stem == "run" else p.stem

    return first.with_name(f"{label(records[0])}-vs-{label(records[1])}.html")


@click.command("report")
@click.argument("records", nargs=-1, required=True, type=NonEmptyPath(dir_okay=False))
@click.option(
    "-o",
    "--out",
    type=NonEmptyPath(),
    default=None,
    help="Output file (default: beside the record, RUN.report.html; A-vs-B.html for two).",
)
@click.option("--no-trace", is_flag=True, help="Do not embed the Perfetto trace.")
@click.option("--lenient", is_flag=True, help="Skip corrupt lines instead of failing.")
@handle_errors
def report_command(
    records: tuple[Path, ...], out: Path | None, no_trace: bool, lenient: bool
) -> None:
    """An HTML report of a recorded run: verdict and findings, plots over time (AIMD limit,
    in flight, waiters, cooldowns, 429s, idle attribution, rows, throughput, latency), drops,
    salvage rounds, and an "Open in Perfetto" button. With two records, A then B: a before/after
    table with the better side marked, and both runs' plots on one time axis."""
    if len(records) > 2:
        raise click.UsageError("give one record, or two to compare (A then B)")
    target = check_target(records, out or default_out(records), make_parents=True)
    if len(records) == 1:
        from ddscope.exporters.report import build_report

        with write_errors(target):
            result = build_report(records[0], target, lenient=lenient, trace=not no_trace)
        trace = "trace embedded" if result.trace_embedded else f"trace not embedded: {result.note}"
        if no_trace:
            trace = "no trace"
    else:
        from ddscope.exporters.report import build_comparison

        with write_errors(target):
            result = build_comparison(records[0], records[1], target, lenient=lenient)
        trace = "comparison"
    for line in result.warnings:
        warn(line)
    events = f"{result.events:,} event{'' if result.events == 1 else 's'}"
    click.echo(f"{result.out}  ({result.bytes_written:,} bytes, {events}; {trace})")
    click.echo(f"Next: open {result.out.resolve().as_uri()} in a browser")
    if len(records) == 1:
        click.echo(f"  or: {invoked_as()} open {records[0]}   (the trace in ui.perfetto.dev)")
