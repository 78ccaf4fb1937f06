"""The run record (``run.jsonl``): the codec beside the event contract (:mod:`ddscope.events`).

Entry points: :class:`JsonlRecorder` (the writer, an event sink) and :class:`RunReader`
(streaming reader: validated events, or the ``iter_dicts()`` fast path).
"""

from ddscope.record.jsonl import JsonlRecorder, RunReader, read_events

__all__ = ["JsonlRecorder", "RunReader", "read_events"]
