from __future__ import annotations

import pytest

from ddscope.engine.pipeline.templates import render, template_fields
from ddscope.errors import TemplateError


def test_fields_in_first_use_order_without_repeats() -> None:
    template = "{{ b }} and {{a}} then {{  b  }} and {{ c_1 }}"
    assert template_fields(template) == ["b", "a", "c_1"]


def test_text_without_placeholders_has_no_fields_and_renders_unchanged() -> None:
    text = 'Reply as JSON: {"answer": 1} with {single} braces'
    assert template_fields(text) == []
    assert render(text, {}) == text


def test_render_fills_values_and_stringifies_non_text() -> None:
    row = {"topic": "tides", "n": 3, "x": 0.5}
    assert render("About {{ topic }}: {{n}} points, weight {{ x }}.", row) == (
        "About tides: 3 points, weight 0.5."
    )


def test_render_repeats_a_column_and_keeps_surrounding_text() -> None:
    assert render("[{{ a }}|{{ a }}]", {"a": "x"}) == "[x|x]"


def test_render_names_the_missing_column() -> None:
    with pytest.raises(TemplateError, match="'summary'"):
        render("Analyse {{ summary }}", {"topic": "a"})


@pytest.mark.parametrize("template", ["{{ topic }", "{{ 1topic }}", "{{ a b }}", "x {{"])
def test_malformed_placeholders_are_errors(template: str) -> None:
    with pytest.raises(TemplateError, match="malformed placeholder"):
        template_fields(template)
