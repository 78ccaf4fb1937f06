"""Finished spans handed straight to the tracer provider's span processors.

Most of a run's spans (task leases, request waits, request attempts: two or three per task) have
no events and no links, and the sink knows everything about them when they end: name, parent,
kind, attributes, status, start and end time. For those, :class:`DirectSpans` builds the SDK's own
``ReadableSpan`` (what a span becomes when it ends) and passes it to the provider's span
processors' ``on_end``, as ``Span.end`` does. Measured on SDK 1.45: ~5 µs a span against ~26 µs
for ``start_span`` + ``end`` (the live ``Span`` object, its lock, the sampler and the context
plumbing are skipped); in S5 that is ~40 µs of CPU per task.

The same spans come out: ids from the provider's id generator, the provider's resource and span
limits (``BoundedAttributes``: attribute count and value length as ``OTEL_SPAN_ATTRIBUTE_*``
say), the instrumentation scope of the sink's tracer, the parent's trace id and trace flags.
Sampling follows the parent: every sampler ddscope accepts (``always_on``/``off``,
``traceidratio``, ``parentbased_*``) decides the same for the whole trace as for its root, which
the SDK samples as usual. Processors' ``on_start`` is not called for these spans (ddscope's and
the SDK's span processors do nothing there).

This needs one internal of the SDK (``TracerProvider._active_span_processor``, present from 1.0
to 1.45); :meth:`DirectSpans.of` returns None when it or anything else is missing, and the sink
then uses ``start_span`` for every span, as before.

**Finished spans without a ReadableSpan.** When the provider's only span processor is ddscope's
own OTLP pipeline (``OtelSdk``: a :class:`~ddscope.exporters.otel.delivery.CountingSpanProcessor`
marked ``takes_finished_spans``, whose exporters encode with ``encode.SpanEncoder`` and turn a
:class:`FinishedSpan` back into a ``ReadableSpan`` for any other encoder), a span no span limit
can touch is handed over as a :class:`FinishedSpan`: the same fields in a slotted object, put
straight on the batch processor's queue, the spans of a whole batch of events at once
(:meth:`DirectSpans.hand_over`, ``CountingSpanProcessor.take_finished``). The ``ReadableSpan``
(~1 µs), the provider's processor fan-out, the batch processor's ``on_end`` and ``emit`` per
span and the encoder's reading of an SDK span's fields are what goes: S5's stream replayed over
OTLP (``bench_sink_cost.py``) 33.8 → 30.0 µs a task, 28.3 with the queue and encoder steps;
live, 10 rounds interleaved against the code before, record + OTLP over no sinks 78 → 74 µs a
task. Handing spans over once per batch, and span contexts built as tuples: the engine
thread's share of the replayed stream 14.9 → 12.6 µs a task. The bytes on the wire are the
same (``tests/test_otel_finished_spans.py``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags, TraceState

_logger = logging.getLogger(__name__)
UNSET = Status()
_SAMPLED = TraceFlags.SAMPLED


_new_tuple = tuple.__new__
_SPAN_ID_END = 2**64


def _context_is_a_tuple() -> bool:
    """Whether ``SpanContext`` is the six-field tuple that :meth:`DirectSpans.child_context`
    builds directly (API 1.0 to 1.45): the two ways must give equal contexts."""
    try:
        flags, state = TraceFlags(TraceFlags.SAMPLED), TraceState([("k", "v")])
        made = SpanContext(7, 9, False, flags, state)
        return made == _new_tuple(SpanContext, (7, 9, False, flags, state, True))
    except Exception:
        return False


_CONTEXT_AS_TUPLE = _context_is_a_tuple()


class FinishedSpan:
    """A finished span with no events and no links, for ddscope's own OTLP pipeline: what the
    encoder reads (``encode._fields``), ``context`` for a span processor's sampling check, and
    :meth:`to_readable` for anything else that has to take it."""

    __slots__ = (
        "attributes",
        "context",
        "end_time",
        "instrumentation_scope",
        "kind",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Mapping[str, Any], start_time: int, end_time: int,
                 status: Status, resource: Any, scope: InstrumentationScope) -> None:  # fmt: skip
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.start_time = start_time
        self.end_time = end_time
        self.status = status
        self.resource = resource
        self.instrumentation_scope = scope

    def get_span_context(self) -> SpanContext:
        return self.context

    def to_readable(self) -> ReadableSpan:
        """The SDK's span with the same fields (an exporter on the SDK's own encoder)."""
        return ReadableSpan(
            name=self.name,
            context=self.context,
            parent=self.parent,
            resource=self.resource,
            attributes=self.attributes,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )


def readable_spans(spans: Sequence[Any]) -> list[ReadableSpan]:
    """``spans`` with every :class:`FinishedSpan` turned into the SDK's ``ReadableSpan``."""
    return [s.to_readable() if type(s) is FinishedSpan else s for s in spans]


