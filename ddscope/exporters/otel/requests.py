"""Spans and metrics of the request path, for the OTel sink: task leases, request-admission
waits, request attempts (``chat {model}``, GenAI semantic conventions), cooldowns (linked to the
attempt that caused them), and the AIMD limit and breaker as events on the domain's span.

The parents (row group, salvage round, domain, run) come from the shared :class:`SpanBook`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from ddscope import events as ev
from ddscope.exporters.otel.attempt_metrics import AttemptMetrics
from ddscope.exporters.otel.genai import GenAiMetrics
from ddscope.exporters.otel.metrics import RunInstruments
from ddscope.exporters.otel.spans import (
    Interval,
    Parent,
    PendingSpan,
    SpanBook,
    messages_json,
    present,
)

RECENT_FAILED_ATTEMPTS = 1024  # kept for cooldown links; bounded so memory stays flat
_NS = 1e9
# (span attribute, ``AttemptFinished`` field) of what an attempt span carries when it has it.
_ATTEMPT_FIELDS = (
    ("http.response.status_code", "status_code"),
    ("gen_ai.response.model", "response_model"),
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("ddscope.retry_after_s", "retry_after_s"),
    # the provider's quota headers and the engine's backoff (issue 11)
    ("ddscope.ratelimit.remaining_requests", "ratelimit_remaining_requests"),
    ("ddscope.ratelimit.remaining_tokens", "ratelimit_remaining_tokens"),
    ("ddscope.ratelimit.reset_requests_s", "ratelimit_reset_requests_s"),
    ("ddscope.ratelimit.reset_tokens_s", "ratelimit_reset_tokens_s"),
    ("ddscope.ratelimit.quota_exhausted", "quota_exhausted"),
    ("ddscope.backoff_s", "backoff_s"),
)


class RequestSpans:
    """Handlers for the request-path events; :meth:`handlers` maps kinds to them."""

    def __init__(self, book: SpanBook, instruments: RunInstruments, genai: GenAiMetrics) -> None:
        self.book = book
        self.instruments = instruments
        # Finished attempts are measured once per batch (the sink folds them).
        self.attempt_metrics = AttemptMetrics(instruments, genai)
        self._finished_attempts = self.attempt_metrics.finished
        self.send_text = False  # set by the sink from the header and its own opt-in
        self.leases: dict[int, PendingSpan] = {}
        self.waits: dict[tuple[int, int], PendingSpan] = {}
        self.attempts: dict[tuple[int, int], PendingSpan] = {}
        self.cooldowns: dict[int, Interval] = {}
        self._failed_attempts: OrderedDict[tuple[int, int], SpanContext] = OrderedDict()

    def handlers(self) -> dict[str, Callable[[Any], None]]:
        return {
            "lease_started": self.lease_started,
            "lease_finished": self.lease_finished,
            "wait_started": self.wait_started,
            "wait_finished": self.wait_finished,
            "attempt_started": self.attempt_started,
            "attempt_finished": self.attempt_finished,
            "cooldown_started": self.cooldown_started,
            "cooldown_finished": self.cooldown_finished,
            "limit_changed": self.limit_changed,
            "breaker": self.breaker,
        }

    def open_spans(self) -> tuple[list[PendingSpan], list[dict[Any, Interval]]]:
        """The spans still open: pending ones (children before parents), then intervals."""
        pending = [*self.attempts.values(), *self.waits.values(), *self.leases.values()]
        self.attempts.clear()
        self.waits.clear()
        self.leases.clear()
        return pending, [self.cooldowns]

    # -- task leases ----------------------------------------------------------------------------

    def lease_started(self, e: ev.LeaseStarted) -> None:
        book = self.book
        parent = None
        if e.salvage_round is not None:  # salvage leases nest under their round
            parent = book.salvage_rounds.get(e.salvage_round)
        parent = parent or book.row_groups.get(e.row_group) or book.run
        # Few attributes: each costs the SDK a validation. The column is in the name, the row
        # group in the parent (a salvage lease names its row group: its parent is the round).
        attrs: dict[str, Any] = {
            "ddscope.task_id": e.task_id,
            "ddscope.lease_id": e.lease_id,
            "ddscope.row": e.row,
        }
        if e.salvage_round is not None:
            attrs["ddscope.salvage_round"] = e.salvage_round
            attrs["ddscope.row_group"] = e.row_group
        self.leases[e.lease_id] = book.pending(f"task {e.column}", parent, attrs, e.t_ns)
        book.gauges.leases += 1

    def lease_finished(self, e: ev.LeaseFinished) -> None:
        pending = self.leases.pop(e.lease_id, None)
        if pending is None:
            return
        self.book.gauges.leases -= 1
        if e.outcome == "ok":
            self.book.finish(pending, e.t_ns, {"ddscope.outcome": e.outcome})
            return
        attrs = {"ddscope.outcome": e.outcome, "error.type": e.error_kind or e.outcome}
        self.book.finish(pending, e.t_ns, attrs, Status(StatusCode.ERROR))

    def _lease(self, lease_id: int) -> Parent:
        return self.leases.get(lease_id) or self.book.run

    # -- request-admission waits ----------------------------------------------------------------

    def wait_started(self, e: ev.WaitStarted) -> None:
        domain = self.book.domain(e.domain, e.t_ns)
        attrs = {
            **domain.metric_attrs,
            "ddscope.task_id": e.task_id,
            "ddscope.request_id": e.request_id,
            "ddscope.attempt": e.attempt,
        }
        self.waits[(e.request_id, e.attempt)] = self.book.pending(
            "request.wait", self._lease(e.lease_id), attrs, e.t_ns, SpanKind.INTERNAL, domain
        )
        domain.waiters += 1

    def wait_finished(self, e: ev.WaitFinished) -> None:
        pending = self.waits.pop((e.request_id, e.attempt), None)
        if pending is None:
            return
        domain = pending.domain
        assert domain is not None  # waits and attempts carry their domain
        domain.waiters -= 1
        self.instruments.wait_duration.record((e.t_ns - pending.t_ns) / _NS, domain.metric_attrs)
        attrs: dict[str, Any] = {"ddscope.outcome": e.outcome}
        error = None
        if e.outcome == "timeout":
            self.instruments.admission_timeouts.add(domain.metric_attrs)
            attrs["error.type"] = "admission_timeout"
            error = Status(StatusCode.ERROR)
        elif e.outcome == "breaker_open":
            attrs["error.type"] = "breaker_open"
            error = Status(StatusCode.ERROR)
        self.book.finish(pending, e.t_ns, attrs, error)

    # -- request attempts -----------------------------------------------------------------------

    def attempt_started(self, e: ev.AttemptStarted) -> None:
        domain = self.book.domain(e.domain, e.t_ns)
        # The task id is on the parent lease span; the outcome at the end is error.type.
        attrs = {
            **domain.span_attrs,
            "ddscope.request_id": e.request_id,
            "ddscope.attempt": e.attempt,
        }
        if e.attempt > 1:
            attrs["http.request.resend_count"] = e.attempt - 1
        if self.send_text and e.prompt is not None:
            attrs["gen_ai.input.messages"] = messages_json("user", e.prompt)
        self.attempts[(e.request_id, e.attempt)] = self.book.pending(
            f"chat {domain.model}",
            self._lease(e.lease_id),
            attrs,
            e.t_ns,
            SpanKind.CLIENT,
            domain,
        )
        domain.in_flight += 1

    def attempt_finished(self, e: ev.AttemptFinished) -> None:
        key = (e.request_id, e.attempt)
        pending = self.attempts.pop(key, None)
        if pending is None:
            return
        domain = pending.domain
        assert domain is not None  # waits and attempts carry their domain
        domain.in_flight -= 1
        seconds = (e.t_ns - pending.t_ns) / _NS
        self._finished_attempts.append(
            (domain, e.outcome, seconds, e.input_tokens, e.output_tokens)
        )
        # Only the values the attempt has (span attributes cannot be None), read from the
        # event's fields in one comprehension: ~0.5 against ~0.9 µs for a dict of all eleven
        # then filtered.
        fields = e.__dict__
        attrs = {
            name: value for name, field in _ATTEMPT_FIELDS if (value := fields[field]) is not None
        }
        if e.ratelimit_remaining_requests is not None:
            domain.ratelimit_remaining_requests = e.ratelimit_remaining_requests
        if self.send_text and e.completion is not None:
            attrs["gen_ai.output.messages"] = messages_json("assistant", e.completion)
        if e.outcome == "ok":
            self.book.finish(pending, e.t_ns, attrs)
            return
        attrs["error.type"] = e.outcome
        context = self.book.finish(pending, e.t_ns, attrs, Status(StatusCode.ERROR, e.error))
        self._remember_failed(key, context)

    def _remember_failed(self, key: tuple[int, int], context: SpanContext) -> None:
        self._failed_attempts[key] = context
        if len(self._failed_attempts) > RECENT_FAILED_ATTEMPTS:
            self._failed_attempts.popitem(last=False)

    # -- domains: cooldowns, AIMD limit, breaker ------------------------------------------------

    def cooldown_started(self, e: ev.CooldownStarted) -> None:
        domain = self.book.domain(e.domain, e.t_ns)
        attrs = {
            **domain.metric_attrs,
            "ddscope.cooldown_id": e.cooldown_id,
            "ddscope.cooldown.cause": e.cause,
            "ddscope.cooldown.retry_after_s": e.retry_after_s,
            "ddscope.cooldown.duration_s": e.duration_s,
            "ddscope.request_id": e.request_id,
            "ddscope.attempt": e.attempt,
        }
        parent = self.book.domains.get(e.domain) or self.book.run
        self.cooldowns[e.cooldown_id] = self.book.start(
            "cooldown",
            parent,
            present(attrs),
            e.t_ns,
            links=self._cause_link(e.request_id, e.attempt),
            domain=domain,
        )
        domain.open_cooldowns += 1

    def _cause_link(self, request_id: int | None, attempt: int | None) -> list[Link]:
        if request_id is None or attempt is None:
            return []
        key = (request_id, attempt)
        cause: SpanContext | None = self._failed_attempts.get(key)
        if cause is None and key in self.attempts:  # still open: its context is needed now
            cause = self.book.span_context(self.attempts[key])
        return [] if cause is None else [Link(cause, {"ddscope.link": "caused_by"})]

    def cooldown_finished(self, e: ev.CooldownFinished) -> None:
        interval = self.cooldowns.pop(e.cooldown_id, None)
        if interval is None or interval.domain is None:
            return
        domain = interval.domain
        domain.open_cooldowns -= 1
        seconds = (e.t_ns - interval.t_ns) / _NS
        self.instruments.cooldown_duration.record(seconds, domain.metric_attrs)
        self.instruments.cooldown_time.add(domain.metric_attrs, seconds)
        self.book.end(interval, e.t_ns)

    def limit_changed(self, e: ev.LimitChanged) -> None:
        self.book.domain(e.domain, e.t_ns).limit = e.new
        interval = self.book.domains.get(e.domain)
        if interval is not None:
            attrs = {
                "ddscope.limit.old": e.old,
                "ddscope.limit.new": e.new,
                "ddscope.reason": e.reason,
            }
            interval.span.add_event("limit_changed", attrs, timestamp=self.book.ts(e.t_ns))

    def breaker(self, e: ev.BreakerChanged) -> None:
        domain = self.book.domain(e.domain, e.t_ns)
        if e.state == "open":
            self.instruments.breaker_openings.add(domain.metric_attrs)
        interval = self.book.domains.get(e.domain)
        if interval is None:
            return
        attrs = {
            "ddscope.breaker.state": e.state,
            "ddscope.reason": e.reason,
            "ddscope.breaker.policy": e.policy,
            "ddscope.breaker.consecutive_429": e.consecutive_429,
            "ddscope.breaker.share_429": e.share_429,
            "ddscope.breaker.time_at_floor_s": e.time_at_floor_s,
            "ddscope.breaker.last_retry_after_s": e.last_retry_after_s,
        }
        interval.span.add_event("breaker", present(attrs), timestamp=self.book.ts(e.t_ns))
