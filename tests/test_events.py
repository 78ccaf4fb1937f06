"""The event contract: round trips, the discriminated union, and a bus that isolates sinks."""

from __future__ import annotations

import logging

import pytest
from engine_records import EngineSpec, engine_events
from pydantic import ValidationError

from ddscope.events import (
    EVENT_KINDS,
    EVENT_TYPES,
    SCHEMA,
    AttemptFinished,
    EventBus,
    EventSink,
    ListSink,
    RowDropped,
    event_adapter,
    split_domain,
)


def test_every_event_type_round_trips_through_json() -> None:
    spec = EngineSpec(rows=12, buffer_size=4, rate_limit_every=5, defer_every=7, drop_rows=(2,))
    _, events = engine_events(spec)
    seen = {e.kind for e in events}
    assert {"attempt_finished", "cooldown_started", "salvage_started", "row_dropped"} <= seen
    for event in events:
        again = event_adapter.validate_json(event.model_dump_json(exclude_none=True))
        assert again == event
        assert type(again) is EVENT_TYPES[event.kind]


def test_header_round_trips_with_schema_alias() -> None:
    header, _ = engine_events(EngineSpec())
    data = header.model_dump(by_alias=True)
    assert data["schema"] == SCHEMA
    assert type(header).model_validate(data) == header


def test_kind_discriminates_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        event_adapter.validate_python({"kind": "attempt_finished", "t_ns": 1})  # missing ids
    with pytest.raises(ValidationError):
        event_adapter.validate_python({"kind": "no_such_kind", "t_ns": 1})
    with pytest.raises(ValidationError):
        AttemptFinished(t_ns=-1, request_id=1, attempt=1, task_id="a:0", domain="p/m", outcome="ok")
    assert "health" in EVENT_KINDS and len(EVENT_KINDS) == len(EVENT_TYPES)


def test_events_ignore_fields_from_newer_writers() -> None:
    event = event_adapter.validate_python(
        {
            "kind": "row_dropped",
            "t_ns": 5,
            "row_group": 0,
            "row": 3,
            "reason": "client_error",
            "message": "x",
            "field_from_the_future": 1,
        }
    )
    assert isinstance(event, RowDropped) and event.row == 3


def test_split_domain_keeps_slashes_in_model_ids() -> None:
    assert split_domain("nvidia/meta/llama-3.1-8b") == ("nvidia", "meta/llama-3.1-8b")


class _Exploding:
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in
        self.calls: list[str] = []

    def open(self, header: object) -> None:
        self.calls.append("open")
        if self.fail_in == "open":
            raise RuntimeError("boom in open")

    def handle(self, event: object) -> None:
        self.calls.append("handle")
        if self.fail_in == "handle":
            raise RuntimeError("boom in handle")

    def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("fail_in", ["open", "handle"])
def test_failing_sink_is_logged_once_and_skipped(
    fail_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = _Exploding(fail_in), ListSink()
    assert isinstance(bad, EventSink) and isinstance(good, EventSink)
    bus = EventBus([bad, good])
    header, events = engine_events(EngineSpec(rows=2, buffer_size=2))
    with caplog.at_level(logging.ERROR, logger="ddscope.events"):
        bus.open(header)
        for event in events:
            bus.emit(event)  # never raises
        bus.close()
    assert good.events == list(events) and good.closed
    assert bus.failed_sinks == [bad]
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 1
    assert bad.calls.count("handle") == (1 if fail_in == "handle" else 0)
    assert bad.calls.count("close") == 1  # closed once when it failed, not again at the end


def test_events_handed_to_sinks_share_one_fields_set_per_class() -> None:
    # What sinks keep (issue 17): each event's own ~700-byte fields set is swapped for its
    # class's shared set of every field; the event's fields, equality and JSON are unchanged.
    spec = EngineSpec(rows=6, buffer_size=3, rate_limit_every=4, drop_rows=(1,))
    _, events = engine_events(spec)
    by_class: dict[type, set[str]] = {}
    for event in events:
        fields_set = event.__pydantic_fields_set__
        assert fields_set == set(type(event).model_fields)
        assert by_class.setdefault(type(event), fields_set) is fields_set
        fresh = event_adapter.validate_json(event.model_dump_json(exclude_none=True))
        assert fresh == event
        assert fresh.__pydantic_fields_set__ is not fields_set  # parsed events keep their own
        assert fresh.model_dump_json(exclude_none=True) == event.model_dump_json(exclude_none=True)
    assert len(by_class) >= 6

    attempt = next(e for e in events if isinstance(e, AttemptFinished))
    shared = set(attempt.__pydantic_fields_set__)
    # a key not in the shared set: were the set changed in place, it would show there
    changed = attempt.model_copy(update={"not_a_field": 1, "attempt": 9})
    assert changed.attempt == 9 and attempt.attempt != 9
    assert attempt.__pydantic_fields_set__ == shared  # pydantic changed a copy, not the shared set


def test_a_bus_without_sinks_leaves_the_event_as_built() -> None:
    event = AttemptFinished(
        t_ns=1, request_id=1, attempt=1, task_id="a:0", domain="p/m", outcome="ok"
    )
    own = event.__pydantic_fields_set__
    EventBus().emit(event)
    assert event.__pydantic_fields_set__ is own
    assert own == {"t_ns", "request_id", "attempt", "task_id", "domain", "outcome"}
