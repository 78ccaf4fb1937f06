"""One DataDesigner run (a segment of ``scheduler_events.jsonl``, or one live ``create()``) →
ddscope events, as the dicts a ``run.jsonl`` line holds.

Scheduler events and what they become (the README's table says the same):

================================  ==========================================================
DataDesigner                      ddscope
================================  ==========================================================
scheduler_job_started             the header (:mod:`.layout`) and ``run_started``
row_group_admitted                ``row_group_started`` (first row = group × buffer_size)
row_group_checkpointed            ``row_group_finished`` (``abandoned`` if all rows dropped)
task_lease_acquired               ``lease_started`` (task ``column:row``, row from the task id)
retry_deferred                    the lease ends ``deferred``; ``task_deferred`` (error kind
                                  from request events live, from the next snapshot's outcome
                                  counts in a file)
non_retryable_dropped             the lease ends ``dropped``; ``row_dropped`` per row
cancelled / worker_spawn_failed   the lease ends ``cancelled``
task_lease_released               ``lease_finished``
scheduler_health_snapshot         ``health`` (+ from a file: ``limit_changed``, cooldowns)
scheduler_job_completed           ``shutdown`` (early shutdown) and ``run_finished``
the other known kinds             read, not drawn (queueing detail: ready, selected, blocked…)
unknown kinds                     counted in ``unknown_kinds`` (a newer DataDesigner)
================================  ==========================================================

Times: ``t_ns`` = (``captured_at_monotonic`` − the job start's) in ns, never going backwards
(live, scheduler and request events arrive from different call sites).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ddscope.integrations.datadesigner.cooldown import Cooldowns
from ddscope.integrations.datadesigner.layout import RunLayout
from ddscope.integrations.datadesigner.outcomes import drop_kind, job_ending, likeliest_kind
from ddscope.integrations.datadesigner.snapshots import SnapshotTranslator

Out = list[dict[str, Any]]

# Read and understood, but nothing in ddscope's model to draw: the queueing detail.
CONTEXT_KINDS = frozenset(
    {
        "dependency_ready",
        "ready_enqueued",
        "selected",
        "queue_empty",
        "admission_blocked",
        "group_capped",
        "request_pressure_advisory_skipped",
        "admission_denied",
        "worker_spawned",
        "stale_selection",
        "queue_drained",
        "task_completed",
        "release_diagnostic",
        "row_group_admission_blocked",
        "row_group_admission_target_changed",
        "salvage_redispatched",
        "scheduler_job_started",
    }
)


@dataclass
class _Lease:
    lease_id: int
    task_id: str
    row_group: int
    column: str
    row: int
    execution: str | None = None
    outcome: str = "ok"
    error_kind: str | None = None
    unresolved: list[dict[str, Any]] | None = None  # dicts waiting for the deferral's kind


@dataclass
class TaskState:
    """Per task (``column:row``), while its row group is open: forgotten at its checkpoint, so
    memory follows the row groups in flight, not the length of the run."""

    leases: int = 0  # leases so far: the attempts of task_deferred
    deferrals: int = 0  # times deferred so far: a later lease is a salvage re-run
    request_id: int = 0  # live: one ddscope request id per task, its tries numbered
    requests: int = 0


@dataclass
class TranslateStats:
    translated: int = 0
    context: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)
    unresolved_deferrals: int = 0


class RunTranslator:
    """Feed it scheduler events in order; each call returns the ddscope events it produced."""

    def __init__(
        self,
        layout: RunLayout,
        origin_s: float,
        *,
        request_events: bool,
        scrub: Callable[[str], str],
    ) -> None:
        self.layout = layout
        self._origin = origin_s
        self._last_ns = 0
        self.scrub = scrub
        self.cooldowns = Cooldowns()
        self.snapshots = SnapshotTranslator(
            [d.domain for d in layout.domains], self.cooldowns, request_events=request_events
        )
        for info in layout.domains:
            self.snapshots.set_initial_limit(info.domain, info.max_parallel_requests)
        self._leases: dict[str, _Lease] = {}
        self._by_execution: dict[str, _Lease] = {}
        self._tasks: dict[int, dict[str, TaskState]] = {}  # row group → its tasks' state
        self._lease_ids = 0
        self._unresolved: list[_Lease] = []
        # live: the last request outcome of an execution whose lease is open
        self.execution_outcome: dict[str, str] = {}
        self.rows = [0, 0]  # completed, dropped (checkpointed so far)
        self._groups_open: set[int] = set()
        self.finished = False
        self.stats = TranslateStats()

    # -- time ------------------------------------------------------------------------------

    def clock(self, captured: Any) -> int:
        t = int((captured - self._origin) * 1e9) if isinstance(captured, int | float) else 0
        self._last_ns = max(self._last_ns, t)
        return self._last_ns

    @property
    def holding(self) -> bool:
        """Deferrals whose error kind a later snapshot will tell (file mode)."""
        return bool(self._unresolved)

    def lease_of_execution(self, execution: str | None) -> _Lease | None:
        return self._by_execution.get(execution) if execution else None

    def task_state(self, row_group: int, task_id: str) -> TaskState:
        return self._tasks.setdefault(row_group, {}).setdefault(task_id, TaskState())

    # -- the stream ------------------------------------------------------------------------

    def start(self) -> Out:
        return [
            {
                "kind": "run_started",
                "t_ns": 0,
                "num_records": self.layout.num_records,
                "row_groups": self.layout.row_groups,
            }
        ]

    def scheduler(self, event: Mapping[str, Any]) -> Out:
        kind = event.get("event_kind")
        out: Out = []
        if self.finished:
            return out
        t = self.clock(event.get("captured_at_monotonic"))
        self.cooldowns.due(out, t)
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, out, t, event)
            self.stats.translated += 1
        elif kind in CONTEXT_KINDS:
            self._context(event)
        else:
            name = str(kind)
            self.stats.unknown_kinds[name] = self.stats.unknown_kinds.get(name, 0) + 1
        return out

    def flush_unresolved(self) -> None:
        """No snapshot will come (end of segment): give pending deferrals the likeliest kind."""
        if self._unresolved:
            self.stats.unresolved_deferrals += len(self._unresolved)
            self._resolve({self._likeliest_kind(): len(self._unresolved)})

    # -- handlers ----------------------------------------------------------------------------

    def _context(self, event: Mapping[str, Any]) -> None:
        self.stats.context += 1
        if event.get("event_kind") == "worker_spawned":
            lease = self._leases.get(str(event.get("task_lease_id")))
            execution = event.get("task_execution_id")
            if lease is not None and isinstance(execution, str):
                lease.execution = execution
                self._by_execution[execution] = lease

    def _row_group_admitted(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        diag = _diag(event)
        group = _int(diag.get("row_group"))
        size = _int(diag.get("row_group_size"), self.layout.group_size(group))
        self.layout.sizes[group] = size
        self._groups_open.add(group)
        first = self.layout.first_row(group)
        out.append(
            {"kind": "row_group_started", "t_ns": t, "row_group": group, "first_row": first}
            | {"rows": size}
        )

    def _row_group_checkpointed(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        diag = _diag(event)
        kept, dropped = _int(diag.get("surviving_rows")), _int(diag.get("dropped_rows"))
        self.rows[0] += kept
        self.rows[1] += dropped
        outcome = "abandoned" if diag.get("result") == "all_rows_dropped" else "checkpointed"
        self._group_finished(out, t, _int(diag.get("row_group")), outcome, kept, dropped)

    def _group_finished(
        self, out: Out, t: int, group: int, outcome: str, kept: int, dropped: int
    ) -> None:
        self._groups_open.discard(group)
        self._tasks.pop(group, None)
        self.layout.forget(group)
        out.append(
            {
                "kind": "row_group_finished",
                "t_ns": t,
                "row_group": group,
                "outcome": outcome,
                "rows_completed": kept,
                "rows_dropped": dropped,
            }
        )

    def _lease_acquired(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        corr = _corr(event)
        column = str(corr.get("task_column") or "?")
        group = _int(corr.get("row_group"))
        task_id, row = self.layout.locate(
            column, group, _str(event.get("task_id")), _str(corr.get("task_type"))
        )
        self._lease_ids += 1
        lease = _Lease(self._lease_ids, task_id, group, column, row)
        self._leases[str(event.get("task_lease_id"))] = lease
        state = self.task_state(group, task_id)
        state.leases += 1
        request = _diag(event).get("resource_request")
        resources = (
            {k: v for k, v in request.items() if _int(v, -1) >= 0}
            if isinstance(request, dict)  # live events are not checked like a file's lines
            else {}
        )
        started = {"kind": "lease_started", "t_ns": t, "lease_id": lease.lease_id}
        started |= {"task_id": task_id, "row_group": group, "column": column, "row": row}
        # DataDesigner re-runs deferred tasks in its salvage rounds but (0.9.x) marks no round
        # edges: a re-run is labelled with how many times its task was deferred before.
        out.append(started | {"resources": resources, "salvage_round": state.deferrals or None})

    def _retry_deferred(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        lease = self._leases.get(str(event.get("task_lease_id")))
        if lease is None:
            return
        lease.outcome = "deferred"
        state = self.task_state(lease.row_group, lease.task_id)
        state.deferrals += 1
        deferred: dict[str, Any] = {
            "kind": "task_deferred",
            "t_ns": t,
            "task_id": lease.task_id,
            "row_group": lease.row_group,
            "column": lease.column,
            "row": lease.row,
            "error_kind": None,
            "attempts": state.leases,
        }
        out.append(deferred)
        known = self.execution_outcome.pop(lease.execution or "", None)
        if known is not None:
            lease.error_kind = deferred["error_kind"] = known
        else:  # the next snapshot's outcome counts say which kind it was
            lease.unresolved = [deferred]
            self._unresolved.append(lease)

    def _dropped(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        lease = self._leases.get(str(event.get("task_lease_id")))
        if lease is None:
            return
        error_type = str(_diag(event).get("error_type") or "an error")
        kind = drop_kind(error_type)
        lease.outcome, lease.error_kind = "dropped", kind
        first = self.layout.first_row(lease.row_group)
        whole_group = lease.task_id.endswith(f":rg{lease.row_group}")
        rows = (
            range(first, first + self.layout.group_size(lease.row_group))
            if whole_group
            else (lease.row,)
        )
        message = self.scrub(
            f"DataDesigner dropped the row: non-retryable {error_type} in column {lease.column}"
        )
        for row in rows:
            out.append(
                {
                    "kind": "row_dropped",
                    "t_ns": t,
                    "row_group": lease.row_group,
                    "row": row,
                    "column": lease.column,
                    "task_id": lease.task_id,
                    "reason": kind or "non_retryable_error",
                    "message": message,
                }
            )

    def _cancelled(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        lease = self._leases.get(str(event.get("task_lease_id")))
        if lease is not None:
            lease.outcome, lease.error_kind = "cancelled", "cancelled"
        if event.get("event_kind") == "worker_spawn_failed":  # no release event follows
            self._released(out, t, event)

    def _released(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        lease = self._leases.pop(str(event.get("task_lease_id")), None)
        if lease is not None:
            out.append(self._lease_finished(lease, t))

    def _lease_finished(self, lease: _Lease, t: int) -> dict[str, Any]:
        if lease.execution:
            self._by_execution.pop(lease.execution, None)
            self.execution_outcome.pop(lease.execution, None)
        finished = {
            "kind": "lease_finished",
            "t_ns": t,
            "lease_id": lease.lease_id,
            "task_id": lease.task_id,
            "row_group": lease.row_group,
            "column": lease.column,
            "outcome": lease.outcome,
            "error_kind": lease.error_kind,
        }
        if lease.unresolved is not None:
            lease.unresolved.append(finished)
        return finished

    def _snapshot(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        grown = self.snapshots.translate(out, t, _diag(event), (self.rows[0], self.rows[1]))
        if grown and self._unresolved:
            self._resolve(grown)

    def _job_completed(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        diag = _diag(event)
        if isinstance(diag.get("request_pressure"), dict):  # a final snapshot rides along
            self._snapshot(out, t, event)
        self.flush_unresolved()
        for key in list(self._leases):
            lease = self._leases.pop(key)
            if lease.outcome == "ok":
                lease.outcome, lease.error_kind = "cancelled", "cancelled"
            out.append(self._lease_finished(lease, t))
        self.cooldowns.close_all(out, t)
        for group in sorted(self._groups_open):  # never checkpointed: the job ended first
            self._group_finished(out, t, group, "abandoned", 0, 0)
        result = str(event.get("reason_or_result") or diag.get("outcome") or "error")
        outcome, reason, message = job_ending(result, diag, self.scrub)
        if outcome == "shutdown":
            out.append({"kind": "shutdown", "t_ns": t, "reason": reason, "message": message})
        out.append(
            {
                "kind": "run_finished",
                "t_ns": t,
                "outcome": outcome,
                "reason": reason,
                "message": message,
                "rows_completed": self.rows[0],
                "rows_dropped": self.rows[1],
            }
        )
        self.finished = True

    # -- deferral kinds ------------------------------------------------------------------------

    def _resolve(self, grown: dict[str, int]) -> None:
        """Gives pending deferrals, oldest first, the kinds whose counts grew (exact when one
        kind grew, which is the usual case); any left over wait for the next snapshot."""
        # Counts come from the file: expand at most as many as there are deferrals to name.
        wanted = len(self._unresolved)
        budget = [kind for kind, n in sorted(grown.items()) for _ in range(min(n, wanted))]
        while self._unresolved and budget:
            lease = self._unresolved.pop(0)
            kind = budget.pop(0)
            lease.error_kind = kind
            for pending in lease.unresolved or ():
                pending["error_kind"] = kind
            lease.unresolved = None

    def _likeliest_kind(self) -> str:
        lately = any(f.last_outcome == "rate_limited" for f in self.snapshots.figures.values())
        return likeliest_kind(self.snapshots.tally.cumulative, rate_limited_lately=lately)


def _diag(event: Mapping[str, Any]) -> Mapping[str, Any]:
    diag = event.get("diagnostics")
    return diag if isinstance(diag, dict) else {}


def _corr(event: Mapping[str, Any]) -> Mapping[str, Any]:
    corr = event.get("captured_correlation")
    return corr if isinstance(corr, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


Handler = Callable[[RunTranslator, Out, int, Mapping[str, Any]], None]
_HANDLERS: dict[str, Handler] = {
    "row_group_admitted": RunTranslator._row_group_admitted,
    "row_group_checkpointed": RunTranslator._row_group_checkpointed,
    "task_lease_acquired": RunTranslator._lease_acquired,
    "retry_deferred": RunTranslator._retry_deferred,
    "non_retryable_dropped": RunTranslator._dropped,
    "cancelled": RunTranslator._cancelled,
    "worker_spawn_failed": RunTranslator._cancelled,
    "task_lease_released": RunTranslator._released,
    "scheduler_health_snapshot": RunTranslator._snapshot,
    "scheduler_job_completed": RunTranslator._job_completed,
}
