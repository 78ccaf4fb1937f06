"""The live adapter on the REAL DataDesigner (``pip install data-designer``, async engine) against
the project's mock endpoint on 127.0.0.1: the record's health verdict, a Perfetto trace with a
slice per task lease and per attempt that Perfetto's trace processor loads, spans at a real
OTLP receiver; and the adapter's promises (never raises into DataDesigner, unhooks on exit).

Skipped where ``data_designer`` is not installed (CI runs this module in a second venv with
``ddscope[datadesigner]``; see .ci/run). DataDesigner tries to download a tokenizer at the end of
``create()`` (column statistics) and only logs a warning offline: that is expected here.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["DATA_DESIGNER_ASYNC_ENGINE"] = "1"  # before DataDesigner reads it
pytest.importorskip(
    "data_designer", reason="data-designer is not installed (ddscope[datadesigner])"
)

import data_designer.config as dd
from data_designer.config.run_config import RunConfig
from data_designer.engine import observability
from data_designer.interface.data_designer import DataDesigner
from datadesigner_support import IMPORT_ERRORS_SQL, trace_processor_query
from otlp_receiver import GrpcReceiver

from ddscope.events import ListSink
from ddscope.exporters.health import analyze
from ddscope.exporters.trace.perfetto import export_perfetto
from ddscope.integrations.datadesigner import observe
from ddscope.integrations.datadesigner.translate import RunTranslator
from ddscope.mock import MockServer
from ddscope.record.jsonl import read_events

LEASE_SLICES = (
    "select count(*) as n from slice "
    "where name in ('topic', 'summary', 'analysis') or name glob '* · salvage *'"
)
SALVAGE_SLICES = "select count(*) as n from slice where name glob '* · salvage *'"
ATTEMPT_SLICES = "select name, count(*) as n from slice where name glob 'chat *' group by name"


@pytest.fixture
def endpoint() -> Iterator[MockServer]:
    with MockServer(latency_ms=20, models=("mock",)) as server:
        yield server


def _designer(server: MockServer, tmp_path: Path) -> DataDesigner:
    provider = dd.ModelProvider(
        name="mock", endpoint=server.base_url, provider_type="openai", api_key="sk-test"
    )
    designer = DataDesigner(artifact_path=tmp_path / "artifacts", model_providers=[provider])
    designer.set_run_config(RunConfig(buffer_size=5))
    return designer


def _config() -> Any:
    params = dd.ChatCompletionInferenceParams(max_parallel_requests=4)
    model = dd.ModelConfig(
        alias="m",
        model="mock",
        provider="mock",
        inference_parameters=params,
        skip_health_check=True,
    )
    builder = dd.DataDesignerConfigBuilder(model_configs=[model])
    category = dd.CategorySamplerParams(values=["a", "b", "c"])
    builder.add_column(
        dd.SamplerColumnConfig(name="topic", sampler_type="category", params=category)
    )
    builder.add_column(
        dd.LLMTextColumnConfig(name="summary", prompt="Sum {{ topic }}", model_alias="m")
    )
    builder.add_column(
        dd.LLMTextColumnConfig(name="analysis", prompt="On {{ summary }}", model_alias="m")
    )
    return builder


def _unhooked(designer: DataDesigner) -> bool:
    return "_create_resource_provider" not in vars(designer) and not (
        observability._request_event_callbacks
    )


def _run(server: MockServer, tmp_path: Path, receiver: GrpcReceiver) -> tuple[Path, Any]:
    designer = _designer(server, tmp_path)
    record = tmp_path / "ddscope" / "run.jsonl"
    with observe(designer, record, otlp_endpoint=receiver.endpoint, otlp_protocol="grpc") as live:
        result = designer.create(_config(), num_records=10, dataset_name="ds")
    assert len(result.load_dataset()) == 10
    assert live.errors == 0 and live.records == [record] and live.requests_without_task == 0
    assert _unhooked(designer)
    return record, live


def _trace_counts(tmp_path: Path, record: Path) -> tuple[int, dict[str, int]]:
    trace = tmp_path / "run.pftrace"
    export_perfetto(record, trace)
    assert trace_processor_query(trace, IMPORT_ERRORS_SQL) == []
    leases = int(trace_processor_query(trace, LEASE_SLICES)[0]["n"])
    attempts = {row["name"]: int(row["n"]) for row in trace_processor_query(trace, ATTEMPT_SLICES)}
    return leases, attempts


def test_a_healthy_datadesigner_run_is_recorded_traced_and_exported(
    endpoint: MockServer, tmp_path: Path
) -> None:
    with GrpcReceiver() as receiver:
        record, _ = _run(endpoint, tmp_path, receiver)
        sent = endpoint.stats().requests
        assert receiver.wait_for(lambda r: Counter(r.span_names())["chat mock"] >= sent)
    header, events = read_events(record)
    kinds = Counter(e.kind for e in events)
    assert header.domains[0].domain == "mock/mock" and sent == 20
    assert kinds["attempt_finished"] == sent and kinds["lease_started"] == kinds["lease_finished"]
    # every cell's row recovered from DataDesigner's task id; every attempt tied to its lease
    leased = {e.task_id: e.lease_id for e in events if e.kind == "lease_started"}
    assert set(leased) == {f"{c}:{r}" for c in ("summary", "analysis") for r in range(10)} | {
        "topic:rg0",
        "topic:rg1",
    }
    assert all(leased[e.task_id] == e.lease_id for e in events if e.kind == "attempt_started")
    assert header.settings["columns"][2] == {
        "name": "analysis",
        "type": "llm_text",
        "domain": "mock/mock",
        "depends_on": ["summary"],
    }
    report = analyze(record)
    assert report.verdict == "healthy", report.findings
    assert report.totals.outcome == "complete" and report.totals.rows_completed == 10
    leases, attempts = _trace_counts(tmp_path, record)
    assert leases == kinds["lease_started"] and attempts == {"chat ok": sent}
    names = Counter(receiver.span_names())
    assert names["run"] == 1 and names["task summary"] == names["task analysis"] == 10
    assert names["chat mock"] == sent and names["request.wait"] == sent


def test_a_run_with_429s_counts_every_429_and_is_not_healthy(
    endpoint: MockServer, tmp_path: Path
) -> None:
    endpoint.update(rate_limit_k=3, rate_limit_n=10, retry_after="1")
    with GrpcReceiver() as receiver:
        record, _ = _run(endpoint, tmp_path, receiver)
        stats = endpoint.stats()
        assert receiver.wait_for(lambda r: Counter(r.span_names())["chat mock"] >= stats.requests)
    assert stats.rate_limited > 0
    doc = analyze(record).to_json()
    assert doc["verdict"] != "healthy"
    assert "rate_limited" in {f["code"] for f in doc["findings"]}
    domain = doc["domains"][0]
    assert domain["attempts"] == {"ok": stats.ok, "rate_limited": stats.rate_limited}
    assert domain["cooldowns"]["count"] >= 1
    assert doc["scheduler"]["tasks_deferred"] == {"rate_limited": stats.rate_limited}
    leases, attempts = _trace_counts(tmp_path, record)
    assert attempts == {"chat ok": stats.ok, "chat 429": stats.rate_limited}
    assert leases == stats.requests + 2  # one lease per attempt, plus a sampler lease per group
    trace = tmp_path / "run.pftrace"
    salvage = int(trace_processor_query(trace, SALVAGE_SLICES)[0]["n"])
    assert salvage == stats.rate_limited  # every 429'd task ran again, labelled as a salvage re-run
    spans = receiver.spans()
    assert sum(1 for s in spans if s.name == "chat mock") == stats.requests
    assert any(s.name == "cooldown" for s in spans)


def test_the_adapter_never_raises_into_datadesigner_and_unhooks(
    endpoint: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: RunTranslator, event: Any) -> Any:
        raise RuntimeError("translation bug")

    monkeypatch.setattr(RunTranslator, "scheduler", broken)
    designer = _designer(endpoint, tmp_path)
    with observe(designer, tmp_path / "run.jsonl", sinks=[ListSink()]) as live:
        result = designer.create(_config(), num_records=5, dataset_name="ds")
    assert len(result.load_dataset()) == 5  # DataDesigner did its job regardless
    assert live.errors > 0 and _unhooked(designer)


def test_the_adapter_unhooks_when_the_block_raises(endpoint: MockServer, tmp_path: Path) -> None:
    designer = _designer(endpoint, tmp_path)
    sink = ListSink()
    with (
        pytest.raises(KeyError, match="boom"),
        observe(designer, tmp_path / "run.jsonl", sinks=[sink]),
    ):
        designer.create(_config(), num_records=5, dataset_name="ds")
        raise KeyError("boom")
    assert _unhooked(designer)
    assert sink.closed and sink.of_kind("run_finished")[0].outcome == "complete"


def test_preview_is_observed_too(endpoint: MockServer, tmp_path: Path) -> None:
    designer = _designer(endpoint, tmp_path)
    sink = ListSink()
    with observe(designer, tmp_path / "run.jsonl", sinks=[sink]) as live:
        preview = designer.preview(_config(), num_records=4)
    assert len(preview.dataset) == 4 and live.errors == 0 and _unhooked(designer)
    finished = sink.of_kind("run_finished")
    assert finished and finished[0].outcome == "complete"
    assert len(sink.of_kind("attempt_finished")) == endpoint.stats().requests == 8


class _Scraper:
    """A sink that reads the Prometheus endpoint when the run finishes (while it is up)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.text = ""

    def open(self, header: Any) -> None:
        pass

    def handle(self, event: Any) -> None:
        if event.kind == "run_finished":
            with urllib.request.urlopen(self.url, timeout=10) as response:
                self.text = response.read().decode()

    def close(self) -> None:
        pass


def test_the_prometheus_endpoint_serves_a_live_datadesigner_run(
    endpoint: MockServer, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scraper = _Scraper(port)
    designer = _designer(endpoint, tmp_path)
    with observe(designer, tmp_path / "run.jsonl", prometheus_port=port, sinks=[scraper]) as live:
        designer.create(_config(), num_records=5, dataset_name="ds")
    assert live.errors == 0
    attempts = [
        line
        for line in scraper.text.splitlines()
        if line.startswith("ddscope_request_attempts_total")
    ]
    assert any('ddscope_outcome="ok"' in line and line.endswith(" 10.0") for line in attempts), (
        attempts
    )


def test_a_failed_hook_leaves_no_subscription_behind(tmp_path: Path) -> None:
    with pytest.raises(AttributeError), observe(object(), tmp_path / "run.jsonl"):
        pass  # pragma: no cover - observe() fails before the block runs
    assert not observability._request_event_callbacks
