"""Pipeline configuration: providers, model aliases, columns (a DAG) and run settings.

Load with :meth:`Pipeline.load` (YAML or JSON) or :meth:`Pipeline.from_dict`. Every problem
becomes one :class:`~ddscope.errors.ConfigError` line, ``file:line: field.path: problem``
(the line when the source is a file), e.g.::

    chain3.yaml:21: columns[2].prompt: unknown column 'sumary' in {{ sumary }}

The parts (providers, model aliases, columns, run settings) and their field checks are in
:mod:`ddscope.engine.pipeline.parts`; the checks across parts (duplicate names, unknown
aliases/providers/columns, cycles) run in :meth:`Pipeline._check`. Reading files and formatting
errors live in :mod:`ddscope.engine.pipeline.source`.

Secrets: a provider names the *environment variable* holding its API key (``api_key_env``);
the key itself is read by the model client at run time and never stored here, so no repr,
header or event can carry it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, model_validator

from ddscope import events
from ddscope.engine.pipeline.parts import (
    COLUMN_TYPES,
    Column,
    ConfigModel,
    ExpressionColumn,
    LlmTextColumn,
    Loc,
    ModelAlias,
    PipelineProblem,
    Provider,
    RunSettings,
    SamplerColumn,
)
from ddscope.engine.pipeline.source import (
    load_pipeline,
    validate_pipeline,
    validate_provider,
    validate_run_settings,
)
from ddscope.engine.pipeline.templates import template_fields
from ddscope.errors import ConfigError, TemplateError

__all__ = [
    "COLUMN_TYPES",
    "Column",
    "ExpressionColumn",
    "LlmTextColumn",
    "ModelAlias",
    "Pipeline",
    "PipelineProblem",
    "Provider",
    "RunSettings",
    "SamplerColumn",
]


class Pipeline(ConfigModel):
    name: str = "pipeline"
    providers: list[Provider] = Field(default_factory=list)
    models: list[ModelAlias] = Field(default_factory=list)
    columns: list[Column] = Field(min_length=1)
    run: RunSettings = Field(default_factory=RunSettings)

    _deps: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    _order: list[str] = PrivateAttr(default_factory=list)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        """Reads a YAML (.yaml/.yml) or JSON (.json) file; ConfigError names file, line, field."""
        return load_pipeline(cls, Path(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Pipeline:
        return validate_pipeline(cls, data, source)

    # -- cross-field checks ----------------------------------------------------------------

    @model_validator(mode="after")
    def _check(self) -> Pipeline:
        _unique(((p.name for p in self.providers)), "providers", "name", "provider")
        _unique(((m.alias for m in self.models)), "models", "alias", "model alias")
        _unique(((c.name for c in self.columns)), "columns", "name", "column")
        providers = [p.name for p in self.providers]
        for i, alias in enumerate(self.models):
            _known(alias.provider, providers, ("models", i, "provider"), "provider")
        aliases = [m.alias for m in self.models]
        names = [c.name for c in self.columns]
        for i, column in enumerate(self.columns):
            if isinstance(column, LlmTextColumn):
                _known(column.model, aliases, ("columns", i, "model"), "model alias")
            self._deps[column.name] = _column_dependencies(column, i, names)
        self._order[:] = _topological_order(names, self._deps)
        return self

    # -- queries ---------------------------------------------------------------------------

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"no column named {name!r}")

    def dependencies(self, name: str) -> list[str]:
        """The columns that ``name``'s templates read."""
        return list(self._deps[name])

    def topological_order(self) -> list[str]:
        """Column names, every column after the columns it reads (declaration order on ties)."""
        return list(self._order)

    def model_for(self, column_name: str) -> ModelAlias | None:
        column = self.column(column_name)
        if not isinstance(column, LlmTextColumn):
            return None
        return next(m for m in self.models if m.alias == column.model)

    def provider_for(self, alias: ModelAlias) -> Provider:
        return next(p for p in self.providers if p.name == alias.provider)

    def domains(self) -> dict[str, ModelAlias]:
        """Domains used by llm_text columns → the alias whose limits apply (the largest
        ``max_parallel_requests`` when several aliases share a provider/model)."""
        used = {c.model for c in self.columns if isinstance(c, LlmTextColumn)}
        found: dict[str, ModelAlias] = {}
        for alias in self.models:
            if alias.alias not in used:
                continue
            best = found.get(alias.domain)
            if best is None or alias.max_parallel_requests > best.max_parallel_requests:
                found[alias.domain] = alias
        return found

    # -- derived pipelines -----------------------------------------------------------------

    def with_overrides(self, **run_fields: Any) -> Pipeline:
        """A copy with run settings replaced (``None`` values are ignored), validated."""
        changes = {k: v for k, v in run_fields.items() if v is not None}
        if not changes:
            return self
        run = validate_run_settings({**self.run.model_dump(), **changes})
        return self.model_copy(update={"run": run})

    def with_endpoint(self, provider: str, endpoint: str) -> Pipeline:
        """A copy with one provider's endpoint replaced (``ddtrace demo`` points at its mock)."""
        if provider not in {p.name for p in self.providers}:
            raise ConfigError(f"providers: unknown provider {provider!r}")
        providers = [
            validate_provider({**p.model_dump(), "endpoint": endpoint}) if p.name == provider else p
            for p in self.providers
        ]
        return self.model_copy(update={"providers": providers})

    def header(
        self, run_id: str, started_at_unix_ns: int, ddscope_version: str
    ) -> events.RunHeader:
        """The run record's first line: the pipeline's shape and settings, without secrets."""
        return events.RunHeader(
            ddscope_version=ddscope_version,
            run_id=run_id,
            started_at_unix_ns=started_at_unix_ns,
            pipeline_name=self.name,
            num_records=self.run.num_records,
            buffer_size=self.run.buffer_size,
            columns=[self._column_info(c) for c in self.columns],
            domains=[self._domain_info(a) for a in self.domains().values()],
            settings=self.run.model_dump(mode="json"),
            record_text=self.run.record_text,
        )

    def _column_info(self, column: Column) -> events.ColumnInfo:
        alias = self.model_for(column.name)
        return events.ColumnInfo(
            name=column.name,
            type=column.type,
            model_alias=alias.alias if alias else None,
            domain=alias.domain if alias else None,
            depends_on=self.dependencies(column.name),
        )

    def _domain_info(self, alias: ModelAlias) -> events.DomainInfo:
        provider = self.provider_for(alias)
        url = urlsplit(provider.endpoint)
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        return events.DomainInfo(
            domain=alias.domain,
            provider=provider.name,
            model=alias.model,
            server_address=url.hostname,
            server_port=port,
            max_parallel_requests=alias.max_parallel_requests,
            api_key_env=provider.api_key_env,
        )


