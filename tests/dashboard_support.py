"""Helpers shared by the dashboard tests: load the Grafana dashboards, list their queries, find the
template variables and metric names in them (not a test module)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
GRAFANA = DASHBOARDS / "grafana"
COMPOSE = DASHBOARDS / "compose"
OVERVIEW = GRAFANA / "ddscope-run-overview.json"
TRACES = GRAFANA / "ddscope-traces.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"

# $name, ${name}, ${name:format} and the deprecated [[name]]; names starting with "__" are
# Grafana's own ($__rate_interval, $__range, …).
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"({_IDENT})\s*\{{")  # a metric name followed by its label matchers
_BARE_RANGE = re.compile(rf"({_IDENT})\s*\[")  # a metric name followed by a range, no matchers
_LABEL_VALUES = re.compile(rf"label_values\(\s*({_IDENT})")
# Words a PromQL expression may put right before "{" or "[" that are not metric names.
_NOT_METRICS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    text: str  # PromQL for Prometheus targets, TraceQL for Tempo targets
    datasource_uid: str
    datasource_type: str
    instant: bool = False  # Grafana runs it once at the end of the range (stat tables, bars)


def load_dashboard(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def leaf_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row (panels of collapsed rows included)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    found = []
    for panel in leaf_panels(dashboard):
        panel_source = panel.get("datasource") or {}
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel_source
            text = target.get("expr") or target.get("query") or ""
            found.append(
                Query(
                    dashboard=str(dashboard.get("uid")),
                    panel=str(panel.get("title")),
                    ref_id=str(target.get("refId")),
                    text=text,
                    datasource_uid=str(source.get("uid")),
                    datasource_type=str(source.get("type")),
                    instant=bool(target.get("instant")) and not target.get("range"),
                )
            )
    return found


def prometheus_queries() -> list[Query]:
    return [q for q in queries(load_dashboard(OVERVIEW)) if q.datasource_type == "prometheus"]


def variable_names(text: str) -> set[str]:
    """Template variables referenced in ``text``, Grafana's built-ins ("__" prefix) excluded."""
    names = {a or b or c for a, b, c in _VARIABLE.findall(text)}
    return {n for n in names if not n.startswith("__")}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every variable replaced by ``values[name]`` (KeyError if one is missing)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values[name]

    return _VARIABLE.sub(replace, text)


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression (or a ``label_values(...)`` query) reads."""
    names = set(_SELECTOR.findall(promql)) | set(_BARE_RANGE.findall(promql))
    names |= set(_LABEL_VALUES.findall(promql))
    return {n for n in names if n not in _NOT_METRICS}


def dashboard_metric_names() -> set[str]:
    """Every metric name the run-overview dashboard reads: panels and variables."""
    dashboard = load_dashboard(OVERVIEW)
    names: set[str] = set()
    for query in prometheus_queries():
        names |= metric_names(query.text)
    for variable in dashboard["templating"]["list"]:
        names |= metric_names(variable_query(variable))
    return names


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query", "")
    if isinstance(query, Mapping):
        return str(query.get("query", ""))
    return str(query)


def provisioned_datasources() -> dict[str, str]:
    """uid → type of the provisioned Grafana datasources."""
    config = load_yaml(DATASOURCES)
    return {ds["uid"]: ds["type"] for ds in config["datasources"]}


# -- TraceQL, the subset the traces dashboard uses ---------------------------------------------

_CONDITION = re.compile(
    r'^(?P<field>[\w.]+)\s*(?P<op>=~|!=|=|>)\s*(?P<value>"[^"]*"|nil|[\d.]+(?:ns|us|ms|s|m|h))$'
)
_SELECTED = re.compile(r"select\(([^)]*)\)")
_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


@dataclass(frozen=True)
class SpanView:
    """What a TraceQL condition can look at on one finished span."""

    name: str
    duration_ns: int
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]


def traceql_parts(query: str) -> tuple[list[re.Match[str]], list[str]]:
    """(conditions of the first spanset filter, attributes of ``select(...)``). Raises ValueError
    for anything outside the subset: `a && b` conditions of the forms in ``_CONDITION``."""
    body = query[query.index("{") + 1 : query.index("}")]
    conditions = []
    for text in body.split("&&"):
        match = _CONDITION.match(text.strip())
        if match is None:
            raise ValueError(f"unsupported TraceQL condition {text.strip()!r} in {query!r}")
        conditions.append(match)
    selected = _SELECTED.search(query)
    fields = [f.strip() for f in selected.group(1).split(",")] if selected else []
    return conditions, fields


def _field(span: SpanView, name: str) -> Any:
    if name == "name":
        return span.name
    if name == "duration":
        return span.duration_ns
    scope, _, key = name.partition(".")
    return {"span": span.attributes, "resource": span.resource}[scope].get(key)


def matches(span: SpanView, condition: re.Match[str]) -> bool:
    actual = _field(span, condition["field"])
    op, value = condition["op"], condition["value"]
    if value == "nil":
        return (actual is not None) == (op == "!=")
    if op == ">":
        number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
        return actual is not None and actual > float(number) * _DURATION_UNITS_NS[unit]
    expected = value.strip('"')
    if op == "=~":  # TraceQL regexes are anchored
        return actual is not None and re.fullmatch(expected, str(actual)) is not None
    return actual is not None and str(actual) == expected
