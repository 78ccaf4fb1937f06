"""Live checks of the dashboards against a real run: the engine runs a pipeline against the mock
endpoint (latency, 429s, 5xx and 4xx, so every panel has something to show) with the Prometheus
pull endpoint on; the test reads the metric names from that endpoint, and a real Prometheus
(Debian package ``prometheus``) scrapes it twice a second, then every panel's PromQL is evaluated
through Prometheus' HTTP API with the template variables substituted as Grafana would. The same
run's record is replayed through the OTel sink to check the traces dashboard's span names and
attributes.

The run is ``ddtrace run PIPELINE --prometheus-port PORT`` in a child process whose endpoint
stays up after the run until the test has what it needs (``_DRIVER``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from dashboard_support import (
    OVERVIEW,
    TRACES,
    SpanView,
    dashboard_metric_names,
    load_dashboard,
    matches,
    prometheus_queries,
    queries,
    substitute,
    traceql_parts,
    variable_query,
)
from prometheus_support import (
    PrometheusServer,
    free_port,
    grafana_regex_escape,
    scrape,
    wait_until,
)

from ddscope.mock import MockBehavior, MockServer

JOB = "ddscope"  # the scrape job, i.e. the dashboards' $service
SCRAPE_MS = 500  # several scrapes during a run of a few seconds
# Grafana's $__rate_interval = max(4 × scrape interval, step + scrape interval); step = scrape.
RATE_INTERVAL = f"{4 * SCRAPE_MS}ms"
RUN_TIMEOUT_S = 60.0
FINAL_SCRAPE_TIMEOUT_S = 20.0
# 2 of every 10 requests 429 (so cooldowns, AIMD decreases and breaker openings: a 1 s window
# judged at a 10 % refused share), 5% 500s, every 17th request a 400 (dropped rows).
MOCK = MockBehavior(latency_ms=30, rate_limit_k=2, rate_limit_n=10, error_rate=0.05, fail_every=17)
PROVIDER, MODEL = "mock", "mock-model"
RUN_SETTINGS = {
    "num_records": 32,
    "buffer_size": 4,  # many row groups: rows complete all along the run
    "salvage_rounds": 2,
    "salvage_pause_s": 0.2,
    "breaker_policy": "wait",  # keep running after an opening, so later panels have data
    "breaker_window_s": 1.0,
    "breaker_min_attempts": 2,
    "breaker_refused_share": 0.1,
    "default_cooldown_s": 0.15,
    "acquire_timeout_s": 0.1,  # waits during cooldowns time out: admission-timeout panel
    "health_interval_s": 1.0,
}

# `ddtrace run` itself, in a child process, with one seam: when the run is over, the CLI's OTel
# shutdown (which closes /metrics) prints "done" and waits for a line on stdin, so Prometheus can
# scrape the final values first. A plain `ddtrace run --prometheus-port` closes the endpoint as
# soon as the run ends; Prometheus would then mark every series stale at its next scrape.
_DRIVER = """
import sys
import ddscope.cli.run as run_command
real_build_otel_sink = run_command.build_otel_sink

def build_otel_sink_held_open(*args, **kwargs):
    sink, finish = real_build_otel_sink(*args, **kwargs)
    def finish_when_told():
        print("done", flush=True)
        sys.stdin.readline()
        return finish()
    return sink, finish_when_told

run_command.build_otel_sink = build_otel_sink_held_open
from ddscope.cli.main import cli
cli(sys.argv[1:], prog_name="ddtrace")
"""


@dataclass
class LiveRun:
    metrics_url: str
    out: Path
    started_at: float = 0.0  # when `ddtrace run` was started (epoch s)
    exported: set[str] = field(default_factory=set)  # every sample name seen on /metrics
    final: dict[str, float] = field(default_factory=dict)  # the last scrape after the run
    prometheus: PrometheusServer | None = None


def start_run(workdir: Path, base_url: str, port: int) -> subprocess.Popen[str]:
    """`ddtrace run` of a pipeline on the mock endpoint with /metrics on ``port``."""
    pipeline = {
        "name": "dashboards-live",
        "providers": [{"name": PROVIDER, "endpoint": base_url}],
        "models": [
            {"alias": "writer", "provider": PROVIDER, "model": MODEL, "max_parallel_requests": 4}
        ],
        "columns": [
            {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
            {"name": "summary", "type": "llm_text", "model": "writer", "prompt": "On {{ topic }}"},
            {"name": "rewrite", "type": "llm_text", "model": "writer", "prompt": "{{ summary }}"},
        ],
        "run": RUN_SETTINGS,
    }
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # no OTLP export
    # Both GenAI namings: the panels read the current names, falling back to the old ones.
    env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental/dup"
    command = ["run", str(path), "--out", str(workdir / "out"), "--prometheus-port", str(port)]
    with (workdir / "run.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _DRIVER, *command, "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The process' next stdout line, "" if none came within ``timeout_s``."""
    assert process.stdout is not None
    if select.select([process.stdout], [], [], timeout_s)[0]:
        return process.stdout.readline()
    return ""


