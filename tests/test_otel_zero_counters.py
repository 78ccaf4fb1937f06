"""Counters are on the Prometheus pull endpoint at 0 from the moment a run opens, for every known
label set (each domain × each attempt outcome, each drop reason), so a dashboard panel shows 0
instead of "No data" and ``rate()`` has a first sample. Checked on the real pull endpoint
(``--prometheus-port``) and, when the Debian ``prometheus`` package is installed, with a real
Prometheus evaluating ``rate()`` before any event has happened."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from engine_records import engine_events
from otel_support import ENGINE_SPEC
from prometheus_client.parser import text_string_to_metric_families
from prometheus_support import PrometheusServer, free_port, wait_until

from ddscope.events import DomainInfo
from ddscope.exporters.otel.genai import Conventions
from ddscope.exporters.otel.metrics import ATTEMPT_OUTCOMES, DROP_REASONS
from ddscope.exporters.otel.sdk import OtelSdk
from ddscope.exporters.otel.sink import OtelSink

DOMAINS = [
    DomainInfo(domain=f"mock/{model}", provider="mock", model=model, max_parallel_requests=4)
    for model in ("small", "large")
]
HEADER = engine_events(ENGINE_SPEC)[0].model_copy(update={"domains": DOMAINS})
PER_DOMAIN = (
    "ddscope_request_rate_limited_total",
    "ddscope_request_admission_timeouts_total",
    "ddscope_breaker_openings_total",
    "ddscope_cooldown_time_seconds_total",
    "gen_ai_client_inference_usage_input_tokens_total",
    "gen_ai_client_inference_usage_output_tokens_total",
)
RUN_WIDE = ("ddscope_rows_completed_total", "ddscope_salvage_rounds_total")


@pytest.fixture
def opened_run() -> Iterator[str]:
    """A sink on the real pull endpoint, opened with HEADER and fed no event: its URL."""
    port = free_port()
    sdk = OtelSdk(None, "grpc", port)
    sink = OtelSink(
        sdk.tracer_provider, sdk.meter_provider, genai_conventions=Conventions(old=True, new=True)
    )
    sink.open(HEADER)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        sink.close()
        sdk.shutdown()


def samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)] from one scrape."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = httpx.get(url, timeout=5).raise_for_status().text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_every_counter_and_label_set_is_scraped_at_zero_before_any_event(opened_run: str) -> None:
    scraped = samples(opened_run)
    models = {d.model for d in DOMAINS}
    attempts = scraped["ddscope_request_attempts_total"]
    assert {
        (labels["gen_ai_request_model"], labels["ddscope_outcome"]) for labels, _ in attempts
    } == {(model, outcome) for model in models for outcome in ATTEMPT_OUTCOMES}
    drops = scraped["ddscope_rows_dropped_total"]
    assert {labels["ddscope_drop_reason"] for labels, _ in drops} == set(DROP_REASONS)
    for name in PER_DOMAIN:
        assert {labels["gen_ai_request_model"] for labels, _ in scraped[name]} == models, name
    for name in RUN_WIDE:
        assert len(scraped[name]) == 1, name
    every = [*attempts, *drops, *(s for n in PER_DOMAIN + RUN_WIDE for s in scraped[n])]
    assert all(value == 0 for _, value in every)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian package prometheus absent")
def test_rate_of_a_counter_is_zero_not_absent_in_a_real_prometheus(
    opened_run: str, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None
    target = opened_run.removeprefix("http://").removesuffix("/metrics")
    prometheus = PrometheusServer(binary, tmp_path, target=target, job="ddscope", interval_ms=250)
    try:
        prometheus.wait_ready()
        prometheus.wait_target_active()

        def rates() -> list[dict[str, object]]:
            query = "rate(ddscope_breaker_openings_total[2s])"
            result: list[dict[str, object]] = prometheus.api("query", query=query)["result"]
            return result

        # rate() needs two samples: a counter that only appears with its first event would
        # have none here, since no event ever comes.
        result = wait_until(rates, 20.0, "rate() of a counter with no event")
        assert len(result) == len(DOMAINS)
        assert all(float(series["value"][1]) == 0.0 for series in result)  # type: ignore[index]
    finally:
        prometheus.stop()
