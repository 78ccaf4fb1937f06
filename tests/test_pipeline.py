from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from ddscope.engine.pipeline.model import LlmTextColumn, Pipeline
from ddscope.errors import ConfigError

BASE: dict[str, Any] = {
    "name": "t",
    "providers": [
        {"name": "mock", "endpoint": "http://127.0.0.1:8000/v1", "api_key_env": "DDSCOPE_TEST_KEY"}
    ],
    "models": [{"alias": "small", "provider": "mock", "model": "m1", "max_parallel_requests": 4}],
    "columns": [
        {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
        {"name": "summary", "type": "llm_text", "model": "small", "prompt": "About {{ topic }}"},
        {
            "name": "analysis",
            "type": "llm_text",
            "model": "small",
            "prompt": "Analyse {{ summary }} on {{ topic }}",
        },
    ],
}


def _data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        Pipeline.from_dict(data, source="p.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("p.yaml: ")
    return message


def test_example_chain3_is_valid_and_ordered() -> None:
    pipeline = Pipeline.load(Path(str(files("ddscope").joinpath("examples/chain3.yaml"))))
    assert pipeline.topological_order() == ["topic", "summary", "analysis", "rewrite"]
    assert pipeline.dependencies("rewrite") == ["analysis"]
    assert [c.name for c in pipeline.columns if isinstance(c, LlmTextColumn)] == [
        "summary",
        "analysis",
        "rewrite",
    ]
    assert len(pipeline.domains()) == 1


def test_queries_on_a_valid_pipeline() -> None:
    pipeline = Pipeline.from_dict(_data())
    assert pipeline.dependencies("analysis") == ["summary", "topic"]
    assert pipeline.dependencies("topic") == []
    alias = pipeline.model_for("summary")
    assert alias is not None and alias.domain == "mock/m1"
    assert pipeline.model_for("topic") is None
    assert pipeline.provider_for(alias).name == "mock"


def test_topological_order_follows_references_not_declaration() -> None:
    data = _data()
    data["columns"] = list(reversed(data["columns"]))
    assert Pipeline.from_dict(data).topological_order() == ["topic", "summary", "analysis"]


def test_domains_take_the_largest_limit_among_aliases_of_one_model() -> None:
    data = _data()
    data["models"].append(
        {"alias": "big", "provider": "mock", "model": "m1", "max_parallel_requests": 9}
    )
    data["models"].append({"alias": "unused", "provider": "mock", "model": "m2"})
    data["columns"][2]["model"] = "big"
    domains = Pipeline.from_dict(data).domains()
    assert list(domains) == ["mock/m1"]
    assert domains["mock/m1"].max_parallel_requests == 9


def test_unknown_column_in_template_names_field_and_column() -> None:
    data = _data()
    data["columns"][2]["prompt"] = "Analyse {{ sumary }}"
    message = _error(data)
    assert "columns[2].prompt" in message
    assert "unknown column 'sumary'" in message


def test_cycle_names_the_columns() -> None:
    data = _data()
    data["columns"][1]["prompt"] = "About {{ analysis }}"
    message = _error(data)
    assert "cycle" in message
    assert (
        "summary -> analysis -> summary" in message or "analysis -> summary -> analysis" in message
    )


def test_self_reference_is_a_cycle() -> None:
    data = _data()
    data["columns"][1]["prompt"] = "{{ summary }}"
    assert "summary -> summary" in _error(data)


def test_unknown_alias_and_unknown_provider() -> None:
    data = _data()
    data["columns"][1]["model"] = "large"
    assert "columns[1].model: unknown model alias 'large' (defined: small)" in _error(data)
    data = _data()
    data["models"][0]["provider"] = "openai"
    assert "models[0].provider: unknown provider 'openai'" in _error(data)


@pytest.mark.parametrize(
    ("section", "field", "path"),
    [
        ("columns", "name", "columns[1].name: duplicate column name 'topic'"),
        ("models", "alias", "models[1].alias: duplicate model alias name 'small'"),
        ("providers", "name", "providers[1].name: duplicate provider name 'mock'"),
    ],
)
def test_duplicate_names(section: str, field: str, path: str) -> None:
    data = _data()
    duplicate = copy.deepcopy(data[section][0])
    if section == "columns":
        data[section].insert(1, duplicate)
    else:
        data[section].append(duplicate)
    assert path in _error(data)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            {"models": [{**BASE["models"][0], "max_parallel_requests": 0}]},
            "models[0].max_parallel_requests",
        ),
        ({"models": [{**BASE["models"][0], "timeout_s": -1}]}, "models[0].timeout_s"),
        ({"run": {"buffer_size": 0}}, "run.buffer_size"),
        ({"run": {"num_records": -5}}, "run.num_records"),
        ({"run": {"row_groups_in_flight": 0}}, "run.row_groups_in_flight"),
        ({"run": {"error_rate_threshold": 1.5}}, "run.error_rate_threshold"),
    ],
)
def test_non_positive_and_out_of_range_numbers(change: dict[str, Any], path: str) -> None:
    message = _error(_data(**change))
    assert f": {path}: " in message


def test_unknown_field_lists_the_allowed_ones() -> None:
    data = _data()
    data["columns"][1]["promt"] = "x"
    message = _error(data)
    assert "columns[1].promt: unknown field" in message
    assert "prompt" in message and "(column 'summary')" in message


def test_literal_api_key_field_gets_a_hint_and_is_not_echoed() -> None:
    data = _data()
    data["providers"][0]["api_key"] = "sk-live-SECRET123"
    message = _error(data)
    assert "providers[0].api_key: unknown field" in message and "api_key_env" in message
    assert "SECRET123" not in message


