"""ddscope: an async LLM dataset-generation engine and the instruments to see inside it.

The public API is small. The event contract is imported eagerly; the engine, exporters and mock
endpoint load on first use, so ``import ddscope`` (and ``ddtrace --version``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ddscope.events import SCHEMA, Event, EventBus, EventSink, ListSink, RunHeader

__version__ = "0.1.0"

# name → module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Pipeline": "ddscope.engine.pipeline.model",
    "run_pipeline": "ddscope.engine.scheduler",
    "RunSummary": "ddscope.engine.scheduler",
    "JsonlRecorder": "ddscope.record.jsonl",
    "RunReader": "ddscope.record.jsonl",
    "analyze": "ddscope.exporters.health",
    "export_perfetto": "ddscope.exporters.trace.perfetto",
    "MockServer": "ddscope.mock",
    "MockBehavior": "ddscope.mock",
}

__all__ = [
    "SCHEMA",
    "Event",
    "EventBus",
    "EventSink",
    "JsonlRecorder",
    "ListSink",
    "MockBehavior",
    "MockServer",
    "Pipeline",
    "RunHeader",
    "RunReader",
    "RunSummary",
    "__version__",
    "analyze",
    "export_perfetto",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ddscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
