"""Reading pipeline files and turning validation failures into one-line ConfigErrors.

The message format is ``file:line: field.path: problem``. For YAML (and JSON, which YAML
parses too) the line is found by walking the parsed node tree along the failing field's path,
so the user lands on the offending line. Duplicate keys are rejected instead of silently keeping
the last one, as PyYAML and ``json`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ddscope.engine.pipeline.parts import (
    COLUMN_TYPES,
    Loc,
    ModelAlias,
    PipelineProblem,
    Provider,
    RunSettings,
)
from ddscope.errors import ConfigError

# The pipeline model class is passed in (not imported) so this module does not import the one that
# imports it.
PipelineT = TypeVar("PipelineT", bound=BaseModel)
LineFinder = Callable[[Loc], int | None]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_pipeline(cls: type[PipelineT], path: Path) -> PipelineT:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if path.suffix.lower() == ".json":
        data = _read_json(text, path)
        node = _compose_quietly(text)
    else:
        data, node = _read_yaml(text, path)
    return validate_pipeline(cls, data, str(path), lambda loc: _line_of(node, loc))


def _read_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError(f"{where}: bad YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: bad YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
    return data, node


def _read_json(text: str, path: Path) -> Any:
    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise ConfigError(f"{path}: bad JSON: duplicate key {key!r}")
            found[key] = value
        return found

    try:
        return json.loads(text, object_pairs_hook=reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: bad JSON: {exc.msg}") from None


def _compose_quietly(text: str) -> yaml.Node | None:
    try:  # only for line numbers in error messages; JSON is (almost always) valid YAML
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the deepest node along ``loc`` that exists in the source."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part),
                None,
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if 0 <= part < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


# ---------------------------------------------------------------------------------------------
# Validation and messages


def validate_pipeline(
    cls: type[PipelineT], data: Any, source: str, line_of: LineFinder | None = None
) -> PipelineT:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with providers, models, columns and "
            f"run, got {type(data).__name__}"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        loc, problem = describe(exc, data, cls)
        line = line_of(loc) if line_of else None
        where = f"{source}:{line}" if line else source
        path = format_loc(loc)
        raise ConfigError(
            f"{where}: {path}: {problem}" if path else f"{where}: {problem}"
        ) from None


def validate_run_settings(values: dict[str, Any]) -> RunSettings:
    try:
        return RunSettings.model_validate(values)
    except ValidationError as exc:
        loc, problem = describe(exc, values, RunSettings)
        raise ConfigError(f"{format_loc(('run', *loc))}: {problem}") from None


def validate_provider(values: dict[str, Any]) -> Provider:
    try:
        return Provider.model_validate(values)
    except ValidationError as exc:
        loc, problem = describe(exc, values, Provider)
        raise ConfigError(f"{format_loc(('providers', *loc))}: {problem}") from None


def format_loc(loc: Loc) -> str:
    """``("columns", 1, "prompt")`` → ``columns[1].prompt``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def describe(exc: ValidationError, data: Any, root: type[BaseModel]) -> tuple[Loc, str]:
    """The first error's field path (union tags removed) and a sentence for it; ``root`` is the
    model that was validated (its fields are the allowed ones at the top level)."""
    errors = exc.errors()
    err = errors[0]
    raw_loc: Loc = tuple(err["loc"])
    loc = _without_union_tag(raw_loc)
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, PipelineProblem):
        return (*loc, *cause.loc), cause.problem
    problem = _problem_text(err, raw_loc, root)
    if len(loc) >= 2 and loc[0] == "columns" and isinstance(loc[1], int):
        name = _column_name(data, loc[1])
        if name:
            problem += f" (column {name!r})"
    return loc, problem


def _without_union_tag(loc: Loc) -> Loc:
    # pydantic puts the discriminator's value after the list index: columns.1.llm_text.prompt
    if len(loc) >= 3 and loc[0] == "columns" and isinstance(loc[1], int) and loc[2] in COLUMN_TYPES:
        return (*loc[:2], *loc[3:])
    return loc


def _problem_text(err: Any, raw_loc: Loc, root: type[BaseModel]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        hint = "; use api_key_env: NAME_OF_ENV_VAR" if raw_loc[-1] == "api_key" else ""
        allowed = _allowed_fields(raw_loc, root)
        return "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "") + hint
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_not_found":
        return "missing 'type' (one of: sampler, llm_text, expression)"
    if kind == "union_tag_invalid":
        return f"unknown column type {ctx.get('tag')!r} (one of: sampler, llm_text, expression)"
    return str(err["msg"]).removeprefix("Value error, ")


def _allowed_fields(raw_loc: Loc, root: type[BaseModel]) -> list[str]:
    parent = raw_loc[:-1]
    model: type[BaseModel] | None = None
    if parent == ():
        model = root
    elif parent == ("run",):
        model = RunSettings
    elif len(parent) == 2 and parent[0] in ("providers", "models"):
        model = Provider if parent[0] == "providers" else ModelAlias
    elif len(parent) == 3 and parent[0] == "columns":
        model = COLUMN_TYPES.get(str(parent[2]))
    return list(model.model_fields) if model else []


def _column_name(data: Any, index: int) -> str | None:
    try:
        name = data["columns"][index]["name"]
    except (KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None
