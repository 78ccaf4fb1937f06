"""Pipeline configuration: the models that are the one source of every setting and its default,
loading from YAML/JSON with ``file:line: field: problem`` errors, the column DAG, templates and
samplers.

Entry point: :class:`Pipeline` (``Pipeline.load(path)``, ``Pipeline.from_dict(data)``).
"""

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.pipeline.parts import (
    Column,
    ExpressionColumn,
    LlmTextColumn,
    ModelAlias,
    Provider,
    RunSettings,
    SamplerColumn,
)

__all__ = [
    "Column",
    "ExpressionColumn",
    "LlmTextColumn",
    "ModelAlias",
    "Pipeline",
    "Provider",
    "RunSettings",
    "SamplerColumn",
]