class DirectSpans:
    """Builds finished spans for one tracer provider and hands them to its processors."""

    def __init__(self, processor: Any, id_generator: Any, resource: Any, limits: SpanLimits,
                 scope: InstrumentationScope) -> None:  # fmt: skip
        self._on_end = processor.on_end
        # ddscope's own pipeline as the only processor: FinishedSpans straight to it, while
        # the provider's processors are still the ones seen here (adding one makes a new tuple).
        self._processors = getattr(processor, "_span_processors", None)
        self._take_finished: Callable[[list[Any]], None] | None = _finished_span_taker(
            self._processors
        )
        # Finished spans for ``take_finished``, handed over together by :meth:`hand_over`.
        self._ready: list[FinishedSpan] = []
        self._processor = processor
        self._new_span_id = id_generator.generate_span_id
        # The SDK's default generator draws ``random.getrandbits(64)`` until it is not 0:
        # drawn here directly (0.1 µs a span less), a 0 redrawn by the generator itself.
        self._span_id_bits: Callable[[int], int] | None = (
            random.getrandbits if type(id_generator) is RandomIdGenerator else None
        )
        self._resource = resource
        self._max_attributes = limits.max_span_attributes
        self._max_length = limits.max_span_attribute_length
        self._scope = scope

    @classmethod
    def of(cls, provider: Any, scope: InstrumentationScope) -> DirectSpans | None:
        """For an SDK ``TracerProvider``; None for anything else (a no-op provider, an SDK
        without the internals used here)."""
        try:
            limits = getattr(provider, "_span_limits", None)
            if not isinstance(limits, SpanLimits):
                limits = SpanLimits()  # reads the same OTEL_SPAN_* variables
            return cls(
                provider._active_span_processor,
                provider.id_generator,
                provider.resource,
                limits,
                scope,
            )
        except Exception as error:  # not an SDK provider we know: start_span for every span
            _logger.debug("direct spans unavailable (%r); using start_span", error)
            return None

    def child_context(self, parent: SpanContext) -> SpanContext:
        """A new span's context under ``parent``: same trace, flags and state, a new span id.
        Built as ``SpanContext.__new__`` builds it (a tuple), from the parent's tuple, without
        its argument handling or property reads: 0.30 against 0.56 µs, two per task."""
        if not _CONTEXT_AS_TUPLE:  # an API whose SpanContext is built differently
            return SpanContext(
                parent.trace_id, self._new_span_id(), False, parent.trace_flags, parent.trace_state
            )
        trace_id, _, _, flags, state, valid = parent
        bits = self._span_id_bits
        span_id = bits(64) if bits is not None else 0
        if not span_id:  # another generator (or a 0 drawn, one time in 2**64)
            span_id = self._new_span_id()
        fields = (trace_id, span_id, False, flags, state, valid and 0 < span_id < _SPAN_ID_END)
        context: SpanContext = _new_tuple(SpanContext, fields)
        return context

    def _fits(self, attributes: dict[str, Any]) -> bool:
        """Whether no span limit can change ``attributes`` (else the SDK's ``BoundedAttributes``
        applies them). The sink's values are already what the SDK would keep: str, int,
        float or bool, never None."""
        max_attributes = self._max_attributes
        return self._max_length is None and (
            max_attributes is None or len(attributes) <= max_attributes
        )

    def end(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_ns: int,
        end_ns: int,
        status: Status | None = None,
    ) -> ReadableSpan | FinishedSpan:
        """The finished span; given to the processors if its trace is sampled."""
        take_finished = self._take_finished
        if (
            take_finished is not None
            and self._processor._span_processors is self._processors
            and self._fits(attributes)
        ):
            finished = FinishedSpan(name, context, parent, kind, attributes, start_ns, end_ns,
                                    status or UNSET, self._resource, self._scope)  # fmt: skip
            if context.trace_flags & _SAMPLED:
                self._ready.append(finished)
            return finished
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=self._attributes(attributes),
            kind=kind,
            status=status or UNSET,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )
        if context.trace_flags.sampled:
            self._on_end(span)
        return span

    def hand_over(self) -> None:
        """Gives the finished spans ended since the last call to ddscope's pipeline, in the
        order they ended (the sink calls this after each batch of events and when it closes):
        one call and one queue operation a batch instead of one a span."""
        ready = self._ready
        if ready and self._take_finished is not None:
            self._ready = []
            self._take_finished(ready)

    def _attributes(self, attributes: dict[str, Any]) -> Mapping[str, Any]:
        """The span's attributes, within the span limits: unless a limit can bite, used as
        they are, read-only (``BoundedAttributes`` would cost ~6 µs to copy them)."""
        if self._fits(attributes):
            return MappingProxyType(attributes)
        return BoundedAttributes(
            self._max_attributes, attributes, immutable=True, max_value_len=self._max_length
        )


def _finished_span_taker(members: Any) -> Callable[[list[Any]], None] | None:
    """``take_finished`` of the provider's only span processor (``members``: the processors it
    fans out to) when that is ddscope's own OTLP pipeline (it takes :class:`FinishedSpan`);
    None for anything else."""
    if isinstance(members, tuple) and len(members) == 1:
        only = members[0]
        if getattr(only, "takes_finished_spans", False) is True:
            take: Callable[[list[Any]], None] = only.take_finished
            return take
    return None
