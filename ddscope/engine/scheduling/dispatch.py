"""The dispatcher: the ready queue, task leases, row-group admission and the workers.

One loop (:meth:`Dispatcher.pump`), woken by an ``asyncio.Event`` — set when a worker finishes,
when a gate's capacity may have grown (gate listener), by the health tick, and on a stop — never
by a polling sleep. Each wake it

1. sizes ``request:{domain}`` from the gate: permits our workers hold + ``gate.available()``, so
   a model task is leased only when its request can be admitted at once (0 during a cooldown or
   while the breaker is open: the task waits in the ready queue, not as a gate waiter that could
   time out);
2. leases ready tasks in fair order (select, try the lease, commit) and spawns one asyncio
   worker per lease;
3. admits another row group if the target allows (fixed, or adaptive: see ``row_groups``), and
   repeats from 2 for the new ready work.

Worker results are applied in one place (``RowBook.apply``, ``row_book.py``, which keeps the
admitted groups' rows): a done cell may make more cells ready; a non-retryable failure drops the
row (its other queued and deferred tasks go with it); a retryable one defers the task for
salvage. A row group is checkpointed when resolved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from ddscope import events
from ddscope.engine.admission.gate import RequestGate
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import RowWriter
from ddscope.engine.rows.row_groups import AdmissionTarget, engine_group_rows, row_group_count
from ddscope.engine.scheduling.fair_queue import FairQueue
from ddscope.engine.scheduling.row_book import RowBook
from ddscope.engine.scheduling.task_admission import Lease, TaskAdmission
from ddscope.engine.scheduling.tasks import ModelTask, plan_columns
from ddscope.engine.scheduling.worker import TaskResult, Worker, WorkerContext

log = logging.getLogger(__name__)
LLM_WAIT = "llm_wait"


def request_resource(domain: str) -> str:
    return f"request:{domain}"


def task_resources(gates: Mapping[str, RequestGate]) -> TaskAdmission:
    """``llm_wait``: every domain's maximum together (a global bound on model-task leases);
    ``request:{domain}``: starts at the gate's limit and is re-sized on every wake."""
    total = sum(g.settings.max_parallel for g in gates.values()) or 1
    return TaskAdmission(
        {LLM_WAIT: total} | {request_resource(d): g.limit for d, g in gates.items()}
    )


