"""ddscope: an async LLM dataset-generation engine and the instruments to see inside it.

The public API is small. The event contract and the exceptions are imported eagerly; the engine,
exporters and mock endpoint load on first use, so ``import ddscope`` (and ``ddtrace --version``)
stays fast. Type checkers see every name through the ``TYPE_CHECKING`` imports below, which are
the same table the lazy loader uses (a test keeps the two in step).

Run a pipeline::

    import asyncio, ddscope

    pipeline = ddscope.Pipeline.load("pipeline.yaml")
    bus = ddscope.EventBus([ddscope.JsonlRecorder("out/run.jsonl")])
    summary = asyncio.run(
        ddscope.run_pipeline(pipeline, bus=bus, output=ddscope.JsonlRowWriter("out/data.jsonl"))
    )
    report = ddscope.analyze("out/run.jsonl")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports
from ddscope.errors import (
    AdmissionTimeout,
    BadResponse,
    BreakerOpen,
    ClientError,
    ConfigError,
    ConnectionFailed,
    DdscopeError,
    ModelError,
    RateLimited,
    RecordError,
    RequestTimeout,
    ServerError,
    TaskError,
    TemplateError,
)
from ddscope.events import SCHEMA, Event, EventBus, EventSink, ListSink, RunHeader

try:  # the one place the version is written is pyproject.toml
    __version__ = version("ddscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from ddscope.engine.pipeline import Pipeline
    from ddscope.engine.rows.output import DiscardingRowWriter, JsonlRowWriter, RowWriter
    from ddscope.engine.scheduler import RunSummary, run_pipeline
    from ddscope.exporters.health import HealthReport, analyze
    from ddscope.exporters.trace.perfetto import export_perfetto
    from ddscope.mock import MockBehavior, MockServer
    from ddscope.record.jsonl import JsonlRecorder, RunReader

# name → module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Pipeline": "ddscope.engine.pipeline",
    "run_pipeline": "ddscope.engine.scheduler",
    "RunSummary": "ddscope.engine.scheduler",
    "RowWriter": "ddscope.engine.rows.output",
    "JsonlRowWriter": "ddscope.engine.rows.output",
    "DiscardingRowWriter": "ddscope.engine.rows.output",
    "JsonlRecorder": "ddscope.record.jsonl",
    "RunReader": "ddscope.record.jsonl",
    "analyze": "ddscope.exporters.health",
    "HealthReport": "ddscope.exporters.health",
    "export_perfetto": "ddscope.exporters.trace.perfetto",
    "MockServer": "ddscope.mock",
    "MockBehavior": "ddscope.mock",
}

__all__ = [
    "SCHEMA",
    "AdmissionTimeout",
    "BadResponse",
    "BreakerOpen",
    "ClientError",
    "ConfigError",
    "ConnectionFailed",
    "DdscopeError",
    "DiscardingRowWriter",
    "Event",
    "EventBus",
    "EventSink",
    "HealthReport",
    "JsonlRecorder",
    "JsonlRowWriter",
    "ListSink",
    "MockBehavior",
    "MockServer",
    "ModelError",
    "Pipeline",
    "RateLimited",
    "RecordError",
    "RequestTimeout",
    "RowWriter",
    "RunHeader",
    "RunReader",
    "RunSummary",
    "ServerError",
    "TaskError",
    "TemplateError",
    "__version__",
    "analyze",
    "export_perfetto",
    "run_pipeline",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
