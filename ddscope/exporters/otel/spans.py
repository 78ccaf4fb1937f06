"""The open spans of one run and how they are started and ended, for the OTel sink.

:class:`SpanBook` turns an event time (``t_ns`` since the run started) into the span timestamp
(``header.started_at_unix_ns + t_ns``), starts spans under a parent's context, and keeps the
run-level parents (run, domain, row group, salvage round) that the request-path spans hang from.

Spans without children (request waits and attempts) are *pending* until they end
(:class:`PendingSpan`): the SDK span is then created with its original start time and every
attribute in one ``start_span`` call and ended at once, which saves a ``set_attributes`` (the SDK
validates each attribute under a lock) per span. A pending span is created early only when
something needs its span context before it ends (a cooldown linking to an attempt still open) or
when the stream ends with it open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from ddscope.exporters.otel.metrics import DomainState, RunGauges

UNFINISHED = "ddscope.unfinished"


class Interval:
    """An open span; ``context`` is set for spans that have children."""

    __slots__ = ("context", "domain", "span", "t_ns")

    def __init__(
        self,
        span: Span,
        t_ns: int,
        context: Context | None = None,
        domain: DomainState | None = None,
    ) -> None:
        self.span = span
        self.t_ns = t_ns
        self.context = context
        self.domain = domain


class PendingSpan:
    """A span not yet handed to the SDK: what ``SpanBook.start`` needs, kept until it ends."""

    __slots__ = ("attributes", "domain", "interval", "kind", "name", "parent", "t_ns")

    def __init__(
        self,
        name: str,
        parent: Interval | None,
        attributes: dict[str, Any],
        t_ns: int,
        kind: SpanKind,
        domain: DomainState,
    ) -> None:
        self.name = name
        self.parent = parent
        self.attributes = attributes
        self.t_ns = t_ns
        self.kind = kind
        self.domain = domain
        self.interval: Interval | None = None  # set once the SDK span exists


def set_error(span: Span, error_type: str, description: str | None = None) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


def present(attrs: dict[str, Any]) -> dict[str, Any]:
    """Drops ``None`` values: span attributes cannot hold them."""
    return {k: v for k, v in attrs.items() if v is not None}


def messages_json(role: str, text: str) -> str:
    """GenAI semconv message shape, as a JSON string (span attributes are flat)."""
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    return json.dumps([message], ensure_ascii=False)


def _ignore(_state: DomainState) -> None:
    pass


class SpanBook:
    """Tracer, time origin and the run-level parent spans of one run."""

    def __init__(self, tracer: Tracer, gauges: RunGauges) -> None:
        self.tracer = tracer
        self.gauges = gauges
        self.origin_ns = 0
        self.last_t = 0
        self.run: Interval | None = None
        self.domains: dict[str, Interval] = {}
        self.row_groups: dict[int, Interval] = {}
        self.salvage_rounds: dict[int, Interval] = {}
        # Called with each domain as it is added (the sink zeroes its counters).
        self.on_domain: Callable[[DomainState], None] = _ignore

    def ts(self, t_ns: int) -> int:
        return self.origin_ns + t_ns

    def start(
        self,
        name: str,
        parent: Interval | None,
        attributes: dict[str, Any],
        t_ns: int,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        links: list[Link] | None = None,
        parent_of_others: bool = False,
        domain: DomainState | None = None,
    ) -> Interval:
        span = self.tracer.start_span(
            name,
            # No parent: an empty context, so the run is its own trace whatever the host
            # process has active.
            context=parent.context if parent is not None else Context(),
            kind=kind,
            attributes=attributes,
            links=links or (),
            start_time=self.origin_ns + t_ns,
        )
        context = trace.set_span_in_context(span) if parent_of_others else None
        return Interval(span, t_ns, context, domain)

    def end(self, interval: Interval, t_ns: int) -> None:
        interval.span.end(end_time=self.origin_ns + t_ns)

    def materialize(self, pending: PendingSpan) -> Interval:
        """The SDK span of ``pending``, started now (with its own start time) if not yet."""
        if pending.interval is None:
            pending.interval = self.start(
                pending.name,
                pending.parent,
                pending.attributes,
                pending.t_ns,
                kind=pending.kind,
                domain=pending.domain,
            )
        return pending.interval

    def finish(
        self,
        pending: PendingSpan,
        t_ns: int,
        attributes: dict[str, Any],
        error: Status | None = None,
    ) -> Span:
        """Ends ``pending`` at ``t_ns`` with ``attributes`` (no ``None`` values) added; a span
        not yet created is created here with all its attributes at once."""
        interval = pending.interval
        if interval is None:
            span = self.tracer.start_span(
                pending.name,
                context=pending.parent.context if pending.parent is not None else Context(),
                kind=pending.kind,
                attributes={**pending.attributes, **attributes},
                start_time=self.origin_ns + pending.t_ns,
            )
        else:
            span = interval.span
            span.set_attributes(attributes)
        if error is not None:
            span.set_status(error)
        span.end(end_time=self.origin_ns + t_ns)
        return span

    def add_domain(self, state: DomainState, t_ns: int, extra: dict[str, Any]) -> None:
        self.gauges.domains[state.name] = state
        self.on_domain(state)
        attrs = {
            "ddscope.domain": state.name,
            "gen_ai.provider.name": state.provider,
            "gen_ai.request.model": state.model,
            "server.address": state.server_address,
            "server.port": state.server_port,
            **extra,
        }
        self.domains[state.name] = self.start(
            f"domain {state.name}", self.run, present(attrs), t_ns, parent_of_others=True
        )

    def domain(self, name: str, t_ns: int) -> DomainState:
        state = self.gauges.domains.get(name)
        if state is None:  # a domain the header did not list: still give it a span
            state = DomainState.from_name(name)
            self.add_domain(state, t_ns, {})
        return state

    def event_span(self, row_group: int) -> Span | None:
        """Where row-level span events go: the row group's span, else the run's."""
        interval = self.row_groups.get(row_group) or self.run
        return interval.span if interval is not None else None

    def end_unfinished(self, tables: list[dict[Any, Interval]]) -> None:
        """Ends every interval in ``tables`` (children first), then the run's parents, at the
        last event's time with ``ddscope.unfinished``."""
        for table in [*tables, self.salvage_rounds, self.row_groups, self.domains]:
            for interval in table.values():
                interval.span.set_attribute(UNFINISHED, True)
                self.end(interval, self.last_t)
            table.clear()
        if self.run is not None:
            self.run.span.set_attribute(UNFINISHED, True)
            self.end(self.run, self.last_t)
            self.run = None
