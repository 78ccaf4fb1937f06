"""Salvage rounds: after the main pass, deferred tasks get bounded, paced further chances.

Each round waits first — ``salvage_pause_s``, and at least until the cooldown of every domain the
deferred tasks need is over (a round that starts inside a cooldown would only queue up behind
it) — then puts every deferred task back into the ready queue. Cells they complete make their
dependent cells ready, and those run in the same round. Tasks that fail retryably again are
deferred again, for the next round. After the last round, the rows of tasks still deferred are
dropped with reason ``retries_exhausted`` and a sentence naming the last error — except, under
``breaker_policy: wait``, tasks that only a saturated endpoint refused: they get further rounds
(``patience``), each paced like the others.

This module holds the round bookkeeping and the sentences; the scheduler drives the rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ddscope import events
from ddscope.engine.emitter import Emitter
from ddscope.engine.scheduling.tasks import ModelTask

EXHAUSTED = "retries_exhausted"
# Rounds past salvage_rounds (breaker_policy wait) may repeat for many minutes: this floor keeps
# zero pauses and cooldowns from turning them into a busy loop against the endpoint.
PATIENT_MIN_PAUSE_S = 0.5


def pause_before_round(
    pause_s: float, cooldowns_remaining_s: Iterable[float], *, patient: bool = False
) -> float:
    """Seconds to wait before a round: the pause, or longer while a needed domain cools down;
    at least ``PATIENT_MIN_PAUSE_S`` before a round that only waits on a saturated endpoint."""
    floor = max(pause_s, PATIENT_MIN_PAUSE_S) if patient else pause_s
    return max([floor, *cooldowns_remaining_s])


@dataclass(slots=True)
class SalvageRound:
    """One round's interval: ``SalvageStarted`` on creation, ``SalvageFinished`` on finish."""

    number: int
    tasks: list[ModelTask]
    emitter: Emitter
    finished: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        for task in self.tasks:
            task.salvage_round = self.number
        self.emitter.emit(
            events.SalvageStarted(
                t_ns=self.emitter.t_ns(), round=self.number, tasks=len(self.tasks)
            )
        )

    def finish(self, still_deferred: int) -> int:
        """Emits ``SalvageFinished`` (once); returns how many of the round's tasks recovered."""
        recovered = sum(1 for task in self.tasks if task.succeeded)
        if not self.finished:
            self.finished = True
            self.emitter.emit(
                events.SalvageFinished(
                    t_ns=self.emitter.t_ns(),
                    round=self.number,
                    recovered=recovered,
                    still_deferred=still_deferred,
                )
            )
        return recovered


def exhausted_message(task: ModelTask, rounds: int) -> str:
    """The human sentence for a row dropped because its task never succeeded."""
    tries = f"{task.attempts} tr{'y' if task.attempts == 1 else 'ies'}"
    after = f"{tries} and {rounds} salvage round{'' if rounds == 1 else 's'}"
    last = task.last_error or "unknown"
    detail = f" ({task.last_message})" if task.last_message else ""
    return f"{task.task_id} still failed after {after}; last error {last}{detail}"