# ---------------------------------------------------------------------------------------------
# Cross-field checks: each raises one PipelineProblem naming the field


def _unique(names: Iterable[str], section: str, field: str, what: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise PipelineProblem(
                (section, i, field),
                f"duplicate {what} name {name!r} (also {section}[{seen[name]}])",
            )
        seen[name] = i


def _known(name: str, known: list[str], loc: Loc, what: str) -> None:
    if name not in known:
        choices = ", ".join(known) if known else "none defined"
        raise PipelineProblem(loc, f"unknown {what} {name!r} (defined: {choices})")


def _column_dependencies(column: Column, index: int, names: list[str]) -> list[str]:
    deps: list[str] = []
    for field, template in column.templates().items():
        loc: Loc = ("columns", index, field)
        try:
            fields = template_fields(template)
        except TemplateError as exc:
            raise PipelineProblem(loc, str(exc)) from None
        for ref in fields:
            if ref not in names:
                raise PipelineProblem(
                    loc, f"unknown column {ref!r} in {{{{ {ref} }}}} (columns: {', '.join(names)})"
                )
            if ref not in deps:
                deps.append(ref)
    return deps


def _topological_order(names: list[str], deps: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, picking the earliest-declared ready column, so the order is stable."""
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = next((n for n in names if n not in placed and set(deps[n]) <= placed), None)
        if ready is None:
            raise PipelineProblem(
                ("columns",),
                "cycle between columns "
                + " -> ".join(_find_cycle([n for n in names if n not in placed], deps)),
            )
        order.append(ready)
        placed.add(ready)
    return order


def _find_cycle(remaining: list[str], deps: dict[str, list[str]]) -> list[str]:
    """A cycle among columns that could not be ordered, as [a, b, ..., a]."""
    # Every remaining column reads at least one remaining column, so walking reads must repeat.
    path = [remaining[0]]
    for _ in range(len(remaining)):
        nxt = next(d for d in deps[path[-1]] if d in remaining)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
    return path  # unreachable: a walk longer than the column count has repeated a column
