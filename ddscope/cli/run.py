"""``ddtrace run PIPELINE`` and ``ddtrace demo``: run a pipeline, show progress, leave the files.

Both write ``DIR/data.jsonl`` (the rows) and ``DIR/run.jsonl`` (the run record) and end with a
one-paragraph summary. Exit codes: 0 the run completed, 1 it failed, shut down or was cancelled
(Ctrl-C, SIGTERM, SIGHUP), 2 bad usage or configuration. Progress goes to stderr, the summary
to stdout; both the summary and the exit code come from the engine's ``RunSummary``.

Before anything in ``DIR`` is replaced: the pipeline is loaded, options checked, API-key
variables and endpoints checked (one line naming the provider and the URL tried), and ``DIR``
claimed with a lock (``out_dir``): a second run into the same directory is refused. The files
themselves are replaced only once the engine has started. ``--resume`` continues the run in
``DIR`` instead (``engine.resume``): the record continues in ``run.N.jsonl``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ddscope.cli.common import MAX_COUNT, NonEmptyPath, handle_errors, seconds_callback, warn
from ddscope.cli.console.progress import ProgressSink
from ddscope.cli.console.summary import exit_code_of, summary_paragraph
from ddscope.cli.otel_options import otel_options
from ddscope.cli.out_dir import claim_out_dir
from ddscope.cli.preflight import check_api_keys, check_endpoints, check_otlp_endpoint
from ddscope.cli.stop_signals import run_until_stopped
from ddscope.engine import event_loop
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import JsonlRowWriter
from ddscope.events import EventBus, EventSink
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.record.jsonl import JsonlRecorder, segment_path

if TYPE_CHECKING:
    from ddscope.engine.admission.shared.session import SharedAdmission
    from ddscope.engine.rows.resume import ResumePoint

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

# --prometheus-linger: long enough for any scrape interval; more is a slip (and 1e300 overflows).
MAX_LINGER_S = 86_400.0

_OUT_HELP = (
    "Directory for data.jsonl and run.jsonl (created; existing files are replaced once the run "
    f"has started; one run at a time). Default: ./{DEFAULT_OUT}."
)


def build_sinks(
    run_dir: Path,
    progress: ProgressSink,
    extra: list[EventSink] | None = None,
    *,
    segment: int = 0,
) -> list[EventSink]:
    """The event sinks of a CLI run. Extra sinks (e.g. OpenTelemetry) are added here."""
    record = JsonlRecorder(segment_path(run_dir / RECORD_FILE, segment))
    return [record, progress, *(extra or [])]


def execute(
    pipeline: Pipeline,
    run_dir: Path,
    *,
    quiet: bool = False,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    prometheus_port: int | None = None,
    prometheus_linger_s: float = 0.0,
    resume: bool = False,
    shared: SharedAdmission | None = None,
) -> int:
    """Runs ``pipeline`` writing into ``run_dir``, prints the summary, returns the exit code.
    ``shared``: request admission shared through Redis, maybe one shard (``cli.workers``)."""
    check_otlp_endpoint(otlp_endpoint)
    event_loop.chosen_loop()  # a bad DDSCOPE_EVENT_LOOP: one line, exit 2, nothing touched
    check_api_keys(pipeline)
    check_endpoints(pipeline)
    if shared is not None:
        shared.check()  # Redis unreachable: one line, exit 2, before the directory is touched
    with claim_out_dir(run_dir):
        point = _plan_resume(pipeline, run_dir) if resume else None
        # Before the run: a bad option or a busy Prometheus port fails here (exit 2), not mid-run.
        otel_sink, otel_finish = build_otel_sink(otlp_endpoint, otlp_protocol, prometheus_port)
        progress = ProgressSink(sys.stderr, quiet=quiet)
        extra: list[EventSink] | None = [otel_sink] if otel_sink else None
        bus = EventBus(build_sinks(run_dir, progress, extra, segment=point.segment if point else 0))
        writer = JsonlRowWriter(
            run_dir / DATA_FILE,
            keep_bytes=point.keep_bytes if point else None,
            carried=point.carried if point else None,
        )
        try:
            summary = event_loop.run(run_until_stopped(pipeline, bus, writer, point, shared))
        finally:
            writer.close()
            if shared is not None:
                shared.save_counters(run_dir)
            if prometheus_port and prometheus_linger_s > 0:
                linger(prometheus_port, prometheus_linger_s)
            for message in otel_finish():  # bounded flush; a collector that is down only warns
                warn(message)
    if summary is None:  # a second signal cut the stop short
        click.echo("Run interrupted while stopping; the record may lack its last events.")
        return 1
    record = segment_path(run_dir / RECORD_FILE, 0)
    total = shared.rows_owned(pipeline) if shared is not None else pipeline.run.num_records
    click.echo(summary_paragraph(summary, total, run_dir / DATA_FILE, record))
    return exit_code_of(summary)


def _plan_resume(pipeline: Pipeline, run_dir: Path) -> ResumePoint:
    from ddscope.engine.rows.resume import plan_resume

    return plan_resume(pipeline, run_dir / RECORD_FILE, run_dir / DATA_FILE)


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
    type=NonEmptyPath(file_okay=False),
    default=DEFAULT_OUT,
    help=_OUT_HELP,
)
prometheus_linger_option = click.option(
    "--prometheus-linger",
    "prometheus_linger_s",
    type=click.FloatRange(min=0),
    # checked before the run: time.sleep overflows on a huge value only once the run is over
    callback=seconds_callback("--prometheus-linger", MAX_LINGER_S, " (a day)"),
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
    # the record's header carries it: bounded to what the record can hold and read back
    type=click.IntRange(min=1, max=MAX_COUNT),
    default=None,
    help="Rows to generate (default: the pipeline's run.num_records).",
)
@out_option
@click.option(
    "--buffer-size",
    type=click.IntRange(min=1, max=MAX_COUNT),
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
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in OUT (killed, cancelled or shut down): row groups already in "
    "data.jsonl are not generated again; the record continues in run.N.jsonl.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Start N worker processes on this machine, each a shard of the row groups, sharing "
    "each provider's limits through --admission; OUT gets one merged run.",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Run shard I (0-based) of N of a job spread over hosts (needs --admission).",
)
@click.option(
    "--admission",
    default=None,
    envvar="DDSCOPE_ADMISSION",
    metavar="redis://HOST:PORT/DB",
    help="Share request admission (limits, cooldowns, breaker) with other workers through "
    "this Redis (env DDSCOPE_ADMISSION; a password in it is never printed or recorded).",
)
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
    resume: bool,
    workers: int | None,
    shard: str | None,
    admission: str | None,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    prometheus_port: int | None,
    prometheus_linger_s: float,
) -> None:
    """Run the pipeline in PIPELINE (YAML or JSON) and record what happened.

    \b
    Writes OUT/data.jsonl (one row per line, "_row" = row index) and OUT/run.jsonl (the run
    record, for `ddtrace health` and `ddtrace export`). Exit codes: 0 complete, 1 failed,
    shut down or cancelled (Ctrl-C, SIGTERM, SIGHUP), 2 bad usage or configuration.
    --resume continues a stopped run in OUT with the same pipeline. The engine runs on uvloop
    where it is installed (env DDSCOPE_EVENT_LOOP=auto|uvloop|asyncio).
    """
    pipeline = Pipeline.load(pipeline_file).with_overrides(
        num_records=records,
        buffer_size=buffer_size,
        breaker_policy=breaker_policy,
        record_text=True if record_text else None,
    )
    shared = None
    if workers is not None or shard is not None or admission is not None:
        from ddscope.cli import workers as sharding  # redis only when asked for

        url, part = sharding.check_sharding_options(workers, shard, admission, prometheus_port)
        if workers is not None and url is not None:
            options = sharding.WorkerOptions(
                records, buffer_size, breaker_policy, record_text, otlp_endpoint, otlp_protocol
            )
            coordinator = sharding.Coordinator(
                pipeline_file, pipeline, out_dir, workers, url, options, quiet, resume
            )
            raise SystemExit(coordinator.run())
        shared = sharding.SharedAdmission(url, part) if url is not None else None
    code = execute(
        pipeline,
        out_dir,
        quiet=quiet,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        prometheus_port=prometheus_port,
        prometheus_linger_s=prometheus_linger_s,
        resume=resume,
        shared=shared,
    )
    raise SystemExit(code)


@click.command("demo")
@out_option
@click.option(
    "-n",
    "--records",
    type=click.IntRange(min=1, max=MAX_COUNT),
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
