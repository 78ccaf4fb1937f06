"""The run's passes: the main pass (with early salvage rounds when memory fills up) and the
salvage rounds after it. A mixin of the scheduler's run object, split out so each file has one
job; it reads the run's dispatcher, settings and stop state.

Memory: the main pass holds at most ``max_unwritten`` admitted-but-unwritten row groups
(``row_groups``); when groups held only by deferred tasks fill that, a salvage round runs early
and the pass then carries on. Each task gets ``salvage_rounds`` rounds of its own, whenever they
happen; after them it is dropped with ``retries_exhausted`` unless it keeps waiting on a
saturated endpoint under ``breaker_policy: wait`` (``patience``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ddscope.engine.admission.gate import RequestAdmission, RequestGate
from ddscope.engine.admission.patience import keeps_waiting
from ddscope.engine.clock import Clock
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.model import RunSettings
from ddscope.engine.scheduling.dispatch import Dispatcher
from ddscope.engine.scheduling.salvage import (
    EXHAUSTED,
    SalvageRound,
    exhausted_message,
    pause_before_round,
)
from ddscope.engine.scheduling.shutdown import StopReason


class RunPasses:
    """The passes of one run (see the module docstring); the run sets these attributes."""

    _dispatcher: Dispatcher
    _settings: RunSettings
    _emitter: Emitter
    _clock: Clock
    _admission: RequestAdmission
    _gates: Mapping[str, RequestGate]
    _budget: int
    _stop: StopReason | None
    _phase: str
    _rounds: int

    async def _main_pass(self) -> None:
        """Admits and runs row groups; when the groups held back by deferred tasks fill the
        memory cap, runs a salvage round early, then carries on."""
        d = self._dispatcher
        while True:
            await d.pump(admit_groups=True)
            if self._stop is not None or d.main_pass_done:
                return
            self._drop_exhausted()
            if not d.rows.deferred:
                if d.blocked_on_unwritten and not d.workers:
                    raise RuntimeError("main pass blocked on unwritten row groups, none deferred")
                continue
            await self._salvage_round()
            self._phase = "main pass"

    # -- salvage ----------------------------------------------------------------------------

    async def _salvage(self) -> None:
        """Rounds until nothing is deferred or the run stops. Past ``salvage_rounds`` only the
        tasks that keep waiting (``patience.keeps_waiting``) get another round."""
        d = self._dispatcher
        while self._stop is None:
            self._drop_exhausted()
            if not d.rows.deferred:
                return
            await self._salvage_round()

    async def _salvage_round(self) -> None:
        """One paced round over every deferred task."""
        d = self._dispatcher
        self._rounds += 1
        number = self._rounds
        # only tasks past their own rounds (kept waiting on a saturated endpoint) are left
        patient = all(t.rounds >= self._settings.salvage_rounds for t in d.rows.deferred)
        label = f"salvage round {number}" + (", waiting on the endpoint" if patient else "")
        self._phase = f"{label} (pause)"
        await self._pause(self._pause_before_round(patient))
        if self._stop is not None:
            return
        self._phase = label
        tasks, d.rows.deferred = d.rows.deferred, []
        for task in tasks:
            task.rounds += 1
        salvage_round = SalvageRound(number, tasks, self._emitter)
        try:
            d.requeue(tasks)
            await d.pump(admit_groups=False)
        finally:
            salvage_round.finish(still_deferred=len(d.rows.deferred))

    async def _pause(self, seconds: float) -> None:
        """Sleeps on the run's clock, but wakes at once for a stop (e.g. the breaker's timer)."""
        d = self._dispatcher
        elapsed = asyncio.Event()  # not a clock comparison: loop timers may fire a hair early

        def end_pause() -> None:
            elapsed.set()
            d.wake.set()

        timer = self._clock.call_later(seconds, end_pause)
        try:
            while not elapsed.is_set() and self._stop is None:
                d.wake.clear()
                await d.wake.wait()
        finally:
            timer.cancel()

    def _pause_before_round(self, patient: bool) -> float:
        domains = {t.plan.domain for t in self._dispatcher.rows.deferred}
        cooling = [
            gate.statistics().cooldown_remaining_s
            for gate in self._admission.gates()
            if gate.domain in domains
        ]
        return pause_before_round(self._settings.salvage_pause_s, cooling, patient=patient)

    def _drop_exhausted(self) -> None:
        """Drops the rows of deferred tasks that had all their rounds and are out of tries
        (all of them under ``fail_fast``)."""
        d = self._dispatcher
        for task in list(d.rows.deferred):
            if task.rounds < self._settings.salvage_rounds:
                continue
            group = d.rows.groups.get(task.row_group)
            policy = self._gates[task.domain].settings.breaker_policy
            if group is None or keeps_waiting(task, policy, self._budget):
                continue
            d.rows.drop_row(group, task.row, EXHAUSTED, exhausted_message(task, task.rounds), task)
            d.rows.checkpoint_if_resolved(group)
