"""One model task's execution while it holds its lease: render, acquire, attempt, classify, emit.

For each try (up to ``max_attempts_in_pass`` in this pass, and never past the task's budget of
failures other than pushback, see ``patience``): take a request permit from the
domain's gate — ``try_acquire`` first, so an immediate admission records no wait interval (the
record stays lean: S5 aims at ≤ 1 KB per task), else ``acquire`` with its timeout (which emits
the wait) — then ``AttemptStarted``, ``client.chat``, ``AttemptFinished``, ``gate.release`` with
the outcome. The result says what the scheduler should do with the task:

* ``ok`` — the cell's value;
* ``dropped`` — a non-retryable failure (``client_error``, ``template_error``): drop the row;
* ``deferred`` — retryable failures used up this pass's attempts: retry in a salvage round;
* ``cancelled`` — the run is stopping (shutdown), so no further try was made.

Between tries in a pass, a 5xx, timeout, connection error or bad body is followed by an
exponential backoff with full jitter (``admission/backoff.py``; its length is on the
``attempt_finished`` event as ``backoff_s``). Pushback — a 429, or a 503 that says when to come
back — is paced by the domain's cooldown instead, and never uses up the task's budget.

``request_id`` is one per task (stable across its retries and salvage rounds); ``attempt``
counts every try of it, 1-based, including tries refused locally (admission timeout), so every
wait and attempt interval has a unique ``(request_id, attempt)``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ddscope import events
from ddscope.engine.admission.backoff import BACKOFF_KINDS, full_jitter_s
from ddscope.engine.admission.breaker import is_pushback
from ddscope.engine.admission.gate import Permit, RequestGate
from ddscope.engine.admission.patience import counts_against_budget
from ddscope.engine.admission.quota import RateLimitHeaders
from ddscope.engine.client.scrub import scrub_error_text, sent_texts
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.model import LlmTextColumn
from ddscope.engine.pipeline.templates import render
from ddscope.engine.scheduling.task_admission import Lease
from ddscope.engine.scheduling.tasks import ModelTask
from ddscope.errors import AdmissionTimeout, BreakerOpen, ModelError, TemplateError

ResultOutcome = Literal["ok", "dropped", "deferred", "cancelled"]
Phase = Literal["starting", "waiting", "on_wire", "between", "done"]
_ATTEMPT_FAILURES = frozenset(
    {"rate_limited", "server_error", "client_error", "timeout", "connection_error", "bad_response"}
)


class ChatClient(Protocol):
    async def chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class TaskResult:
    outcome: ResultOutcome
    value: str | None = None
    error_kind: str | None = None
    message: str | None = None


@dataclass(slots=True)
class WorkerContext:
    """What every worker of a run shares. ``permits`` counts request permits held per domain
    (the scheduler sizes ``request:{domain}`` leases from it); the counters feed RunSummary."""

    emitter: Emitter
    gates: Mapping[str, RequestGate]
    clients: Mapping[str, ChatClient]  # provider name → client
    max_attempts: int  # tries per pass
    failure_budget: int  # failed tries other than pushback, over all passes (patience.py)
    record_text: bool
    on_attempt: Callable[[str, str], None]  # (domain, outcome) after the permit is released
    stopping: Callable[[], bool]
    permits: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    rate_limited: int = 0
    admission_timeouts: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: events.AttemptOutcome
    retry_after_s: float | None
    ratelimit: RateLimitHeaders | None
    pushback: bool
    quota: bool | None  # for pushback: quota exhaustion (True) or saturation evidence (False)
    backoff_s: float | None


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str
    message: str
    pushback: bool = False  # the endpoint is full (429, 503 + Retry-After), not broken
    backoff_s: float | None = None  # pause before the next try


class Worker:
    """Runs one leased task. ``phase`` tells the scheduler whether a request is on the wire
    (a shutdown lets those finish, and cancels the others at once)."""

    def __init__(
        self, ctx: WorkerContext, task: ModelTask, lease: Lease, row_values: Mapping[str, object]
    ) -> None:
        self.ctx = ctx
        self.task = task
        self.lease = lease  # what the dispatcher finishes and releases when the task ends
        self.lease_id = lease.lease_id
        self.phase: Phase = "starting"
        self._row = row_values
        assert task.plan.alias is not None
        self._alias = task.plan.alias
        self._domain = self._alias.domain  # a property that formats a string: read once
        self._gate = ctx.gates[self._domain]
        self._client = ctx.clients[self._alias.provider]
        self._backoffs = 0  # backoffs so far in this pass (the exponent)

    async def run(self) -> TaskResult:
        try:
            messages = self._messages()
        except TemplateError as exc:
            return TaskResult(
                "dropped",
                error_kind="template_error",
                message=f"the prompt of {self.task.task_id} could not be rendered: {exc}",
            )
        task = self.task
        if task.request_id == 0:
            task.request_id = self.ctx.emitter.next_id()
        for try_in_pass in range(1, self.ctx.max_attempts + 1):
            if self.ctx.stopping():
                return TaskResult(
                    "cancelled", error_kind=task.last_error, message="the run is stopping"
                )
            task.attempts += 1
            may_retry = try_in_pass < self.ctx.max_attempts
            outcome = await self._try_once(messages, may_retry)
            if isinstance(outcome, str):
                return TaskResult("ok", value=outcome)
            task.last_error, task.last_message = outcome.kind, outcome.message
            if outcome.kind not in events.RETRYABLE_KINDS:
                return TaskResult("dropped", error_kind=outcome.kind, message=outcome.message)
            if not outcome.pushback and counts_against_budget(outcome.kind):
                task.budget_failures += 1
                if task.budget_failures >= self.ctx.failure_budget:
                    break  # no try left: deferred, and dropped when its round ends
            if outcome.backoff_s:
                await self.ctx.emitter.clock.sleep(outcome.backoff_s)  # phase "between"
        self.phase = "done"
        if self.ctx.stopping():  # no salvage is coming: the row is dropped with the stop
            return TaskResult("cancelled", error_kind=task.last_error, message=task.last_message)
        return TaskResult("deferred", error_kind=task.last_error, message=task.last_message)

    def _messages(self) -> list[dict[str, Any]]:
        column = self.task.plan.column
        assert isinstance(column, LlmTextColumn)
        messages = [{"role": "user", "content": render(column.prompt, self._row)}]
        if column.system_prompt:
            messages.insert(
                0, {"role": "system", "content": render(column.system_prompt, self._row)}
            )
        return messages

    async def _try_once(self, messages: list[dict[str, Any]], may_retry: bool) -> str | _Failure:
        """One try: the completion text, or the failure."""
        permit = await self._permit()
        if isinstance(permit, _Failure):
            return permit
        return await self._attempt(permit, messages, may_retry)

    def _backoff_after(self, outcome: str, pushback: bool, may_retry: bool) -> float | None:
        """The jittered pause before the next try of this pass, if one follows (None if not)."""
        budget_left = self.task.budget_failures + 1 < self.ctx.failure_budget
        if pushback or outcome not in BACKOFF_KINDS or not (may_retry and budget_left):
            return None
        self._backoffs += 1
        run = self._gate.settings.run
        # Seeded by the run's seed and the try: a replay of the run (FakeClock tests, a resume)
        # jitters the same way, while different tasks and tries still spread out.
        rng = random.Random(f"{run.seed}:{self.task.task_id}:{self.task.attempts}")
        return full_jitter_s(self._backoffs, run.retry_backoff_base_s, run.retry_backoff_max_s, rng)

    async def _permit(self) -> Permit | _Failure:
        task = self.task
        permit = self._gate.try_acquire(task.request_id, task.attempts)
        if permit is not None:
            return permit
        self.phase = "waiting"
        try:
            return await self._gate.acquire(
                request_id=task.request_id,
                attempt=task.attempts,
                task_id=task.task_id,
                lease_id=self.lease_id,
            )
        except AdmissionTimeout as exc:
            self.ctx.admission_timeouts += 1
            return _Failure(exc.kind, str(exc))
        except BreakerOpen as exc:
            return _Failure(exc.kind, str(exc))
        finally:
            self.phase = "between"

    async def _attempt(
        self, permit: Permit, messages: list[dict[str, Any]], may_retry: bool
    ) -> str | _Failure:
        ctx, task, domain = self.ctx, self.task, self._domain
        ctx.permits[domain] += 1
        self.phase = "on_wire"
        ctx.requests += 1
        prompt = messages[-1]["content"] if ctx.record_text else None
        self._emit_started(prompt)
        outcome: events.AttemptOutcome = "cancelled"
        result: Any = None
        error: ModelError | None = None
        error_text: str | None = None
        try:
            result = await self._client.chat(
                self._alias.model,
                messages,
                max_tokens=self._alias.max_tokens,
                temperature=self._alias.temperature,
            )
            outcome = "ok"
        except ModelError as exc:
            error = exc
            # Scrubbed once here, so every view of this failure (record, spans, traces,
            # health, progress) carries the same safe text: issue 19, engine/scrub.py.
            error_text = scrub_error_text(str(exc), sent=sent_texts(messages, self._row))
            outcome = exc.kind if exc.kind in _ATTEMPT_FAILURES else "bad_response"  # type: ignore[assignment]
        finally:
            ctx.permits[domain] -= 1
            answer = self._judge(outcome, result, error, may_retry)
            self._emit_finished(answer, result, error, error_text)
            self._gate.release(
                permit,
                outcome=outcome,
                retry_after_s=answer.retry_after_s,
                ratelimit=answer.ratelimit,
            )
            ctx.rate_limited += outcome == "rate_limited"
            # A 503 with Retry-After is pacing, like a 429, not an endpoint failure.
            ctx.on_attempt(domain, "rate_limited" if answer.pushback else outcome)
            self.phase = "between"
        if error is not None:
            return _Failure(
                outcome, f"{task.task_id}: {error_text}", answer.pushback, answer.backoff_s
            )
        return str(result.text)

    def _judge(
        self, outcome: events.AttemptOutcome, result: Any, error: ModelError | None, may_retry: bool
    ) -> _Answer:
        """What an answer means for pacing: pushback or not, quota or not, the backoff."""
        retry_after = error.retry_after_s if error is not None else None
        ratelimit = error.ratelimit if error is not None else getattr(result, "ratelimit", None)
        pushback = is_pushback(outcome, retry_after)
        quota = self._gate.is_quota_refusal(ratelimit) if pushback else None
        backoff = self._backoff_after(outcome, pushback, may_retry)
        return _Answer(outcome, retry_after, ratelimit, pushback, quota, backoff)

    def _emit_started(self, prompt: str | None) -> None:
        task = self.task
        self.ctx.emitter.emit(
            events.AttemptStarted(
                t_ns=self.ctx.emitter.t_ns(),
                request_id=task.request_id,
                attempt=task.attempts,
                task_id=task.task_id,
                lease_id=self.lease_id,
                domain=self._domain,
                prompt=prompt,
            )
        )

    def _emit_finished(
        self, answer: _Answer, result: Any, error: ModelError | None, error_text: str | None
    ) -> None:
        task, ctx, quota = self.task, self.ctx, answer.ratelimit
        status = result.status_code if result is not None else getattr(error, "status_code", None)
        ctx.emitter.emit(
            events.AttemptFinished(
                t_ns=ctx.emitter.t_ns(),
                request_id=task.request_id,
                attempt=task.attempts,
                task_id=task.task_id,
                domain=self._domain,
                outcome=answer.outcome,
                status_code=status,
                retry_after_s=answer.retry_after_s,
                ratelimit_remaining_requests=quota.remaining_requests if quota else None,
                ratelimit_remaining_tokens=quota.remaining_tokens if quota else None,
                ratelimit_reset_requests_s=quota.reset_requests_s if quota else None,
                ratelimit_reset_tokens_s=quota.reset_tokens_s if quota else None,
                quota_exhausted=answer.quota,
                backoff_s=answer.backoff_s,
                input_tokens=getattr(result, "input_tokens", None),
                output_tokens=getattr(result, "output_tokens", None),
                response_model=getattr(result, "response_model", None),
                error=error_text,
                completion=result.text if (ctx.record_text and result is not None) else None,
            )
        )
