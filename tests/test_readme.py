"""The README documents what the code does: every event kind, and the CI test command."""

from __future__ import annotations

from pathlib import Path

from ddscope.events import EVENT_KINDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_event_kind_is_documented() -> None:
    missing = [kind for kind in sorted(EVENT_KINDS) if f"`{kind}`" not in README]
    assert not missing, f"README.md does not document event kinds: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/pytest" in README
    assert ci.rstrip().splitlines()[-1] == ".venv/bin/pytest"


def test_the_readme_pipeline_example_is_valid() -> None:
    import yaml

    from ddscope.engine.pipeline.model import Pipeline

    section = README.split("## Pipelines", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    pipeline = Pipeline.from_dict(yaml.safe_load(block), source="README.md")
    assert pipeline.topological_order() == ["topic", "summary", "label"]
    assert pipeline.providers[0].api_key_env == "OPENAI_API_KEY"