def follow_run(run: subprocess.Popen[str], live: LiveRun, log: Path) -> None:
    """Scrapes /metrics while the run goes on, until the driver says "done" (bounded)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        line = read_line(run, 0.1)
        if line:
            assert line == "done\n", f"run failed: {line!r}\n{log.read_text()}"
            live.final = scrape(live.metrics_url)
            live.exported |= set(live.final)
            return
        assert run.poll() is None, f"run exited early:\n{log.read_text()}"
        with contextlib.suppress(httpx.HTTPError):  # /metrics is not up yet
            live.exported |= set(scrape(live.metrics_url))
    pytest.fail(f"the run did not finish within {RUN_TIMEOUT_S:.0f} s")


def wait_for_final_scrape(prometheus: PrometheusServer, final: dict[str, float]) -> None:
    """Until Prometheus holds the run's final row count, i.e. scraped after the run ended."""
    rows = final["ddscope_rows_completed_total"]
    query = f'sum(ddscope_rows_completed_total{{job="{JOB}"}})'

    def scraped() -> bool:
        result = prometheus.api("query", query=query)["result"]
        return bool(result) and float(result[0]["value"][1]) == rows

    wait_until(scraped, FINAL_SCRAPE_TIMEOUT_S, "Prometheus to scrape the final values")
    (target,) = prometheus.api("targets")["activeTargets"]
    assert target["health"] == "up", target


def stop(process: subprocess.Popen[str] | None) -> int | None:
    """Lets the run's process finish (killed after 10 s); its exit code."""
    if process is None:
        return None
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()  # the cue to shut the SDK down and exit
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    workdir = tmp_path_factory.mktemp("dashboards_live")
    port = free_port()
    binary = shutil.which("prometheus")
    live = LiveRun(f"http://127.0.0.1:{port}/metrics", workdir / "out")
    run_process = None
    with MockServer(MOCK) as mock:
        try:
            if binary is not None:
                live.prometheus = PrometheusServer(
                    binary, workdir, target=f"127.0.0.1:{port}", job=JOB, interval_ms=SCRAPE_MS
                )
                live.prometheus.wait_ready()
                live.prometheus.wait_target_active()
            live.started_at = time.time()
            run_process = start_run(workdir, mock.base_url, port)
            follow_run(run_process, live, workdir / "run.log")
            if live.prometheus is not None:
                wait_for_final_scrape(live.prometheus, live.final)
            yield live
            assert stop(run_process) == 0, (workdir / "run.log").read_text()  # run completed
        finally:
            stop(run_process)
            if live.prometheus is not None:
                live.prometheus.stop()


# -- the tests ---------------------------------------------------------------------------------


def test_every_metric_a_dashboard_reads_is_exported_by_a_real_run(live: LiveRun) -> None:
    missing = dashboard_metric_names() - live.exported
    ours = sorted(n for n in live.exported if n.startswith(("ddscope_", "gen_ai_")))
    assert not missing, f"the dashboard reads {sorted(missing)}; the run exported {ours}"
    # The workload did exercise what the panels show, so the next test is meaningful.
    for counter in (
        "ddscope_rows_dropped_total",
        "ddscope_request_rate_limited_total",
        "ddscope_breaker_openings_total",
        "ddscope_request_admission_timeouts_total",
        "ddscope_salvage_rounds_total",
    ):
        assert live.final[counter] > 0, counter


