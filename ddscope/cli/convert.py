"""``ddtrace convert FILE [-o DIR]``: another engine's record → ddscope run.jsonl records.

Today: DataDesigner's ``scheduler_events.jsonl`` (plain or gzipped), one run.jsonl per segment
(a resumed DataDesigner run appends a new segment to the same file). ``health`` and ``export``
read such a file directly too; convert when you want every segment, or a plain ddscope record.
"""

from __future__ import annotations

from pathlib import Path

import click

from ddscope.cli.common import NonEmptyPath, handle_errors, warn
from ddscope.errors import RecordError


@click.command("convert")
@click.argument("source", type=NonEmptyPath(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out",
    type=NonEmptyPath(file_okay=False),
    default=None,
    help="Directory for the run.jsonl file(s) (default: beside SOURCE).",
)
@click.option("--lenient", is_flag=True, help="Skip corrupt lines instead of failing.")
@handle_errors
def convert_command(source: Path, out: Path | None, lenient: bool) -> None:
    """Convert a DataDesigner scheduler_events.jsonl into ddscope run.jsonl record(s)."""
    from ddscope.integrations.datadesigner.convert import convert_file
    from ddscope.integrations.datadesigner.reader import open_bytes
    from ddscope.record.detect import detect_format

    if detect_format(source) != "datadesigner":
        open_bytes(source).close()  # unreadable: "cannot open: No such file…" (a RecordError)
        raise RecordError(f"{source}:1: not a DataDesigner scheduler event file")
    result = convert_file(source, out or source.parent, lenient=lenient)
    for message in result.warnings:
        warn(message)
    for record in result.records:
        click.echo(str(record))
