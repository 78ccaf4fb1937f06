"""The fast readers (health, the trace timeline) read record lines as plain dicts
(``RunReader.iter_dicts()``), not as the pydantic models: nothing but this test ties the keys they
take to the event contract. Every key they read from an event of a kind must be a field of that
kind's model.

The events come from the real engine twice: a run against the mock endpoint over HTTP (429s, 5xx,
a 4xx drop, salvage), and a run on a fake clock with a scripted client (tests/engine_records.py:
429s with Retry-After, deferrals recovered in salvage, drops), each dumped from its model exactly
as the record writer does, wrapped in a dict that remembers which keys were asked for.
"""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from engine_records import EngineSpec, engine_events
from scheduler_support import chain3

from ddscope.engine.scheduler import run_pipeline
from ddscope.events import EVENT_TYPES, Event, EventBus, ListSink, RunHeader
from ddscope.exporters.health.analyzer import HealthAnalyzer
from ddscope.exporters.trace.perfetto_wire import WireTraceWriter
from ddscope.exporters.trace.timeline import RunTimeline
from ddscope.mock import MockBehavior, MockServer

Seen = dict[str, set[str]]  # kind → keys read


class KeyTrackingDict(dict[str, Any]):
    """A record line that notes every key a reader asks for, present or not."""

    def __init__(self, data: dict[str, Any], seen: Seen) -> None:
        super().__init__(data)
        self._keys = seen[str(data["kind"])]

    def __getitem__(self, key: str) -> Any:
        self._keys.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._keys.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._keys.add(str(key))
        return super().__contains__(key)


def _lines(events: list[Event], seen: Seen) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, event in enumerate(events, start=2):
        yield line_no, KeyTrackingDict(event.model_dump(mode="json"), seen)


def _read_with_fast_readers(header: RunHeader, events: list[Event]) -> Seen:
    seen: Seen = defaultdict(set)
    analyzer = HealthAnalyzer(header)
    analyzer.consume(_lines(events, seen))
    analyzer.finish()
    timeline = RunTimeline(WireTraceWriter(io.BytesIO()), header, "run.jsonl", False)
    timeline.consume(_lines(events, seen))
    timeline.finish()
    return seen


def _engine_run() -> tuple[RunHeader, list[Event]]:
    behavior = MockBehavior(
        latency_ms=2,
        rate_limit_k=2,
        rate_limit_n=10,
        retry_after="0",
        error_rate=0.1,
        fail_every=13,
    )
    sink = ListSink()
    with MockServer(behavior) as srv:
        pipeline = chain3(srv.base_url, records=16, max_parallel=4, salvage_rounds=3)
        asyncio.run(run_pipeline(pipeline, bus=EventBus([sink]), output=_Discard()))
    assert sink.header is not None
    return sink.header, list(sink.events)


class _Discard:
    def write_rows(self, rows: list[dict[str, object]]) -> None:
        pass

    def close(self) -> None:
        pass


def _fake_clock_run() -> tuple[RunHeader, list[Event]]:
    spec = EngineSpec(rows=40, buffer_size=8, rate_limit_every=7, defer_every=9, drop_rows=(3,))
    header, events = engine_events(spec)
    return header, list(events)


@pytest.mark.parametrize("source", [_engine_run, _fake_clock_run], ids=["http", "fake-clock"])
def test_every_key_a_fast_reader_takes_is_a_field_of_that_kinds_model(source: Any) -> None:
    header, events = source()
    seen = _read_with_fast_readers(header, events)
    assert len(seen) >= 10, f"the readers looked at too few kinds: {sorted(seen)}"
    unknown = {
        kind: sorted(keys - set(EVENT_TYPES[kind].model_fields))
        for kind, keys in seen.items()
        if keys - set(EVENT_TYPES[kind].model_fields)
    }
    assert not unknown, f"keys read that the event models do not define: {unknown}"


def test_the_tracking_dict_notices_a_key_outside_the_model() -> None:
    seen: Seen = defaultdict(set)
    line = KeyTrackingDict({"kind": "run_started", "t_ns": 0}, seen)
    assert line.get("no_such_field") is None
    assert "no_such_field" in seen["run_started"]
    assert "no_such_field" not in EVENT_TYPES["run_started"].model_fields