def test_a_key_pasted_into_api_key_env_is_rejected_without_echo() -> None:
    data = _data()
    data["providers"][0]["api_key_env"] = "sk-live-SECRET123"
    message = _error(data)
    assert "providers[0].api_key_env" in message
    assert "SECRET123" not in message


def test_endpoint_must_be_a_url_without_credentials() -> None:
    data = _data()
    data["providers"][0]["endpoint"] = "127.0.0.1:8000"
    assert "providers[0].endpoint: must be an http(s) URL" in _error(data)
    data["providers"][0]["endpoint"] = "https://user:SECRET123@example.com/v1"
    message = _error(data)
    assert "providers[0].endpoint: must not contain credentials" in message
    assert "SECRET123" not in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://example.com/v1?api-key=sk-SECRET123",
        "https://example.com/v1#sk-SECRET123",
        "https://example.com/v1?",
    ],
)
def test_endpoint_must_not_carry_a_query_string_where_a_key_could_hide(endpoint: str) -> None:
    data = _data()
    data["providers"][0]["endpoint"] = endpoint
    message = _error(data)
    assert "providers[0].endpoint: must not have a query string or fragment" in message
    assert "SECRET123" not in message


def test_endpoint_port_must_be_a_number_and_is_not_echoed() -> None:
    data = _data()
    data["providers"][0]["endpoint"] = "http://127.0.0.1:sk-SECRET123/v1"
    message = _error(data)
    assert "providers[0].endpoint: has a port that is not a number" in message
    assert "SECRET123" not in message
    data["providers"][0]["endpoint"] = "http://127.0.0.1:70000/v1"
    assert "has a port that is not a number from 0 to 65535" in _error(data)


def test_column_type_and_sampler_checks() -> None:
    data = _data()
    del data["columns"][0]["type"]
    assert "columns[0]: missing 'type'" in _error(data)
    data = _data()
    data["columns"][0]["weights"] = [1.0]
    assert "columns[0].weights: 1 weights for 2 values" in _error(data)
    data = _data()
    data["columns"][0] = {"name": "n", "type": "sampler", "sampler": "uniform_int", "low": 1}
    assert "columns[0].high: required by uniform_int" in _error(data)
    data = _data()
    data["columns"][0]["type"] = "llm"
    assert "unknown column type 'llm'" in _error(data)


def test_missing_prompt_and_bad_column_name() -> None:
    data = _data()
    del data["columns"][1]["prompt"]
    assert "columns[1].prompt: required field is missing" in _error(data)
    data = _data()
    data["columns"][0]["name"] = "my topic"
    assert "columns[0].name" in _error(data)


def test_yaml_errors_carry_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncolumns:\n  - name: a\n    type: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: bad YAML"):
        Pipeline.load(path)
    path.write_text("name: x\nname: y\ncolumns: []\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: bad YAML: duplicate key 'name'"):
        Pipeline.load(path)


def test_field_errors_in_yaml_point_at_the_line(tmp_path: Path) -> None:
    import yaml

    data = _data()
    data["columns"][2]["prompt"] = "{{ nothing }}"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "nothing" in text)
    with pytest.raises(ConfigError) as info:
        Pipeline.load(path)
    assert str(info.value).startswith(f"{path}:{line}: columns[2].prompt: unknown column")


def test_json_files_load_and_report_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_data(), indent=1))
    assert Pipeline.load(path).name == "t"
    path.write_text('{"name": "x",\n "columns": [}')
    with pytest.raises(ConfigError, match=r"p\.json:2: bad JSON"):
        Pipeline.load(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        Pipeline.load(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Pipeline.load(path)


def test_overrides_are_validated_and_leave_the_original_alone() -> None:
    pipeline = Pipeline.from_dict(_data())
    changed = pipeline.with_overrides(num_records=7, buffer_size=None, breaker_policy="wait")
    assert (changed.run.num_records, changed.run.breaker_policy) == (7, "wait")
    assert pipeline.run.num_records == 10
    assert changed.topological_order() == pipeline.topological_order()
    with pytest.raises(ConfigError, match=r"run\.num_records"):
        pipeline.with_overrides(num_records=0)
    with pytest.raises(ConfigError, match=r"run\.records: unknown field"):
        pipeline.with_overrides(records=3)


def test_with_endpoint_replaces_one_provider() -> None:
    pipeline = Pipeline.from_dict(_data()).with_endpoint("mock", "http://127.0.0.1:9/v1/")
    assert pipeline.providers[0].endpoint == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="unknown provider 'other'"):
        pipeline.with_endpoint("other", "http://127.0.0.1:9/v1")


def test_header_describes_the_pipeline_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-DO-NOT-LEAK-42"
    monkeypatch.setenv("DDSCOPE_TEST_KEY", secret)
    pipeline = Pipeline.from_dict(_data())
    header = pipeline.header("run-1", 123, "0.1.0")
    assert [c.name for c in header.columns] == ["topic", "summary", "analysis"]
    assert header.columns[2].depends_on == ["summary", "topic"]
    assert header.columns[1].domain == "mock/m1"
    domain = header.domains[0]
    assert (domain.server_address, domain.server_port) == ("127.0.0.1", 8000)
    assert domain.api_key_env == "DDSCOPE_TEST_KEY"
    assert header.settings["buffer_size"] == 10
    for text in (header.model_dump_json(by_alias=True), repr(pipeline), str(pipeline)):
        assert secret not in text
