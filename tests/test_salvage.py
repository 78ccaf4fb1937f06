"""Tests of salvage-round bookkeeping and sentences (pure)."""

from __future__ import annotations

from scheduler_support import plain_pipeline

from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.engine.scheduling.salvage import (
    PATIENT_MIN_PAUSE_S,
    SalvageRound,
    exhausted_message,
    pause_before_round,
)
from ddscope.engine.scheduling.tasks import ModelTask, plan_columns
from ddscope.events import EventBus, ListSink


def _task(row: int) -> ModelTask:
    plan = plan_columns(plain_pipeline(model=True))["summary"]
    return ModelTask(plan, row, 0)


def test_pause_waits_out_the_longest_cooldown():
    assert pause_before_round(0.5, []) == 0.5
    assert pause_before_round(0.5, [0.2, 3.0]) == 3.0


def test_a_round_emits_one_pair_and_counts_recoveries():
    sink = ListSink()
    tasks = [_task(0), _task(1), _task(2)]
    salvage_round = SalvageRound(2, tasks, Emitter(EventBus([sink]), FakeClock()))
    assert all(t.salvage_round == 2 for t in tasks)
    tasks[0].succeeded = tasks[2].succeeded = True
    assert salvage_round.finish(still_deferred=1) == 2
    salvage_round.finish(still_deferred=1)  # idempotent: one finish event
    [started] = sink.of_kind("salvage_started")
    [finished] = sink.of_kind("salvage_finished")
    assert (started.round, started.tasks) == (2, 3)
    assert (finished.round, finished.recovered, finished.still_deferred) == (2, 2, 1)


def test_exhausted_message_names_tries_rounds_and_last_error():
    task = _task(4)
    task.attempts, task.last_error, task.last_message = 9, "server_error", "HTTP 503"
    message = exhausted_message(task, 2)
    assert message == (
        "summary:4 still failed after 9 tries and 2 salvage rounds; "
        "last error server_error (HTTP 503)"
    )


def test_a_round_that_only_waits_on_the_endpoint_pauses_at_least_the_floor():
    assert pause_before_round(0.0, [], patient=True) == PATIENT_MIN_PAUSE_S > 0
    assert pause_before_round(0.0, [], patient=False) == 0.0
    assert pause_before_round(0.0, [0.01], patient=True) == PATIENT_MIN_PAUSE_S
    assert pause_before_round(2.0, [3.0], patient=True) == 3.0
