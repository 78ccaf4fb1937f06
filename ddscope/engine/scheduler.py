"""The run loop: main pass, salvage rounds, early shutdown, cancellation, and the run's events.

:func:`run_pipeline` is the engine's entry point. It opens the record (the header), one model
client per provider and one request gate per (provider, model) domain, then runs the phases:

1. **main pass** — row groups admitted up to the target, tasks leased and run (``dispatch``);
2. **salvage** — bounded, paced rounds over the deferred tasks (``salvage``); rows still failing
   after the last round are dropped with ``retries_exhausted`` — except under
   ``breaker_policy: wait``, where a task refused only by a saturated endpoint (429, admission
   timeout) gets further rounds until it succeeds or the run gives up (``patience``);
3. **finish** — every row group checkpointed, a last health snapshot, ``RunFinished``.

Stopping early (``shutdown``): the error-rate window tripped (``shutdown.ErrorRateWindow``), a
domain's circuit breaker opened under ``fail_fast``, or under ``wait`` a domain's breaker was open
(or half-open) for ``breaker_max_wait_s`` in total while rows waited on it (``saturation``; both
reason ``endpoint_saturated``). Then
nothing new is leased, workers that are only waiting are cancelled, requests on the wire may
finish within a grace period, and every admitted row group is written with the rows it completed
— its unfinished rows are dropped with reason ``shutdown``. Cancellation (Ctrl-C, task cancel)
does the same at once with reason ``cancelled``, closes the record with outcome ``cancelled``,
and re-raises.

Failing (outcome ``failed``): rows that cannot be written (``write_failed``: disk full, I/O
error) or a record that cannot be written (``record_write_failed``: the bus's essential sink
failed) stop the run at once — every worker is cancelled, nothing more is written, and the reason
names the file and the OS error. Nothing is reported as completed that is not on disk.

Stopping from outside: ``stop_requested`` (an ``asyncio.Event``; the CLI sets it on SIGINT,
SIGTERM and SIGHUP) ends the run like a cancellation — outcome ``cancelled`` — but
``run_pipeline`` *returns* the summary instead of raising, so the caller can print it.

Memory: groups held for salvage are bounded; the passes and salvage rounds are in ``passes``.

A health snapshot is emitted every ``health_interval_s`` for the whole run (clock timers, so a
``FakeClock`` drives it), so a stalled run is never a silent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ddscope import __version__, events
from ddscope.engine.admission.gate import AdmissionSettings, RequestAdmission
from ddscope.engine.admission.patience import failure_budget
from ddscope.engine.admission.saturation import SaturationWatch
from ddscope.engine.clock import Clock, MonotonicClock, TimerHandle
from ddscope.engine.emitter import Emitter
from ddscope.engine.gc_pacing import fewer_young_collections
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import OutputWriteError, RowWriter, open_output
from ddscope.engine.rows.resume import ResumePoint, pipeline_fingerprint
from ddscope.engine.run_setup import (
    ClientFactory,
    admission_settings,
    default_client,
    open_clients,
)
from ddscope.engine.scheduling.dispatch import Dispatcher
from ddscope.engine.scheduling.passes import RunPasses
from ddscope.engine.scheduling.shutdown import (
    ErrorRateWindow,
    StopReason,
    breaker_open_message,
    cancel_reason,
    cancel_when,
    cancelled_by_us,
)
from ddscope.engine.scheduling.worker import WorkerContext

MAX_SHUTDOWN_GRACE_S = 10.0  # requests on the wire get this long to finish after a stop

# (settings per domain, emitter, stop the run with this sentence) -> the run's request admission
AdmissionFactory = Callable[
    [Mapping[str, AdmissionSettings], Emitter, Callable[[str], None]], RequestAdmission
]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    outcome: events.RunOutcome
    reason: str | None
    message: str | None
    rows_completed: int
    rows_dropped: int
    drops_by_reason: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    admission_timeouts: int = 0


async def run_pipeline(
    pipeline: Pipeline,
    *,
    bus: events.EventBus,
    output: RowWriter,
    clock: Clock | None = None,
    client_factory: ClientFactory | None = None,
    run_id: str | None = None,
    stop_requested: asyncio.Event | None = None,
    resume: ResumePoint | None = None,
    row_groups: range | None = None,
    admission_factory: AdmissionFactory | None = None,
) -> RunSummary:
    """Runs ``pipeline`` to the end (or a stop); the bus and the writer are closed on return,
    also when cancelled (the record then ends with outcome ``cancelled``). ``resume``: continue
    a run whose first row groups are already written (``engine.resume``). ``row_groups``: the
    slice of row groups this run owns (a worker of a sharded job). ``admission_factory``: request
    admission other than the in-memory one (``admission.shared``: state shared through Redis);
    its third argument stops the run with reason ``admission_lost`` and the given sentence."""
    clock = clock or MonotonicClock()
    run_id = resume.run_id if resume else (run_id or uuid.uuid4().hex[:16])
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(fewer_young_collections())  # why: engine.gc_pacing
            # Clients first: a missing API key is a ConfigError before any file is replaced.
            clients = await open_clients(pipeline, client_factory or default_client, stack)
            settings = admission_settings(pipeline)
            # The emitter's t_ns 0 and the header's wall-clock start are taken together, so
            # started_at_unix_ns + t_ns is wall-clock time (records of concurrent workers are
            # merged on it) — not later by however long opening the files took.
            emitter = Emitter(bus, clock, first_id=resume.first_id if resume else 1)
            header = pipeline.header(run_id, time.time_ns(), __version__).model_copy(
                update={
                    "segment": resume.segment if resume else 0,
                    "fingerprint": pipeline_fingerprint(pipeline),
                }
            )
            bus.open(header)
            if bus.fatal is not None:  # the record could not even be created
                raise OutputWriteError(bus.fatal)
            open_output(output)  # the run has really started: now the dataset is replaced
            runs: list[_Run] = []  # the run, once built: the admission may stop it
            if admission_factory is None:
                admission = RequestAdmission(settings, emitter)
            else:
                admission = admission_factory(
                    settings, emitter, lambda m: runs[0].lost_admission(m)
                )
            stack.callback(admission.close)  # idempotent; the run closes it before RunFinished
            run = _Run(pipeline, emitter, output, admission, clients, run_id, resume, row_groups)
            runs.append(run)
            summary = await run.execute(stop_requested)
    finally:
        bus.on_fatal = None  # a failure while closing is reported through the summary below
        bus.close()
        output.close()
    if bus.fatal is not None and summary.outcome != "failed":
        # The record's last write (at close) failed: the run is not on disk as reported.
        summary = _record_failed(summary, bus.fatal)
    return summary


class _Run(RunPasses):
    """One run's phases and stop logic on top of the dispatcher."""

    def __init__(
        self,
        pipeline: Pipeline,
        emitter: Emitter,
        output: RowWriter,
        admission: RequestAdmission,
        clients: dict[str, Any],
        run_id: str,
        resume: ResumePoint | None = None,
        row_groups: range | None = None,
    ) -> None:
        self._settings = pipeline.run
        self._resume = resume
        self._budget = failure_budget(
            self._settings.max_attempts_in_pass, self._settings.salvage_rounds
        )
        self._emitter = emitter
        self._clock = emitter.clock
        self._admission = admission
        self._run_id = run_id
        gates = {g.domain: g for g in admission.gates()}
        self._ctx = WorkerContext(
            emitter=emitter,
            gates=gates,
            clients=clients,
            max_attempts=self._settings.max_attempts_in_pass,
            failure_budget=self._budget,
            record_text=self._settings.record_text,
            on_attempt=self._on_attempt,
            stopping=lambda: self._stop is not None,
        )
        resume_from = (resume.row_groups_done, resume.rows_done) if resume else (0, 0)
        if row_groups is not None:  # a shard starts at its first group, resumed or not
            resume_from = (max(row_groups.start, resume_from[0]), resume_from[1])
        self._dispatcher = Dispatcher(
            pipeline,
            emitter,
            output,
            gates,
            self._ctx,
            resume_from=resume_from,
            stop_group=row_groups.stop if row_groups is not None else None,
            carried=resume.carried if resume else None,
        )
        self._dispatcher.on_write_failure = self._on_write_failure
        emitter.bus.on_fatal = self._on_record_failure
        self._errors = ErrorRateWindow(
            self._settings.error_rate_window, self._settings.error_rate_threshold
        )
        self._stop: StopReason | None = None
        self._stop_outcome: events.RunOutcome = "shutdown"
        self._rounds = 0  # salvage rounds so far (numbered across the run)
        self._phase = "main pass"
        self._health_timer: TimerHandle | None = None
        self._grace_timer: TimerHandle | None = None
        self._grace_s = min(
            MAX_SHUTDOWN_GRACE_S,
            max((a.timeout_s for a in pipeline.domains().values()), default=1.0),
        )
        self._started = self._clock.now()
        self._gates = gates
        self._saturation = SaturationWatch(
            gates,
            self._clock,
            self._settings.breaker_max_wait_s,
            has_work=self._dispatcher.has_work_for,
            stop=self._request_stop,
        )
        for gate in gates.values():
            gate.on_breaker_open = self._on_breaker_open

    async def execute(self, stop_requested: asyncio.Event | None = None) -> RunSummary:
        """The phases. ``stop_requested`` set: end like a cancellation, but return."""
        self._emit_start()
        self._arm_health()
        phases = asyncio.create_task(self._phases(), name="ddscope-run")
        watcher = asyncio.create_task(cancel_when(stop_requested, phases))
        try:
            await asyncio.shield(phases)
        except asyncio.CancelledError:
            if not phases.done():  # we ourselves were cancelled (e.g. asyncio.run on Ctrl-C)
                phases.cancel()
                with contextlib.suppress(BaseException):
                    await phases
            ours = cancelled_by_us(phases)
            summary = await self._abort(cancel_reason(stop_requested), "cancelled")
            if ours:
                return summary
            raise
        except Exception as exc:
            await self._abort(StopReason("internal_error", f"internal error: {exc!r}"), "failed")
            raise
        finally:
            watcher.cancel()
        if self._stop is not None:
            return self._finish(self._stop_outcome, self._stop)
        return self._finish(*self._verdict())

    def _emit_start(self) -> None:
        d = self._dispatcher
        self._emitter.emit(
            events.RunStarted(
                t_ns=self._emitter.t_ns(),
                num_records=self._settings.num_records,
                row_groups=d.row_group_total,
            )
        )
        if self._resume is not None:
            self._emitter.emit(
                events.Resumed(
                    t_ns=self._emitter.t_ns(),
                    segment=self._resume.segment,
                    row_groups_done=self._resume.row_groups_done,
                    rows_done=self._resume.rows_done,
                )
            )

    async def _phases(self) -> None:
        await self._main_pass()
        await self._salvage()

    # -- stopping ---------------------------------------------------------------------------

    def _on_attempt(self, domain: str, outcome: str) -> None:
        if self._errors.record(outcome):
            self._request_stop(self._errors.stop_reason())
        self._saturation.follow(domain)  # only a finished attempt can close a breaker

    def _on_breaker_open(self, event: events.BreakerChanged) -> None:
        if event.policy == "wait":
            self._saturation.follow(event.domain)
        else:
            message = breaker_open_message(event)
            self._request_stop(StopReason("endpoint_saturated", message, event.domain))

    def _on_write_failure(self, message: str) -> None:
        self._fail(
            StopReason("write_failed", f"{message}; the run stopped, rows already written are kept")
        )

    def _on_record_failure(self, message: str) -> None:
        self._fail(
            StopReason(
                "record_write_failed",
                f"the run record could not be written ({message}); the run stopped",
            )
        )

    def _fail(self, stop: StopReason) -> None:
        """A failure that makes going on pointless (rows or record cannot be written): stop
        at once, every worker cancelled, outcome ``failed``. Overrides an earlier stop."""
        if self._stop_outcome == "failed":
            return
        self._stop_outcome = "failed"
        self._stop = stop
        self._phase = f"failing ({stop.reason})"
        self._emitter.emit(
            events.Shutdown(t_ns=self._emitter.t_ns(), reason=stop.reason, message=stop.message)
        )
        d = self._dispatcher
        d.stopping = True
        d.cancel_workers(waiting_only=False)
        d.wake.set()

    def lost_admission(self, message: str) -> None:
        """The shared admission state is gone (Redis unreachable mid-run): stop, keep the rows."""
        self._request_stop(StopReason("admission_lost", message))

    def _request_stop(self, stop: StopReason) -> None:
        """Stop admitting; cancel workers that only wait; give requests on the wire a grace.
        The first decision stands: a later one is ignored."""
        if self._stop is not None:
            return
        self._stop = stop
        self._phase = f"shutting down ({stop.reason})"
        self._emitter.emit(
            events.Shutdown(
                t_ns=self._emitter.t_ns(),
                reason=stop.reason,
                message=stop.message,
                domain=stop.domain,
            )
        )
        d = self._dispatcher
        d.stopping = True
        d.cancel_workers(waiting_only=True)

        def end_grace() -> None:
            d.cancel_workers(waiting_only=False)

        self._grace_timer = self._clock.call_later(self._grace_s, end_grace)
        d.wake.set()

    async def _abort(self, stop: StopReason, outcome: events.RunOutcome) -> RunSummary:
        """Cancellation or a crash: cancel every worker, wait for their closing events, then
        checkpoint and close the run."""
        self._stop = self._stop or stop
        d = self._dispatcher
        d.stopping = True
        d.cancel_workers(waiting_only=False)
        try:
            await d.wait_workers()
        finally:
            summary = self._finish(outcome, stop)
        return summary

    # -- finishing --------------------------------------------------------------------------

    def _verdict(self) -> tuple[events.RunOutcome, StopReason | None]:
        d = self._dispatcher
        if d.rows.dropped and not d.rows.completed:
            return "failed", StopReason(
                "all_rows_dropped",
                f"all {d.rows.dropped} rows were dropped ({_reasons(d.rows.drops_by_reason)})",
            )
        return "complete", None

    def _finish(self, outcome: events.RunOutcome, stop: StopReason | None) -> RunSummary:
        for timer in (self._health_timer, self._grace_timer):
            if timer is not None:
                timer.cancel()
        self._health_timer = self._grace_timer = None
        self._saturation.close()
        d = self._dispatcher
        if stop is not None:
            reason = "shutdown" if outcome == "shutdown" else stop.reason
            d.rows.finalize(reason, stop.reason)
        if d.rows.write_failure is not None and outcome != "failed":
            # a write failed (perhaps in this very finalize): nothing may claim completion
            outcome, stop = "failed", self._stop
            assert stop is not None  # set by _on_write_failure
        self._admission.close()
        self._emitter.emit(d.health(note=f"final: {outcome}"))
        self._emitter.emit(
            events.RunFinished(
                t_ns=self._emitter.t_ns(),
                outcome=outcome,
                reason=stop.reason if stop else None,
                message=stop.message if stop else None,
                rows_completed=d.rows.checkpointer.rows_written,
                rows_dropped=d.rows.dropped,
            )
        )
        return RunSummary(
            run_id=self._run_id,
            outcome=outcome,
            reason=stop.reason if stop else None,
            message=stop.message if stop else None,
            rows_completed=d.rows.checkpointer.rows_written,
            rows_dropped=d.rows.dropped,
            drops_by_reason=dict(d.rows.drops_by_reason),
            duration_s=self._clock.now() - self._started,
            requests=self._ctx.requests,
            rate_limited=self._ctx.rate_limited,
            admission_timeouts=self._ctx.admission_timeouts,
        )

    # -- health -----------------------------------------------------------------------------

    def _arm_health(self) -> None:
        self._health_timer = self._clock.call_later(
            self._settings.health_interval_s, self._on_health_tick
        )

    def _on_health_tick(self) -> None:
        waiting = self._saturation.note()
        note = f"{self._phase}; {waiting}" if waiting else self._phase
        self._emitter.emit(self._dispatcher.health(note=note))
        self._dispatcher.wake.set()  # a safety net: the loop re-checks capacity at least this often
        self._arm_health()


def _record_failed(summary: RunSummary, message: str) -> RunSummary:
    return dataclasses.replace(
        summary,
        outcome="failed",
        reason="record_write_failed",
        message=f"the run record could not be written ({message})",
    )


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} ×{n}" for reason, n in sorted(counts.items()))
