"""Tests of the task graph: readiness per row, inline cells, drops (pure, plain calls)."""

from __future__ import annotations

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.scheduling.tasks import ColumnPlan, RowGroup, plan_columns


def pipeline() -> Pipeline:
    return Pipeline.from_dict(
        {
            "providers": [{"name": "p", "endpoint": "http://127.0.0.1:1/v1"}],
            "models": [{"alias": "m", "provider": "p", "model": "x"}],
            "columns": [
                {"name": "topic", "type": "sampler", "sampler": "category", "values": ["a", "b"]},
                {"name": "label", "type": "expression", "expr": "T={{ topic }}"},
                {"name": "summary", "type": "llm_text", "model": "m", "prompt": "{{ label }}"},
                {"name": "both", "type": "expression", "expr": "{{ label }}/{{ summary }}"},
                {"name": "critique", "type": "llm_text", "model": "m", "prompt": "{{ both }}"},
            ],
        }
    )


def test_plans_know_dependencies_dependents_and_domains():
    plans = plan_columns(pipeline())
    assert list(plans) == ["topic", "label", "summary", "both", "critique"]
    assert plans["both"].deps == ("label", "summary")
    assert plans["label"].dependents == ("summary", "both")
    assert plans["summary"].is_model and plans["summary"].domain == "p/x"
    assert not plans["label"].is_model and plans["label"].domain is None


def test_start_computes_inline_cells_and_returns_the_ready_model_tasks():
    group = RowGroup(2, 10, 3, plan_columns(pipeline()), seed=7)
    settled = group.start()
    assert [(t.plan.name, t.row, t.row_group) for t in settled.tasks] == [
        ("summary", 10, 2),
        ("summary", 11, 2),
        ("summary", 12, 2),
    ]
    assert settled.failures == []
    for values in group.values:
        assert values["label"] == f"T={values['topic']}"
        assert "summary" not in values
    assert not group.resolved and group.completed == 0


def test_completing_a_model_cell_settles_what_it_unblocks():
    group = RowGroup(0, 0, 2, plan_columns(pipeline()), seed=0)
    group.start()
    settled = group.complete_cell(1, "summary", "S")
    assert [(t.plan.name, t.row) for t in settled.tasks] == [("critique", 1)]
    assert group.values[1]["both"] == f"{group.values[1]['label']}/S"
    assert group.complete_cell(1, "critique", "C").tasks == []
    assert group.completed == 1 and not group.resolved
    assert [row for row, _ in group.completed_rows()] == [1]


def test_dropped_rows_resolve_the_group_and_ignore_late_results():
    group = RowGroup(0, 0, 2, plan_columns(pipeline()), seed=0)
    group.start()
    assert group.drop(0, "client_error") is True
    assert group.drop(0, "client_error") is False  # once
    assert group.complete_cell(0, "summary", "late").tasks == []
    assert group.unresolved_rows() == [1]
    group.complete_cell(1, "summary", "S")
    group.complete_cell(1, "critique", "C")
    assert group.resolved and group.drop(1, "x") is False  # a completed row is not dropped
    assert group.completed_rows()[0][1]["critique"] == "C"


def test_an_inline_cell_that_cannot_render_is_a_row_failure():
    plans = plan_columns(pipeline())
    # a plan that forgot a dependency: the expression reads a cell that is not there yet
    broken = dict(plans)
    broken["label"] = ColumnPlan(
        "label",
        plans["both"].column,
        deps=("topic",),
        dependents=plans["label"].dependents,
        alias=None,
    )
    group = RowGroup(0, 0, 1, broken, seed=0)
    settled = group.start()
    assert settled.tasks == []
    [failure] = settled.failures
    assert (failure.row, failure.column, failure.reason) == (0, "label", "template_error")
    assert "label" in failure.message
