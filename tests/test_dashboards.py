"""Static checks of dashboards/: the Grafana dashboards and provisioning, the compose stack and the
collector, Prometheus and Tempo configs it mounts. Docker is not needed: these read the files.
The live checks (a real run, a real Prometheus) are in test_dashboards_prometheus.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import (
    COMPOSE,
    DASHBOARDS,
    GRAFANA,
    OVERVIEW,
    PROVIDERS,
    TRACES,
    leaf_panels,
    load_dashboard,
    load_yaml,
    metric_names,
    prometheus_queries,
    provisioned_datasources,
    queries,
    variable_names,
    variable_query,
)

DASHBOARD_FILES = [OVERVIEW, TRACES]
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "gauge", "barchart", "text"}
# Grafana dashboard JSON schema versions that current Grafana imports without a lossy migration.
MIN_SCHEMA_VERSION = 36
PINNED_IMAGE = re.compile(r"[\w./-]+:v?\d+\.\d+\.\d+")  # repository:1.2.3 or :v1.2.3


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE / "compose.yaml")
    return data


def collector() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE / "otel-collector.yaml")
    return data


def host_port(endpoint: str) -> tuple[str, int]:
    """("tempo", 4317) from "tempo:4317" or "http://tempo:3200"."""
    host, _, port = endpoint.split("://")[-1].rstrip("/").rpartition(":")
    return host, int(port)


# -- dashboards --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_importable_classic_json(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] and dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None  # a fixed id breaks provisioning
    assert dashboard["schemaVersion"] >= MIN_SCHEMA_VERSION
    panels = list(leaf_panels(dashboard))
    assert panels
    assert {p["type"] for p in panels} <= PANEL_TYPES
    nested = [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ids = Counter(p["id"] for p in dashboard["panels"] + nested)
    assert all(isinstance(i, int) for i in ids) and max(ids.values()) == 1, ids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard(path)["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_has_a_query_on_a_provisioned_datasource(path: Path) -> None:
    sources = provisioned_datasources()
    dashboard = load_dashboard(path)
    for panel in leaf_panels(dashboard):
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        source = panel["datasource"]
        assert sources.get(source["uid"]) == source["type"], f"panel {panel['title']!r}"
        for target in panel["targets"]:
            text = target.get("expr") or target.get("query")
            assert text and text.strip(), f"panel {panel['title']!r} {target['refId']}: empty"
    for query in queries(dashboard):
        assert sources.get(query.datasource_uid) == query.datasource_type, query
    for variable in dashboard["templating"]["list"]:
        if "datasource" in variable:
            uid, kind = variable["datasource"]["uid"], variable["datasource"]["type"]
            assert sources.get(uid) == kind, variable["name"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_no_dangling_template_variables(path: Path) -> None:
    dashboard = load_dashboard(path)
    defined = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(defined) == len(set(defined))
    used: set[str] = set()
    for panel in leaf_panels(dashboard):
        used |= variable_names(panel["title"])
    for query in queries(dashboard):
        used |= variable_names(query.text)
    for variable in dashboard["templating"]["list"]:
        referenced = variable_names(variable_query(variable))
        # a variable may only depend on variables defined before it (Grafana resolves in order)
        earlier = set(defined[: defined.index(variable["name"])])
        assert referenced <= earlier, f"{variable['name']} uses {referenced - earlier}"
        used |= referenced
    assert used <= set(defined), f"used but not defined: {used - set(defined)}"
    assert set(defined) <= used, f"defined but never used: {set(defined) - used}"


def test_run_overview_reads_only_ddscope_metrics_with_prometheus_names() -> None:
    for query in prometheus_queries():
        names = metric_names(query.text)
        assert names, f"{query.panel}: no metric found in {query.text!r}"
        for name in names:
            assert name.startswith(("ddscope_", "gen_ai_")), f"{query.panel}: {name}"
            assert "." not in name
        # classic histograms: quantiles come from the _bucket series, by le
        if "histogram_quantile" in query.text:
            assert "_bucket{" in query.text and "by (le)" in query.text, query.panel
        if "rate(" in query.text:
            assert "[$__rate_interval]" in query.text, query.panel


def test_run_overview_answers_the_issue_questions() -> None:
    texts = " ".join(q.text for q in prometheus_queries())
    for needed in (
        "ddscope_rows_completed_total",
        "ddscope_rows_dropped_total",
        "ddscope_drop_reason",
        "ddscope_outcome",
        "ddscope_request_rate_limited_total",
        "ddscope_request_limit",
        "ddscope_request_in_flight",
        "ddscope_request_waiters",
        "ddscope_cooldown_time_seconds_total",
        "ddscope_request_wait_duration_seconds_bucket",
        "gen_ai_client_inference_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",  # the old GenAI name, as a fallback
        "ddscope_queue_depth",
        "ddscope_breaker_openings_total",
        "gen_ai_client_inference_usage_input_tokens_total",
        "gen_ai_client_inference_usage_output_tokens_total",
        "gen_ai_client_token_usage",
    ):
        assert needed in texts, needed
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in texts
    variables = {v["name"] for v in load_dashboard(OVERVIEW)["templating"]["list"]}
    assert {"service", "provider", "model"} <= variables


def test_traces_dashboard_searches_tempo_by_run_id_slow_tasks_and_errors() -> None:
    texts = [q.text for q in queries(load_dashboard(TRACES))]
    assert all(q.datasource_type == "tempo" for q in queries(load_dashboard(TRACES)))
    assert '{ span.ddscope.run_id = "$run_id" }' in texts
    assert any('name =~ "task' in t and "duration >" in t for t in texts)
    assert any("span.error.type != nil" in t for t in texts)
    for text in texts:
        assert text.count("{") == text.count("}") and text.count("(") == text.count(")")


# -- provisioning ------------------------------------------------------------------------------


def test_datasources_have_fixed_unique_uids_and_compose_hosts() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yaml")
    uids = [ds["uid"] for ds in config["datasources"]]
    assert len(uids) == len(set(uids))
    assert {ds["type"] for ds in config["datasources"]} == {"prometheus", "tempo", "jaeger"}
    services = compose()["services"]
    for ds in config["datasources"]:
        host, _port = host_port(ds["url"])
        assert host in services, f"datasource {ds['name']} points at unknown host {host}"
        # links between datasources (Tempo → Prometheus for traces-to-metrics) use known uids
        for link in ds.get("jsonData", {}).values():
            if isinstance(link, dict) and "datasourceUid" in link:
                assert link["datasourceUid"] in uids, f"{ds['name']}: {link['datasourceUid']}"


def test_dashboard_provider_path_is_the_mounted_dashboards_folder() -> None:
    provider = load_yaml(PROVIDERS)["providers"][0]
    assert provider["type"] == "file"
    mounts = _mounts(compose()["services"]["grafana"])
    assert mounts[provider["options"]["path"]] == GRAFANA.resolve()
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    for path in DASHBOARD_FILES:
        assert path.parent == GRAFANA  # the provider loads *.json from that folder


# -- compose stack -----------------------------------------------------------------------------


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a service's bind mounts (host paths resolved)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE / source).resolve()
    return mounts


def test_compose_pins_images_and_binds_every_port_to_loopback() -> None:
    services = compose()["services"]
    assert set(services) == {"otel-collector", "tempo", "jaeger", "prometheus", "grafana"}
    for name, service in services.items():
        assert PINNED_IMAGE.fullmatch(service["image"]), f"{name}: pin the image version"
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
        for dependency in service.get("depends_on", []):
            assert dependency in services


def test_compose_mounts_exist_and_commands_use_them() -> None:
    for name, service in compose()["services"].items():
        mounts = _mounts(service)
        for source in mounts.values():
            assert source.exists(), f"{name}: {source} does not exist"
            assert DASHBOARDS.resolve() in source.parents or source == DASHBOARDS.resolve()
        for arg in service.get("command", []):
            if "config" in arg and "=" in arg:
                assert arg.split("=", 1)[1] in mounts, f"{name}: {arg} is not mounted"


def test_collector_pipelines_use_defined_components_only() -> None:
    config = collector()
    service = config["service"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in service["pipelines"].values():
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in config.get(kind, {}), f"{component}: not in {kind}"
                used[kind].add(component)
    for kind, names in used.items():
        defined = set(config.get(kind, {}))
        assert defined == names, f"defined but unused {kind}: {defined - names}"
    assert set(service.get("extensions", [])) == set(config.get("extensions", {}))
    assert set(service["pipelines"]) == {"traces", "metrics"}


def test_collector_listens_where_compose_publishes_and_sends_where_backends_listen() -> None:
    config = collector()
    services = compose()["services"]
    published = {p.split(":")[2] for p in services["otel-collector"]["ports"]}
    for protocol in ("grpc", "http"):
        endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
        host, port = host_port(endpoint)
        assert host == "0.0.0.0" and str(port) in published  # reachable through the port mapping
    tempo_grpc = load_yaml(COMPOSE / "tempo.yaml")["distributor"]["receivers"]["otlp"]
    tempo_port = host_port(tempo_grpc["protocols"]["grpc"]["endpoint"])[1]
    exporters = config["exporters"]
    assert host_port(exporters["otlp_grpc/tempo"]["endpoint"]) == ("tempo", tempo_port)
    assert host_port(exporters["otlp_grpc/jaeger"]["endpoint"]) == ("jaeger", 4317)
    for name in ("otlp_grpc/tempo", "otlp_grpc/jaeger"):
        assert exporters[name]["tls"]["insecure"] is True  # plain gRPC inside the network
    prometheus_port = host_port(exporters["prometheus"]["endpoint"])[1]
    scrape = load_yaml(COMPOSE / "prometheus.yml")["scrape_configs"]
    targets = [t for job in scrape for sc in job["static_configs"] for t in sc["targets"]]
    assert f"otel-collector:{prometheus_port}" in targets
    assert all(job.get("honor_labels") for job in scrape)  # keep job = service.name


def test_grafana_prometheus_datasource_interval_matches_the_scrape_interval() -> None:
    prometheus = load_yaml(COMPOSE / "prometheus.yml")
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yaml")
    (source,) = [ds for ds in config["datasources"] if ds["type"] == "prometheus"]
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_gives_the_commands_and_every_published_port() -> None:
    readme = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
    assert "docker compose -f dashboards/compose/compose.yaml up -d" in readme
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 ddtrace demo" in readme
    for service in compose()["services"].values():
        for port in service.get("ports", []):
            assert port.split(":")[1] in readme, port
    for panel in leaf_panels(load_dashboard(OVERVIEW)):
        assert panel["title"] in readme, f"README does not explain panel {panel['title']!r}"
