"""``ddtrace export RUN.jsonl --perfetto | --chrome-json | --otlp [ENDPOINT]``.

The output file is checked before the record is read: it must not be the record (or one of its
segments), and its directory must exist and be writable; otherwise one line naming ``-o`` and
the reason, exit 2. A write that fails later (disk full) is one line too.
"""

from __future__ import annotations

from pathlib import Path

import click

from ddscope.cli.common import NonEmptyPath, handle_errors, warn
from ddscope.cli.out_file import check_target, write_errors
from ddscope.exporters.otel.setup import PROTOCOLS
from ddscope.exporters.result import ExportResult


@click.command("export")
@click.argument("record", type=NonEmptyPath(dir_okay=False))
# Separate flags, not one option with flag values: click would silently keep the last of
# `--perfetto --chrome-json`; two formats are refused instead (exit 2).
@click.option("--perfetto", is_flag=True, help="Perfetto protobuf trace (default).")
@click.option(
    "--chrome-json", is_flag=True, help="Chrome JSON trace, for tools that only read JSON."
)
@click.option(
    "--otlp",
    "otlp_endpoint",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ENDPOINT]",
    help="Replay the run's spans and final metrics over OTLP. Without ENDPOINT, "
    "OTEL_EXPORTER_OTLP_ENDPOINT or the OTLP default is used.",
)
@click.option(
    "--otlp-protocol",
    type=click.Choice(PROTOCOLS),
    default=None,
    help="OTLP protocol (else OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).",
)
@click.option(
    "-o",
    "--out",
    "out",
    type=NonEmptyPath(),
    default=None,
    help="Output file (default: beside the record, .pftrace or .trace.json).",
)
@click.option("--lenient", is_flag=True, help="Skip corrupt lines instead of failing.")
@handle_errors
def export_command(
    record: Path,
    perfetto: bool,
    chrome_json: bool,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    out: Path | None,
    lenient: bool,
) -> None:
    """Convert a recorded run (run.jsonl) for Perfetto, Chrome tracing or an OTLP backend."""
    chosen = [
        flag
        for flag, on in (
            ("--perfetto", perfetto),
            ("--chrome-json", chrome_json),
            ("--otlp", otlp_endpoint is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise click.UsageError(
            f"choose one of --perfetto, --chrome-json, --otlp, not {' and '.join(chosen)}"
        )
    if otlp_endpoint is not None:
        from ddscope.cli.preflight import check_otlp_endpoint

        check_otlp_endpoint(otlp_endpoint, "--otlp")
        from ddscope.exporters.otel.replay import replay_to_otlp

        result = replay_to_otlp(
            record, endpoint=otlp_endpoint or None, protocol=otlp_protocol, lenient=lenient
        )
        _report(result, f"sent {result.events} events to {result.out}")
        return
    if chrome_json:
        from ddscope.exporters.trace.chrome_json import export_chrome_json

        target = check_target([record], out or record.with_suffix(".trace.json"))
        with write_errors(target):
            result = export_chrome_json(record, target, lenient=lenient)
    else:
        from ddscope.exporters.trace.perfetto import export_perfetto

        target = check_target([record], out or record.with_suffix(".pftrace"))
        with write_errors(target):
            result = export_perfetto(record, target, lenient=lenient)
    _report(result, f"{result.out}  ({result.events} events, {result.bytes_written:,} bytes)")


def _report(result: ExportResult, line: str) -> None:
    for message in result.warnings:
        warn(message)
    click.echo(line)
