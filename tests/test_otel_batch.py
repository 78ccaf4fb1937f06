"""EventBatcher: events reach the sink in order, by size, by timer on a running loop, before a
metric reader collects (from the reader's thread) and at the end; failures surface on the next
add. And the OtelSink built on it: what a reader collects mid-run is up to date."""

from __future__ import annotations

import asyncio
import threading

import pytest
from engine_records import engine_events
from otel_support import ENGINE_SPEC, InMemoryOtel, points

from ddscope.exporters.otel.batch import EventBatcher

HEADER, _EVENTS = engine_events(ENGINE_SPEC)
EVENTS = list(_EVENTS)


def test_events_are_processed_in_order_when_a_batch_is_full() -> None:
    seen: list[int] = []
    batcher = EventBatcher(seen.append, batch_events=3)
    batcher.add(1)
    batcher.add(2)
    assert seen == []
    batcher.add(3)
    batcher.add(4)
    assert seen == [1, 2, 3]
    batcher.flush()
    assert seen == [1, 2, 3, 4]


def test_after_batch_runs_even_when_an_event_of_the_batch_raised() -> None:
    seen: list[int] = []
    batches: list[list[int]] = []

    def process(event: int) -> None:
        if event == 2:
            raise ValueError("bad 2")
        seen.append(event)

    batcher = EventBatcher(process, batch_events=10, after_batch=lambda: batches.append(seen[:]))
    for event in (1, 2, 3):
        batcher.add(event)
    with pytest.raises(ValueError, match="bad 2"):
        batcher.flush()
    assert batches == [[1]]  # what the batch made before the failure was handed on


def test_a_timer_on_the_running_loop_processes_a_partial_batch() -> None:
    seen: list[str] = []

    async def run() -> None:
        batcher = EventBatcher(seen.append, batch_events=100, max_delay_s=0.01)
        batcher.add("a")
        assert seen == []
        for _ in range(200):  # bounded: 2 s at most
            if seen:
                break
            await asyncio.sleep(0.01)
        batcher.add("b")  # a new timer for the next batch
        await asyncio.sleep(0.05)
        batcher.cancel_timer()

    asyncio.run(run())
    assert seen == ["a", "b"]


def test_a_failure_in_a_timer_batch_is_raised_by_the_next_add() -> None:
    def fail(event: str) -> None:
        raise ValueError(f"bad {event}")

    async def run() -> None:
        batcher = EventBatcher(fail, batch_events=100, max_delay_s=0.01)
        batcher.add("x")
        await asyncio.sleep(0.05)
        with pytest.raises(ValueError, match="bad x"):
            batcher.add("y")

    asyncio.run(run())


def test_a_reader_thread_processes_the_queue_before_it_observes() -> None:
    seen: list[tuple[int, str]] = []
    batcher = EventBatcher(lambda e: seen.append((e, threading.current_thread().name)))
    for event in range(5):
        batcher.add(event)
    reader = threading.Thread(target=batcher.flush_for_reader, name="reader")
    reader.start()
    reader.join(5)
    assert seen == [(event, "reader") for event in range(5)]


def _attempts(otel: InMemoryOtel) -> int:
    return sum(p.value for p in points(otel.metrics(), "ddscope.request.attempts"))


def test_mid_run_collections_see_every_event_so_far() -> None:
    otel = InMemoryOtel()
    otel.sink.open(HEADER)
    attempts = started = 0
    for event in EVENTS:  # fewer than a batch between collections: the reader does the work
        otel.sink.handle(event)
        started += event.kind == "attempt_started"
        attempts += event.kind == "attempt_finished"
        if event.kind == "attempt_finished" and attempts % 7 == 0:
            assert _attempts(otel) == attempts
            in_flight = points(otel.metrics(), "ddscope.request.in_flight")
            assert [p.value for p in in_flight] == [started - attempts]
    otel.sink.close()
    assert _attempts(otel) == attempts


def test_no_event_is_lost_while_a_reader_collects_from_another_thread() -> None:
    otel = InMemoryOtel()
    done = threading.Event()
    collections = 0

    def collect_until_done() -> None:
        nonlocal collections
        for _ in range(100_000):  # bounded; ends when the events are in
            otel.metrics()
            collections += 1
            if done.is_set():
                return

    collector = threading.Thread(target=collect_until_done)
    collector.start()
    otel.sink.open(HEADER)
    for event in EVENTS:
        otel.sink.handle(event)
    otel.sink.close()
    done.set()
    collector.join(10)
    assert collections > 1
    assert _attempts(otel) == sum(e.kind == "attempt_finished" for e in EVENTS)
    assert len(otel.spans()) == len(InMemoryOtel().feed(HEADER, EVENTS).spans())
