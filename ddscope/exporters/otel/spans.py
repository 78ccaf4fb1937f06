"""The open spans of one run and how they are started and ended, for the OTel sink.

:class:`SpanBook` turns an event time (``t_ns`` since the run started) into the span timestamp
(``header.started_at_unix_ns + t_ns``), starts spans under a parent's context, and keeps the
run-level parents (run, domain, row group, salvage round) that the request-path spans hang from.

Task leases, request waits and request attempts are *pending* until they end
(:class:`PendingSpan`). With :class:`~ddscope.exporters.otel.direct.DirectSpans` (an SDK tracer
provider), a pending span gets its span context when it starts (its children need it) and is
handed to the span processors as a finished span when it ends. Otherwise the SDK span is created
when it ends, with its original start time and every attribute in one ``start_span`` call, or
earlier when something needs its context first (a child, a cooldown linking to an attempt still
open, the stream ending with it open).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer

from ddscope.exporters.otel.direct import DirectSpans
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

    __slots__ = (
        "attributes",
        "domain",
        "interval",
        "kind",
        "name",
        "parent",
        "parent_context",
        "span_context",
        "t_ns",
    )

    def __init__(
        self,
        name: str,
        parent: Parent,
        attributes: dict[str, Any],
        t_ns: int,
        kind: SpanKind,
        domain: DomainState | None,
    ) -> None:
        self.name = name
        self.parent = parent
        self.attributes = attributes
        self.t_ns = t_ns
        self.kind = kind
        self.domain = domain
        self.interval: Interval | None = None  # set once the SDK span exists
        self.span_context: SpanContext | None = None  # set at once for a direct span
        self.parent_context: SpanContext | None = None  # its parent's, with span_context


# Where a span hangs: an SDK span, a pending one (a task lease), or nothing (the run).
Parent: TypeAlias = Interval | PendingSpan | None


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


def span_context_of(parent: Parent) -> SpanContext | None:
    if parent is None:
        return None
    if isinstance(parent, PendingSpan):
        return parent.span_context
    return parent.span.get_span_context()


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
        self.direct: DirectSpans | None = None  # set by the sink when the provider allows

    def ts(self, t_ns: int) -> int:
        return self.origin_ns + t_ns

    def start(
        self,
        name: str,
        parent: Parent,
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
            context=self._sdk_context(parent),
            kind=kind,
            attributes=attributes,
            links=links or (),
            start_time=self.origin_ns + t_ns,
        )
        context = trace.set_span_in_context(span) if parent_of_others else None
        return Interval(span, t_ns, context, domain)

    def _sdk_context(self, parent: Parent) -> Context | None:
        if parent is None:
            # No parent: an empty context, so the run is its own trace whatever the host
            # process has active.
            return Context()
        if isinstance(parent, PendingSpan):  # a pending parent is created for its child
            return self.materialize(parent).context
        return parent.context

    def pending(
        self,
        name: str,
        parent: Parent,
        attributes: dict[str, Any],
        t_ns: int,
        kind: SpanKind = SpanKind.INTERNAL,
        domain: DomainState | None = None,
    ) -> PendingSpan:
        """A span started at ``t_ns``, made when it ends (:meth:`finish`). ``attributes``
        belongs to the span from now on: :meth:`finish` adds the end's attributes to it."""
        pending = PendingSpan(name, parent, attributes, t_ns, kind, domain)
        if self.direct is not None:
            parent_context = span_context_of(parent)
            if parent_context is not None:
                pending.span_context = self.direct.child_context(parent_context)
                pending.parent_context = parent_context
        return pending

    def span_context(self, pending: PendingSpan) -> SpanContext:
        """The span context of ``pending`` (an SDK span is created for it if it has none)."""
        if pending.span_context is not None:
            return pending.span_context
        return self.materialize(pending).span.get_span_context()

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
                parent_of_others=True,  # a lease's children need its context
                domain=pending.domain,
            )
        return pending.interval

    def finish(
        self,
        pending: PendingSpan,
        t_ns: int,
        attributes: dict[str, Any],
        error: Status | None = None,
    ) -> SpanContext:
        """Ends ``pending`` at ``t_ns`` with ``attributes`` (no ``None`` values) added; a span
        not yet created is created here with all its attributes at once. Returns its context."""
        if pending.span_context is not None and self.direct is not None:
            merged = pending.attributes  # the span's own dict (``pending``): no copy
            merged.update(attributes)
            self.direct.end(
                pending.name,
                pending.span_context,
                pending.parent_context,
                pending.kind,
                merged,
                self.origin_ns + pending.t_ns,
                self.origin_ns + t_ns,
                error,
            )
            return pending.span_context
        interval = pending.interval
        span: Span
        if interval is None:
            span = self.tracer.start_span(
                pending.name,
                context=self._sdk_context(pending.parent),
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
        return span.get_span_context()

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

    def end_unfinished(self, pending: list[PendingSpan], tables: list[dict[Any, Interval]]) -> None:
        """Ends every pending span, then every interval in ``tables`` (children first), then
        the run's parents, at the last event's time with ``ddscope.unfinished``."""
        for span in pending:
            self.finish(span, self.last_t, {UNFINISHED: True})
        for table in [*tables, self.salvage_rounds, self.row_groups, self.domains]:
            for interval in table.values():
                interval.span.set_attribute(UNFINISHED, True)
                self.end(interval, self.last_t)
            table.clear()
        if self.run is not None:
            self.run.span.set_attribute(UNFINISHED, True)
            self.end(self.run, self.last_t)
            self.run = None