_LABEL_VALUES_QUERY = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def variable_values(
    prometheus: PrometheusServer, since: float
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each overview variable resolved as Grafana does (label values of its selector, earlier
    variables substituted, multi-value "All" as a regex): (substitutions, values found)."""
    substitutions: dict[str, str] = {}
    found: dict[str, list[str]] = {}
    for variable in load_dashboard(OVERVIEW)["templating"]["list"]:
        match = _LABEL_VALUES_QUERY.fullmatch(variable_query(variable))
        assert match, variable["name"]
        selector = substitute(match["selector"], substitutions)
        values = prometheus.api(
            f"label/{match['label']}/values", **{"match[]": selector}, start=since
        )
        found[variable["name"]] = values
        escaped = [grafana_regex_escape(v) for v in values]
        joined = "|".join(escaped)
        substitutions[variable["name"]] = f"({joined})" if len(values) > 1 else joined
    return substitutions, found


def evaluate(
    prometheus: PrometheusServer, promql: str, *, instant: bool, start: float, end: float
) -> list[float]:
    """The values Grafana would plot for ``promql`` from ``start`` to ``end`` (instant: at
    ``end``), one step per scrape."""
    if instant:
        result = prometheus.api("query", query=promql, time=end)["result"]
        return [float(series["value"][1]) for series in result]
    step = SCRAPE_MS / 1000
    result = prometheus.api("query_range", query=promql, start=start, end=end, step=step)["result"]
    return [float(value) for series in result for _, value in series["values"]]


def test_every_panel_query_returns_data_in_a_real_prometheus(live: LiveRun) -> None:
    prometheus = live.prometheus
    if prometheus is None:
        pytest.skip("no prometheus binary (Debian: apt-get install prometheus)")
    substitutions, found = variable_values(prometheus, live.started_at)
    target = live.metrics_url.removeprefix("http://").removesuffix("/metrics")
    assert found == {
        "service": [JOB],
        "instance": [target],
        "provider": [PROVIDER],
        "model": [MODEL],
    }
    end = time.time()
    substitutions |= {
        "__rate_interval": RATE_INTERVAL,
        "__interval": f"{SCRAPE_MS}ms",
        "__range": f"{math.ceil(end - live.started_at)}s",
    }
    empty = []
    all_queries = prometheus_queries()
    for query in all_queries:
        promql = substitute(query.text, substitutions)
        values = evaluate(prometheus, promql, instant=query.instant, start=live.started_at, end=end)
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{query.panel} [{query.ref_id}]: {promql} → {values[:5]}")
    assert len(all_queries) >= 20
    assert not empty, "panels without data:\n" + "\n".join(empty)


def replayed_spans(record: Path) -> list[SpanView]:
    """The spans the OTel sink makes of ``record`` (the same sink as the live run)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from otel_support import feed_record

    from ddscope.exporters.otel.sdk import resource
    from ddscope.exporters.otel.sink import OtelSink

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    feed_record(OtelSink(tracer_provider, MeterProvider()), record)
    return [
        SpanView(
            s.name,
            (s.end_time or 0) - (s.start_time or 0),
            s.attributes or {},
            s.resource.attributes,
        )
        for s in exporter.get_finished_spans()
    ]


def test_traces_dashboard_finds_spans_and_attributes_of_a_real_run(live: LiveRun) -> None:
    from ddscope.record.jsonl import RunReader

    reader = RunReader(live.out / "run.jsonl")
    run_id = reader.header.run_id
    reader.close()
    spans = replayed_spans(live.out / "run.jsonl")
    substitutions = {"service": "ddscope", "run_id": run_id, "min_task_duration": "10ms"}
    defaults = {v["name"]: v["query"] for v in load_dashboard(TRACES)["templating"]["list"]}
    assert defaults["service"] == substitutions["service"]  # the default OTEL_SERVICE_NAME
    for query in queries(load_dashboard(TRACES)):
        conditions, selected = traceql_parts(substitute(query.text, substitutions))
        hits = [s for s in spans if all(matches(s, c) for c in conditions)]
        assert hits, f"{query.panel}: no span of the run matches {query.text}"
        for attribute in selected:
            key = attribute.removeprefix("span.")
            assert any(key in s.attributes for s in hits), f"{query.panel}: no {attribute}"