class Dispatcher:
    def __init__(
        self,
        pipeline: Pipeline,
        emitter: Emitter,
        output: RowWriter,
        gates: Mapping[str, RequestGate],
        ctx: WorkerContext,
        *,
        resume_from: tuple[int, int] = (0, 0),
        stop_group: int | None = None,
        carried: Mapping[int, dict[str, object]] | None = None,
    ) -> None:
        """``resume_from``: (row groups, rows) already written by an earlier segment of the
        run; those groups are not admitted again. ``stop_group``: no group at or past it is
        admitted (a worker of a sharded job owns a slice of the groups, ``engine.shards``).
        ``carried``: rows completed by an earlier segment in groups admitted again (row →
        values): written with their group, not generated again."""
        run = pipeline.run
        self._emitter = emitter
        self._gates = gates
        self._ctx = ctx
        self._buffer_size = engine_group_rows(run.buffer_size)
        self._plans = plan_columns(pipeline)
        self._queue: FairQueue[ModelTask] = FairQueue()
        self._admission = task_resources(gates)
        self._needs = {
            name: {LLM_WAIT: 1, request_resource(p.domain): 1}
            for name, p in self._plans.items()
            if p.domain
        }
        self._columns_needing: dict[str, list[str]] = {}
        for name, need in self._needs.items():
            for resource in need:
                self._columns_needing.setdefault(resource, []).append(name)
        self._target = AdmissionTarget.from_settings(
            run.row_groups_in_flight, run.max_row_groups_in_flight
        )
        self.row_group_total = row_group_count(run.num_records, self._buffer_size)
        if stop_group is not None:
            self.row_group_total = min(self.row_group_total, stop_group)
        self.next_group = resume_from[0]
        self.on_write_failure: Callable[[str], None] | None = None
        self.workers: dict[asyncio.Task[TaskResult], Worker] = {}  # runner → its current cell
        self.rows = RowBook(
            pipeline,
            self._plans,
            emitter,
            output,
            self._queue,
            self.workers,
            buffer_size=self._buffer_size,
            resume_from=resume_from,
            carried=carried,
            on_write_failure=self._on_write_failure,
        )
        # While a finishing runner dispatches: that runner, and the first worker it adopts.
        self._adopter: asyncio.Task[TaskResult] | None = None
        self._handoff: Worker | None = None
        self.wake = asyncio.Event()  # set whenever the loop may have something new to do
        self.stopping = False
        self.crash: BaseException | None = None
        self._pumping: bool | None = None  # while pump() runs: its admit_groups
        for gate in gates.values():
            gate.add_listener(self.wake.set)

    # -- the loop ---------------------------------------------------------------------------

    async def pump(self, *, admit_groups: bool) -> None:
        """Runs until no ready task, no worker and (if ``admit_groups``) no row group is left;
        when stopping, until the last worker has finished."""
        self._pumping = admit_groups
        try:
            while True:
                self.wake.clear()
                if self.crash is not None:
                    raise self.crash
                if not self.stopping:
                    self._dispatch(admit_groups)
                if not self.workers and (self.stopping or self._pass_done(admit_groups)):
                    return
                await self.wake.wait()
        finally:
            self._pumping = None

    def _pass_done(self, admit_groups: bool) -> bool:
        """Nothing queued, and no group to admit: all admitted, or (``blocked_on_unwritten``)
        the groups held for salvage fill memory's share, so a salvage round must run first."""
        if len(self._queue):
            return False
        return not admit_groups or self.main_pass_done or self.blocked_on_unwritten

    @property
    def main_pass_done(self) -> bool:
        return self.next_group >= self.row_group_total

    @property
    def blocked_on_unwritten(self) -> bool:
        return len(self.rows.groups) >= self._target.max_unwritten

    def _on_write_failure(self, message: str) -> None:
        if self.on_write_failure is not None:
            self.on_write_failure(message)
        self.wake.set()

    def _dispatch(self, admit_groups: bool) -> None:
        self._refresh_request_limits()
        while True:
            self._lease_ready()
            if not (admit_groups and self._admit_group()):
                return

    def _refresh_request_limits(self) -> None:
        for domain, gate in self._gates.items():
            capacity = self._ctx.permits[domain] + gate.available()
            self._admission.set_limit(request_resource(domain), capacity)

    def _lease_ready(self) -> None:
        # Every need is one unit of each of its resources, so a column is blocked exactly when
        # one of its resources has no room: known before selecting (and after each lease)
        # from the resources' room, not found by selecting a candidate that cannot be leased.
        blocked: set[str] = set()
        self._block_full(blocked, self._columns_needing)
        while (
            len(blocked) < len(self._needs)
            and (candidate := self._queue.select(blocked)) is not None
        ):
            need = self._needs[candidate.group]
            lease = self._admission.try_acquire(need, self._emitter.next_id())
            assert lease is not None  # none of its resources is full, nothing ran in between
            self._spawn(self._queue.commit(candidate), lease)
            self._block_full(blocked, need)

    def _block_full(self, blocked: set[str], resources: Iterable[str]) -> None:
        """Adds to ``blocked`` the columns needing any of ``resources`` that has no room."""
        for name in resources:
            if self._admission.room(name) < 1:
                blocked.update(self._columns_needing[name])

    def idle_model_slots(self) -> int:
        free = sum(self._admission.room(request_resource(d)) for d in self._gates)
        return min(free, self._admission.room(LLM_WAIT))

    def _admit_group(self) -> bool:
        if self.main_pass_done or self.blocked_on_unwritten or self.rows.write_failure:
            return False
        active = sum(1 for g in self.rows.groups.values() if g.active)
        if not self._target.should_admit(active, self.idle_model_slots(), len(self._queue)):
            return False
        self.next_group += 1
        self.rows.admit(self.next_group - 1)
        return True

    # -- workers ----------------------------------------------------------------------------

    def _spawn(self, task: ModelTask, lease: Lease) -> None:
        self._emitter.emit(
            events.LeaseStarted(
                t_ns=self._emitter.t_ns(),
                lease_id=lease.lease_id,
                task_id=task.task_id,
                row_group=task.row_group,
                column=task.plan.name,
                row=task.row,
                resources=lease.resources,  # copied by the event's validation
                salvage_round=task.salvage_round,
            )
        )
        group = self.rows.groups[task.row_group]
        worker = Worker(self._ctx, task, lease, group.values[task.row - group.first_row])
        adopter = self._adopter
        if adopter is not None and self._handoff is None:
            # The runner that freed this slot runs the new lease itself, after the dispatch:
            # no new asyncio task, no loop turn before it starts (issue 17).
            self._handoff = worker
            self.workers[adopter] = worker
            return
        runner = asyncio.create_task(self._run_worker(worker), name=task.task_id)
        self.workers[runner] = worker
        # A done-callback as well as the worker's own finish: a task cancelled before its
        # first step never runs its body (or is cancelled in a lease it adopted), and its
        # lease must still be finished and released.
        runner.add_done_callback(self._worker_done)

    async def _run_worker(self, worker: Worker) -> TaskResult:
        """Runs ``worker``, then, while the dispatch hands it one, the next lease (bounded by
        the run's tasks): a runner serves one slot for as long as there is ready work."""
        runner = asyncio.current_task()
        assert runner is not None
        while True:
            try:
                result = await worker.run()
            except Exception as exc:  # a bug, not an endpoint failure: stop the run, say why
                result = self._worker_crashed(worker, exc)
            if self.workers.pop(runner, None) is None:
                return result  # defensive: nothing else takes a running runner's cell
            self._finish(worker, result)
            if self._pumping is None or self.stopping or self.crash is not None:
                return result
            # Finished and the freed slot leased again in this same step, not two event-loop
            # turns later (done-callback, then the pump's wake): on a busy loop a turn is
            # ~1 ms, an idle request slot for each (issue 17).
            self._adopter, self._handoff = runner, None
            try:
                self._dispatch_guarded(self._pumping)
            finally:
                handoff, self._adopter, self._handoff = self._handoff, None, None
            if handoff is None:
                return result
            worker = handoff

    def _worker_crashed(self, worker: Worker, exc: Exception) -> TaskResult:
        log.exception("worker for %s failed", worker.task.task_id)
        self.crash = self.crash or exc
        self.wake.set()
        return TaskResult("cancelled")

    def _dispatch_guarded(self, admit_groups: bool) -> None:
        try:
            self._dispatch(admit_groups)
        except Exception as exc:  # raised in the pump, where a bug stops the run
            log.exception("dispatching after a worker failed")
            self.crash = self.crash or exc
            self.wake.set()

    def _worker_done(self, runner: asyncio.Task[TaskResult]) -> None:
        worker = self.workers.pop(runner, None)
        if worker is None:
            return  # its last lease finished by the runner itself (_run_worker)
        failed = runner.cancelled() or runner.exception() is not None
        self._finish(worker, TaskResult("cancelled") if failed else runner.result())

    def _finish(self, worker: Worker, result: TaskResult) -> None:
        """The lease finished and released, the result applied, the pump woken."""
        task, lease = worker.task, worker.lease
        self._emitter.emit(
            events.LeaseFinished(
                t_ns=self._emitter.t_ns(),
                lease_id=lease.lease_id,
                task_id=task.task_id,
                row_group=task.row_group,
                column=task.plan.name,
                outcome=result.outcome,
                error_kind=result.error_kind,
            )
        )
        self._admission.release(lease)
        try:
            self.rows.apply(task, result)
        except Exception as exc:  # a callback's exception would only reach asyncio's logger
            log.exception("applying the result of %s failed", task.task_id)
            self.crash = self.crash or exc
        self.wake.set()

    def cancel_workers(self, *, waiting_only: bool) -> int:
        """Cancels workers (only those without a request on the wire if ``waiting_only``)."""
        cancelled = 0
        for runner, worker in list(self.workers.items()):
            if not waiting_only or worker.phase != "on_wire":
                cancelled += runner.cancel()
        return cancelled

    async def wait_workers(self) -> None:
        while self.workers:
            await asyncio.gather(*self.workers, return_exceptions=True)

    def requeue(self, tasks: list[ModelTask]) -> None:
        """Puts deferred tasks back into the ready queue (a salvage round)."""
        self.rows.requeue(tasks)
        self.wake.set()

    # -- figures ----------------------------------------------------------------------------

    def has_work_for(self, domain: str) -> bool:
        """Whether a task of ``domain`` is queued, running or deferred (rows wait on it)."""
        if any(t.plan.domain == domain for t in self.rows.deferred):
            return True
        if any(w.task.plan.domain == domain for w in self.workers.values()):
            return True
        return any(self._queue.depth(n) for n, p in self._plans.items() if p.domain == domain)

    def health(self, note: str | None = None) -> events.Health:
        return events.Health(
            t_ns=self._emitter.t_ns(),
            queue_depth=len(self._queue),
            leases=self._admission.leases,
            in_flight=sum(self._ctx.permits.values()),
            deferred=len(self.rows.deferred),
            rows_completed=self.rows.completed,
            rows_dropped=self.rows.dropped,
            row_groups_in_flight=sum(1 for g in self.rows.groups.values() if not g.resolved),
            domains=[gate.statistics().to_event() for gate in self._gates.values()],
            note=note,
        )
