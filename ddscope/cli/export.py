"""``ddtrace export RUN.jsonl --perfetto | --chrome-json | --otlp [ENDPOINT]``."""

from __future__ import annotations

from pathlib import Path

import click

from ddscope.cli.common import handle_errors, warn
from ddscope.exporters.result import ExportResult


@click.command("export")
@click.argument("record", type=click.Path(path_type=Path))
@click.option("--perfetto", "fmt", flag_value="perfetto", help="Perfetto protobuf trace (default).")
@click.option(
    "--chrome-json",
    "fmt",
    flag_value="chrome-json",
    help="Chrome JSON trace, for tools that only read JSON.",
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
    type=click.Choice(["grpc", "http/protobuf"]),
    default=None,
    help="OTLP protocol (else OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).",
)
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file (default: beside the record, .pftrace or .trace.json).",
)
@click.option("--lenient", is_flag=True, help="Skip corrupt lines instead of failing.")
@handle_errors
def export_command(
    record: Path,
    fmt: str | None,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    out: Path | None,
    lenient: bool,
) -> None:
    """Convert a recorded run (run.jsonl) for Perfetto, Chrome tracing or an OTLP backend."""
    if otlp_endpoint is not None:
        if fmt is not None:
            raise click.UsageError("choose one of --perfetto, --chrome-json, --otlp")
        from ddscope.exporters.otel.replay import replay_to_otlp

        result = replay_to_otlp(
            record, endpoint=otlp_endpoint or None, protocol=otlp_protocol, lenient=lenient
        )
        _report(result, f"sent {result.events} events to {result.out}")
        return
    if fmt == "chrome-json":
        from ddscope.exporters.trace.chrome_json import export_chrome_json

        target = out or record.with_suffix(".trace.json")
        result = export_chrome_json(record, target, lenient=lenient)
    else:
        from ddscope.exporters.trace.perfetto import export_perfetto

        target = out or record.with_suffix(".pftrace")
        result = export_perfetto(record, target, lenient=lenient)
    _report(result, f"{result.out}  ({result.events} events, {result.bytes_written:,} bytes)")


def _report(result: ExportResult, line: str) -> None:
    for message in result.warnings:
        warn(message)
    click.echo(line)
