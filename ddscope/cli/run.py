"""``ddtrace run PIPELINE`` and ``ddtrace demo``: run a pipeline, show progress, leave the files.

Both write ``DIR/data.jsonl`` (the rows) and ``DIR/run.jsonl`` (the run record) and end with a
one-paragraph summary. Exit codes: 0 the run completed, 1 it failed, shut down or was cancelled
(Ctrl-C), 2 bad usage or configuration. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path

import click

from ddscope.cli.common import handle_errors, warn
from ddscope.cli.otel_options import otel_options
from ddscope.cli.progress import ProgressSink, exit_code, summary_text
from ddscope.engine.output import JsonlRowWriter
from ddscope.engine.pipeline.model import Pipeline
from ddscope.events import EventBus, EventSink
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.record.jsonl import JsonlRecorder

DEFAULT_OUT = Path("ddscope-out")
DATA_FILE = "data.jsonl"
RECORD_FILE = "run.jsonl"
EXAMPLE = "examples/chain3.yaml"  # package data of ddscope
EXAMPLE_PROVIDER = "mock"

# Mock endpoint knobs per demo scenario (see SCENARIOS.md), with what the user should expect.
DEMO_SCENARIOS: dict[str, tuple[dict[str, object], str]] = {
    "healthy": ({"latency_ms": 35, "jitter_ms": 15}, "a healthy endpoint answering in 20-50 ms"),
    "rate-limited": (
        {
            "latency_ms": 30,
            "rate_limit_k": 3,
            "rate_limit_n": 10,
            "retry_after": "1",
            "rate_limit_for_s": 3.0,
        },
        "3 of every 10 requests get 429 (Retry-After: 1) for the first 3 s; "
        "watch the limit drop and recover",
    ),
    "saturated": (
        {"latency_ms": 20, "rate_limit_k": 9, "rate_limit_n": 10, "retry_after": "5"},
        "9 of every 10 requests get 429 (Retry-After: 5); the circuit breaker "
        "should stop the run with a stated reason",
    ),
    "cold": (
        {"latency_ms": 30, "capacity": 16, "ramp_s": 5.0, "capacity_retry_after": "1"},
        "a cold endpoint whose capacity climbs from 1 to 16 over 5 s; beyond it, 429",
    ),
}

_OUT_HELP = (
    "Directory for data.jsonl and run.jsonl (created; existing files are replaced). "
    f"Default: ./{DEFAULT_OUT}."
)


def build_sinks(
    run_dir: Path, progress: ProgressSink, extra: list[EventSink] | None = None
) -> list[EventSink]:
    """The event sinks of a CLI run. Extra sinks (e.g. OpenTelemetry) are added here."""
    return [JsonlRecorder(run_dir / RECORD_FILE), progress, *(extra or [])]


def execute(
    pipeline: Pipeline,
    run_dir: Path,
    *,
    quiet: bool = False,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    prometheus_port: int | None = None,
    prometheus_linger_s: float = 0.0,
) -> int:
    """Runs ``pipeline`` writing into ``run_dir``, prints the summary, returns the exit code."""
    from ddscope.engine.scheduler import run_pipeline  # heavy: asyncio engine and HTTP client

    progress = ProgressSink(sys.stderr, quiet=quiet)
    # Before the run: a bad option or a busy Prometheus port fails here (exit 2), not mid-run.
    otel_sink, otel_finish = build_otel_sink(otlp_endpoint, otlp_protocol, prometheus_port)
    bus = EventBus(build_sinks(run_dir, progress, [otel_sink] if otel_sink else None))
    writer = JsonlRowWriter(run_dir / DATA_FILE)
    try:
        asyncio.run(run_pipeline(pipeline, bus=bus, output=writer))
    except KeyboardInterrupt:
        # asyncio.run cancelled the run; the scheduler closed the record with "cancelled".
        progress.tally.interrupted = True
    finally:
        if not progress.closed:  # the scheduler closes the bus; make sure, without double-closing
            bus.close()
        writer.close()
        if prometheus_port and prometheus_linger_s > 0:
            linger(prometheus_port, prometheus_linger_s)
        for message in otel_finish():  # bounded flush; a collector that is down only warns
            warn(message)
    click.echo(summary_text(progress.tally, run_dir / DATA_FILE, run_dir / RECORD_FILE))
    return exit_code(progress.tally)


def linger(port: int, seconds: float) -> None:
    """Keeps /metrics up after the run, so a scraper with a long interval still gets the final
    values before the endpoint goes away (Prometheus marks a vanished target's series stale)."""
    click.echo(
        f"serving final metrics on http://127.0.0.1:{port}/metrics for {seconds:g} s "
        "(Ctrl-C to stop)",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


# Options that `run` and `demo` share.
out_option = click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT,
    help=_OUT_HELP,
)
prometheus_linger_option = click.option(
    "--prometheus-linger",
    "prometheus_linger_s",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="With --prometheus-port: keep /metrics up this long after the run ends, so a scraper "
    "collects the final values.",
)
quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress output; only the summary."
)


