"""ddscope: an async LLM dataset-generation engine and the instruments to see inside it."""

from ddscope.events import SCHEMA, Event, EventBus, EventSink, ListSink, RunHeader

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "Event",
    "EventBus",
    "EventSink",
    "ListSink",
    "RunHeader",
    "__version__",
]
