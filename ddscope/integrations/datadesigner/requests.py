"""DataDesigner's request-admission events (live only) → ddscope waits, attempts, cooldowns and
AIMD steps.

DataDesigner publishes these in-process to callbacks registered with
``subscribe_request_admission_events``. Each carries ``request_attempt_id`` (one try of one
request), ``captured_correlation.task_execution_id`` (the task execution that made it: the
scheduler's ``worker_spawned`` ties that to a task lease) and ``pressure_snapshot`` (limit,
in flight, waiters, ``cooldown_remaining_seconds``).

================================  ==========================================================
DataDesigner                      ddscope
================================  ==========================================================
request_wait_started              ``wait_started`` (request id per task, attempt n of it)
request_wait_completed            ``wait_finished`` admitted
request_wait_timeout / _cancelled ``wait_finished`` timeout / cancelled
request_lease_acquired            ``attempt_started`` (the request holds a slot: on the wire)
request_rate_limited              the attempt is a 429; ``cooldown_started`` (its remaining s)
request_lease_released            ``attempt_finished``: success → ok, rate_limited → 429,
                                  provider_failure → server_error, provider_timeout /
                                  local_timeout → timeout, local_cancelled → cancelled,
                                  unexpected_exception → bad_response
request_limit_decreased/increased ``limit_changed`` (previous → current)
the rest                          read, not drawn (queue formed/drained, registration, …)
================================  ==========================================================

A request can reach us before the scheduler's ``worker_spawned`` that names its task lease (the
worker starts before that event is emitted); its events wait, bounded, until the lease is known
(:meth:`RequestTranslator.lease_known`). A request with no task lease behind it at all (e.g. a
model health check) is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddscope.integrations.datadesigner.snapshots import resource_domain
from ddscope.integrations.datadesigner.translate import Out, RunTranslator

RELEASE_OUTCOMES = {
    "success": "ok",
    "rate_limited": "rate_limited",
    "provider_failure": "server_error",
    "provider_timeout": "timeout",
    "local_timeout": "timeout",
    "local_cancelled": "cancelled",
    "unexpected_exception": "bad_response",
}
NEW_REQUEST = ("request_wait_started", "request_lease_acquired")
EARLY_LIMIT = 10_000  # request events held for leases not known yet, at most
DONE_MEMORY = 10_000  # finished attempt ids remembered, to ignore their stragglers
WAIT_ENDS = {
    "request_wait_completed": "admitted",
    "request_wait_timeout": "timeout",
    "request_wait_cancelled": "cancelled",
}


@dataclass
class _Request:
    request_id: int
    attempt: int
    task_id: str
    lease_id: int
    domain: str
    execution: str
    waiting: bool = False
    on_wire: bool = False
    rate_limited: bool = False


class RequestTranslator:
    def __init__(self, run: RunTranslator) -> None:
        self._run = run
        self._requests: dict[str, _Request] = {}
        self._request_ids = 0
        self._domains = {d.domain for d in run.layout.domains}
        self._early: dict[str, list[Mapping[str, Any]]] = {}  # execution → its events so far
        self._early_count = 0
        self._done: dict[str, None] = {}  # recently finished attempt ids (insertion-ordered)
        self.skipped = 0

    def translate(self, event: Mapping[str, Any]) -> Out:
        out: Out = []
        run = self._run
        if run.finished:
            return out
        kind = event.get("event_kind")
        t = run.clock(event.get("captured_at_monotonic"))
        run.cooldowns.due(out, t)
        if kind in ("request_limit_decreased", "request_limit_increased"):
            self._limit(out, t, event)
            return out
        request = self._request(event)
        if request is None:
            self._hold(event)
            return out
        if kind == "request_wait_started":
            request.waiting = True
            out.append(self._ids(request, "wait_started", t) | {"lease_id": request.lease_id})
        elif kind in WAIT_ENDS:
            self._end_wait(out, t, request, WAIT_ENDS[str(kind)])
        elif kind == "request_lease_acquired":
            self._end_wait(out, t, request, "admitted")
            request.on_wire = True
            out.append(self._ids(request, "attempt_started", t) | {"lease_id": request.lease_id})
        elif kind == "request_rate_limited":
            request.rate_limited = True
            remaining = _pressure(event).get("cooldown_remaining_seconds")
            if isinstance(remaining, int | float):
                cause = (request.request_id, request.attempt)
                run.cooldowns.observe(out, t, request.domain, float(remaining), cause)
        elif kind == "request_lease_released":
            self._released(out, t, request, event)
        return out

    def lease_known(self, execution: str) -> Out:
        """The scheduler just named ``execution``'s lease: translate its early events."""
        out: Out = []
        for event in self._early.pop(execution, ()):
            self._early_count -= 1
            out += self.translate(event)
        return out

    def close(self, t: int) -> Out:
        """The job ended: requests still open end cancelled; early ones never matched count as
        skipped."""
        self.skipped += self._early_count
        self._early.clear()
        out: Out = []
        for key in list(self._requests):
            request = self._requests.pop(key)
            self._end_wait(out, t, request, "cancelled")
            if request.on_wire:
                out.append(self._ids(request, "attempt_finished", t) | {"outcome": "cancelled"})
        return out

    def _hold(self, event: Mapping[str, Any]) -> None:
        """Keeps the events of a request whose task lease is not known yet (bounded)."""
        execution = _execution(event)
        attempt_id = event.get("request_attempt_id")
        if execution is None or attempt_id in self._done or self._early_count >= EARLY_LIMIT:
            if event.get("event_kind") in NEW_REQUEST:
                self.skipped += 1
            return
        if execution in self._early or event.get("event_kind") in NEW_REQUEST:
            self._early.setdefault(execution, []).append(event)
            self._early_count += 1

    def _request(self, event: Mapping[str, Any]) -> _Request | None:
        attempt_id = event.get("request_attempt_id")
        if not isinstance(attempt_id, str):
            return None
        known = self._requests.get(attempt_id)
        if known is not None:
            return known
        if event.get("event_kind") not in NEW_REQUEST or attempt_id in self._done:
            return None  # a straggler of a request already finished: nothing to add
        lease = self._run.lease_of_execution(_execution(event))
        domain = _domain(event)
        if lease is None or domain not in self._domains or lease.execution is None:
            return None
        task = self._run.task_state(lease.row_group, lease.task_id)
        if not task.request_id:
            self._request_ids += 1
            task.request_id = self._request_ids
        task.requests += 1
        request_id, attempt = task.request_id, task.requests
        request = _Request(
            request_id, attempt, lease.task_id, lease.lease_id, str(domain), lease.execution
        )
        self._requests[attempt_id] = request
        return request

    def _ids(self, request: _Request, kind: str, t: int) -> dict[str, Any]:
        return {
            "kind": kind,
            "t_ns": t,
            "request_id": request.request_id,
            "attempt": request.attempt,
            "task_id": request.task_id,
            "domain": request.domain,
        }

    def _end_wait(self, out: Out, t: int, request: _Request, outcome: str) -> None:
        if request.waiting:
            request.waiting = False
            out.append(self._ids(request, "wait_finished", t) | {"outcome": outcome})

    def _released(self, out: Out, t: int, request: _Request, event: Mapping[str, Any]) -> None:
        attempt_id = str(event.get("request_attempt_id"))
        self._requests.pop(attempt_id, None)
        self._done[attempt_id] = None
        if len(self._done) > DONE_MEMORY:
            del self._done[next(iter(self._done))]
        self._end_wait(out, t, request, "cancelled")
        reason = str(event.get("reason_or_outcome") or "")
        outcome = "rate_limited" if request.rate_limited else RELEASE_OUTCOMES.get(reason, "ok")
        self._run.execution_outcome[request.execution] = outcome
        if not request.on_wire:
            return
        finished = self._ids(request, "attempt_finished", t) | {"outcome": outcome}
        if outcome == "rate_limited":
            finished["status_code"] = 429
        elif outcome != "ok":
            finished["error"] = self._run.scrub(f"DataDesigner request outcome: {reason}")
        out.append(finished)

    def _limit(self, out: Out, t: int, event: Mapping[str, Any]) -> None:
        domain = _domain(event)
        diag = event.get("diagnostics")
        if domain not in self._domains or not isinstance(diag, dict):
            return
        old, new = diag.get("previous"), diag.get("current")
        if isinstance(old, int) and isinstance(new, int) and old != new and new > 0:
            reason = "increase" if new > old else "decrease"
            out.append(
                {"kind": "limit_changed", "t_ns": t, "domain": domain}
                | {"old": old, "new": new, "reason": reason}
            )


def _domain(event: Mapping[str, Any]) -> str | None:
    key = event.get("request_resource_key")
    if isinstance(key, dict):
        provider, model = key.get("provider_name"), key.get("model_id")
        if isinstance(provider, str) and isinstance(model, str):
            return f"{provider}/{model}"
    if isinstance(key, str):
        return resource_domain(key)
    return None


def _execution(event: Mapping[str, Any]) -> str | None:
    corr = event.get("captured_correlation")
    execution = corr.get("task_execution_id") if isinstance(corr, dict) else None
    return execution if isinstance(execution, str) else None


def _pressure(event: Mapping[str, Any]) -> Mapping[str, Any]:
    snapshot = event.get("pressure_snapshot")
    return snapshot if isinstance(snapshot, dict) else {}
