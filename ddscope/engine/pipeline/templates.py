"""Prompt and expression templates: ``{{ name }}`` placeholders over a row's columns.

Deliberately tiny (no Jinja): a template is literal text plus placeholders that name a column,
so the pipeline can read a column's dependencies straight from its template and check them
before the run. A ``{{`` that does not open a valid ``{{ name }}`` placeholder is an error rather
than literal text, so a typo such as ``{{ topic }`` is caught at load time, not sent to a model.

Templates are parsed once and cached; rendering a cell is a join over the parsed parts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from ddscope.errors import TemplateError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{\{\s*(" + _NAME + r")\s*\}\}")
NAME_PATTERN = re.compile(_NAME + r"\Z")

# A parsed template alternates literal text and column names: (text, name, text, name, ..., text)
_Parsed = tuple[tuple[str, ...], tuple[str, ...]]


@functools.lru_cache(maxsize=1024)
def _parse(template: str) -> _Parsed:
    texts: list[str] = []
    names: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        _reject_stray_braces(template, pos, match.start())
        texts.append(template[pos : match.start()])
        names.append(match.group(1))
        pos = match.end()
    _reject_stray_braces(template, pos, len(template))
    texts.append(template[pos:])
    return tuple(texts), tuple(names)


def _reject_stray_braces(template: str, start: int, end: int) -> None:
    stray = template.find("{{", start, end)
    if stray >= 0:
        snippet = template[stray : stray + 24].split("\n")[0]
        raise TemplateError(
            f"malformed placeholder at character {stray}: {snippet!r} "
            "(expected {{ column_name }})"
        )


def template_fields(template: str) -> list[str]:
    """Column names the template reads, in first-use order, without repeats.

    Raises :class:`~ddscope.errors.TemplateError` for a malformed placeholder.
    """
    return list(dict.fromkeys(_parse(template)[1]))


def render(template: str, row: Mapping[str, object]) -> str:
    """Fills the placeholders from ``row``. A missing column raises TemplateError naming it."""
    texts, names = _parse(template)
    if not names:
        return template
    parts: list[str] = [texts[0]]
    for name, text in zip(names, texts[1:], strict=True):
        try:
            value = row[name]
        except KeyError:
            raise TemplateError(
                f"template reads column {name!r}, which has no value in this row"
            ) from None
        parts.append(value if isinstance(value, str) else str(value))
        parts.append(text)
    return "".join(parts)