@click.command("run")
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(path_type=Path))
@click.option(
    "-n",
    "--records",
    type=click.IntRange(min=1),
    default=None,
    help="Rows to generate (default: the pipeline's run.num_records).",
)
@out_option
@click.option(
    "--buffer-size",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per row group (default: run.buffer_size).",
)
@click.option(
    "--breaker-policy",
    type=click.Choice(["fail_fast", "wait"]),
    default=None,
    help="When an endpoint stays saturated: stop with a stated reason (fail_fast) or keep "
    "trying while reporting (wait). Default: run.breaker_policy, else fail_fast.",
)
@click.option(
    "--record-text",
    is_flag=True,
    help="Record prompts and completions in run.jsonl (off by default).",
)
@quiet_option
@otel_options
@prometheus_linger_option
@handle_errors
def run_command(
    pipeline_file: Path,
    records: int | None,
    out_dir: Path,
    buffer_size: int | None,
    breaker_policy: str | None,
    record_text: bool,
    quiet: bool,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    prometheus_linger_s: float,
) -> None:
    """Run the pipeline in PIPELINE (YAML or JSON) and record what happened.

    \b
    Writes OUT/data.jsonl (one row per line, "_row" = row index) and OUT/run.jsonl (the run
    record, for `ddtrace health` and `ddtrace export`). Exit codes: 0 complete, 1 failed,
    shut down or cancelled, 2 bad usage or configuration.
    """
    pipeline = Pipeline.load(pipeline_file).with_overrides(
        num_records=records,
        buffer_size=buffer_size,
        breaker_policy=breaker_policy,
        record_text=True if record_text else None,
    )
    code = execute(
        pipeline,
        out_dir,
        quiet=quiet,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        prometheus_port=prometheus_port,
        prometheus_linger_s=prometheus_linger_s,
    )
    raise SystemExit(code)


@click.command("demo")
@out_option
@click.option(
    "-n",
    "--records",
    type=click.IntRange(min=1),
    default=None,
    help="Rows to generate (default: 24).",
)
@click.option(
    "--scenario",
    type=click.Choice(list(DEMO_SCENARIOS)),
    default="healthy",
    show_default=True,
    help="How the built-in mock endpoint behaves.",
)
@quiet_option
@otel_options
@prometheus_linger_option
@handle_errors
def demo_command(
    out_dir: Path,
    records: int | None,
    scenario: str,
    quiet: bool,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    prometheus_linger_s: float,
) -> None:
    """Run the example chain-3 pipeline against the built-in mock endpoint.

    Starts an OpenAI-compatible mock endpoint on 127.0.0.1 in this process, runs the example
    pipeline (a topic sampler and three chained LLM columns) against it, and leaves
    OUT/data.jsonl and OUT/run.jsonl.

    \b
    Scenarios:
      healthy       answers in 20-50 ms
      rate-limited  3 of 10 requests get 429 for the first 3 s, then healthy
      saturated     9 of 10 requests get 429 (Retry-After: 5): the breaker stops the run
      cold          capacity climbs from 1 to 16 over 5 s; beyond it, 429
    """
    from ddscope.mock import MockBehavior, MockServer

    knobs, description = DEMO_SCENARIOS[scenario]
    with example_pipeline_path() as path:
        pipeline = Pipeline.load(path).with_overrides(num_records=records)
    with MockServer(MockBehavior(**knobs)) as server:  # type: ignore[arg-type]
        pipeline = pipeline.with_endpoint(EXAMPLE_PROVIDER, server.base_url)
        if not quiet:
            click.echo(
                f"ddscope demo: scenario {scenario!r}, {description}. Mock endpoint at "
                f"{server.base_url}.",
                err=True,
            )
        code = execute(
            pipeline,
            out_dir,
            quiet=quiet,
            otlp_endpoint=otlp_endpoint,
            otlp_protocol=otlp_protocol,
            prometheus_port=prometheus_port,
            prometheus_linger_s=prometheus_linger_s,
        )
    raise SystemExit(code)


@contextlib.contextmanager
def example_pipeline_path() -> Iterator[Path]:
    """The shipped example as a real file (works from a wheel or a zip too)."""
    with as_file(files("ddscope").joinpath(EXAMPLE)) as path:
        yield Path(path)
