"""Events → OpenTelemetry spans and metrics. One event sink, used live (on the run's bus) and to
replay a recorded ``run.jsonl`` (``otel_replay``): the mapping depends only on the header and the
event stream, so a live run and its replay give the same spans (names, parents, timestamps,
attributes; only the random trace and span ids differ).

Span tree, one trace per run, timestamps = ``header.started_at_unix_ns + event.t_ns``::

    run                                     whole run; shutdown as a span event
    ├── domain {provider/model}             one per domain, whole run: AIMD limit changes and
    │   └── cooldown                        breaker transitions as span events; cooldowns as
    │                                       children, each linked to the attempt that caused it
    ├── row_group N                         row drops and task deferrals as span events
    │   └── task {column}                   the task lease
    │       ├── request.wait                waiting for request admission
    │       └── chat {model}  (CLIENT)      one request attempt, GenAI semantic conventions
    └── salvage_round N
        └── task {column}                   leases of a salvage round nest under the round

Why a span per domain: limit changes, breaker transitions and cooldowns belong to a (provider,
model) pair, not to the run; with several models they would interleave on the run span, and the
domain span gives cooldowns a parent that shows the domain's whole timeline.

Intervals still open when the stream ends (a record cut off, a killed run) are ended at the last
event's time with ``ddscope.unfinished = true``. Ids go into ``ddscope.*`` span attributes, never
into metric attributes. Prompt and completion text are attached (``gen_ai.input.messages`` /
``gen_ai.output.messages``) only when the run recorded them (``RunHeader.record_text``) *and*
this sink was asked to (``record_text=True``; the set-up follows the GenAI instrumentations'
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``): shipping text to a remote backend is a
second opt-in. The request path is in ``requests``, the metrics in ``metrics`` and ``genai``
(``OTEL_SEMCONV_STABILITY_OPT_IN`` picks the GenAI names); events are turned into spans and
measurements in batches (``batch``: cheaper, and what a metric reader collects is still up to
date); leases, waits and attempts reach the span processors as finished spans (``direct``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ddscope import __version__
from ddscope import events as ev
from ddscope.exporters.otel.batch import EventBatcher
from ddscope.exporters.otel.direct import DirectSpans
from ddscope.exporters.otel.genai import Conventions, GenAiMetrics, conventions
from ddscope.exporters.otel.histograms import FastHistogram
from ddscope.exporters.otel.metrics import DomainState, RunGauges, RunInstruments
from ddscope.exporters.otel.requests import RequestSpans
from ddscope.exporters.otel.spans import SpanBook, present, set_error

SCOPE = "ddscope"


class OtelSink:
    """Event sink: spans on ``tracer_provider``, metrics on ``meter_provider``.

    Per event, in batches: a dict lookup, at most one span start or end, and a few histogram
    measurements with pre-built attributes; gauges and counters are plain numbers observed on
    collection.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        record_text: bool = False,
        genai_conventions: Conventions | None = None,
    ) -> None:
        """``genai_conventions``: else ``OTEL_SEMCONV_STABILITY_OPT_IN`` decides (``genai``)."""
        gauges = RunGauges()
        meter = meter_provider.get_meter(SCOPE, __version__)
        self.instruments = RunInstruments(meter, gauges)
        chosen = genai_conventions or conventions()
        self.genai = GenAiMetrics(meter, chosen, self.instruments.observer)
        tracer = tracer_provider.get_tracer(SCOPE, __version__)
        self._book = SpanBook(tracer, gauges)
        scope = getattr(tracer, "_instrumentation_scope", None)
        self._direct = DirectSpans.of(tracer_provider, scope) if scope is not None else None
        self._book.on_domain = self._zero_counters
        self._requests = RequestSpans(self._book, self.instruments, self.genai)
        self._record_text = record_text
        self._closed = False
        self._histograms: list[FastHistogram] = [
            *self.instruments.histograms,
            *self.genai.histograms,
        ]
        self._batcher = EventBatcher(self._process, after_batch=self._after_batch)
        # EventSink.handle: the batcher's own ``add`` queues each event (spans and measurements
        # are made in batches, ``otel/batch.py``) — one call an event, not two.
        self.handle: Callable[[ev.Event], None] = self._batcher.add
        self.instruments.before_collect = self._batcher.flush_for_reader
        self._handlers: dict[str, Callable[[Any], None]] = {
            "run_started": self._run_started,
            "run_finished": self._run_finished,
            "row_group_started": self._row_group_started,
            "row_group_finished": self._row_group_finished,
            "salvage_started": self._salvage_started,
            "salvage_finished": self._salvage_finished,
            "task_deferred": self._task_deferred,
            "row_dropped": self._row_dropped,
            "health": self._health,
            "shutdown": self._shutdown,
            **self._requests.handlers(),
        }

    # -- EventSink ------------------------------------------------------------------------------

    def open(self, header: ev.RunHeader) -> None:
        book = self._book
        book.origin_ns = header.started_at_unix_ns
        self._requests.send_text = self._record_text and header.record_text
        attrs = {
            "ddscope.run_id": header.run_id,
            "ddscope.pipeline": header.pipeline_name,
            "ddscope.schema": header.schema_,
            "ddscope.version": header.ddscope_version,
            "ddscope.num_records": header.num_records,
            "ddscope.buffer_size": header.buffer_size,
        }
        book.run = book.start("run", None, attrs, 0, parent_of_others=True)
        if book.run.span.get_span_context().trace_flags.sampled:  # children follow the run
            book.direct = self._direct
        for info in header.domains:
            state = DomainState.from_info(info)
            state.limit = info.max_parallel_requests  # until the gate reports a change
            book.add_domain(state, 0, {"ddscope.max_parallel_requests": info.max_parallel_requests})

    def _zero_counters(self, domain: DomainState) -> None:
        self.instruments.zero(domain)
        self.genai.zero(domain)

    def close(self) -> None:
        """Ends whatever is still open at the last event's time, marked unfinished."""
        if not self._closed:
            self._closed = True
            batcher = self._batcher
            batcher.cancel_timer()
            with batcher.lock:
                batcher.drain()
                self._book.end_unfinished(*self._requests.open_spans())
                if self._direct is not None:
                    self._direct.hand_over()

    def _after_batch(self) -> None:
        """Once a batch of events is processed: its attempts measured, its histogram values
        folded, its finished spans handed to the span processor."""
        self._requests.attempt_metrics.fold()
        for histogram in self._histograms:
            histogram.fold()
        if self._direct is not None:
            self._direct.hand_over()

    def _process(self, event: ev.Event) -> None:
        if event.t_ns > self._book.last_t:
            self._book.last_t = event.t_ns
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)

    # -- run ------------------------------------------------------------------------------------

    def _run_started(self, e: ev.RunStarted) -> None:
        if self._book.run is not None:
            self._book.run.span.set_attribute("ddscope.row_groups", e.row_groups)

    def _run_finished(self, e: ev.RunFinished) -> None:
        book = self._book
        for interval in book.domains.values():
            book.end(interval, e.t_ns)
        book.domains.clear()
        if book.run is None:
            return
        span = book.run.span
        attrs = {
            "ddscope.outcome": e.outcome,
            "ddscope.reason": e.reason,
            "ddscope.rows_completed": e.rows_completed,
            "ddscope.rows_dropped": e.rows_dropped,
        }
        span.set_attributes(present(attrs))
        if e.outcome != "complete":
            set_error(span, e.reason or e.outcome, e.message)
        book.end(book.run, e.t_ns)
        book.run = None

    def _shutdown(self, e: ev.Shutdown) -> None:
        if self._book.run is not None:
            attrs = {
                "ddscope.reason": e.reason,
                "ddscope.message": e.message,
                "ddscope.domain": e.domain,
            }
            self._book.run.span.add_event(
                "shutdown", present(attrs), timestamp=self._book.ts(e.t_ns)
            )

    def _health(self, e: ev.Health) -> None:
        self._book.gauges.queue_depth = e.queue_depth
        for snapshot in e.domains:
            self._book.domain(snapshot.domain, e.t_ns).limit = snapshot.limit

    # -- row groups, salvage rounds, rows -------------------------------------------------------

    def _row_group_started(self, e: ev.RowGroupStarted) -> None:
        attrs = {
            "ddscope.row_group": e.row_group,
            "ddscope.first_row": e.first_row,
            "ddscope.rows": e.rows,
        }
        book = self._book
        book.row_groups[e.row_group] = book.start(
            f"row_group {e.row_group}", book.run, attrs, e.t_ns, parent_of_others=True
        )
        book.gauges.row_groups += 1

    def _row_group_finished(self, e: ev.RowGroupFinished) -> None:
        if e.rows_completed:
            self.instruments.rows_completed.add(None, e.rows_completed)
        interval = self._book.row_groups.pop(e.row_group, None)
        if interval is None:
            return
        self._book.gauges.row_groups -= 1
        attrs = {
            "ddscope.outcome": e.outcome,
            "ddscope.rows_completed": e.rows_completed,
            "ddscope.rows_dropped": e.rows_dropped,
        }
        interval.span.set_attributes(attrs)
        if e.outcome == "abandoned":
            set_error(interval.span, "abandoned")
        self._book.end(interval, e.t_ns)

    def _salvage_started(self, e: ev.SalvageStarted) -> None:
        self.instruments.salvage_rounds.add()
        book = self._book
        attrs = {"ddscope.salvage_round": e.round, "ddscope.tasks": e.tasks}
        book.salvage_rounds[e.round] = book.start(
            f"salvage_round {e.round}", book.run, attrs, e.t_ns, parent_of_others=True
        )

    def _salvage_finished(self, e: ev.SalvageFinished) -> None:
        interval = self._book.salvage_rounds.pop(e.round, None)
        if interval is not None:
            attrs = {"ddscope.recovered": e.recovered, "ddscope.still_deferred": e.still_deferred}
            interval.span.set_attributes(attrs)
            self._book.end(interval, e.t_ns)

    def _task_deferred(self, e: ev.TaskDeferred) -> None:
        span = self._book.event_span(e.row_group)
        if span is not None:
            attrs = {
                "ddscope.task_id": e.task_id,
                "ddscope.column": e.column,
                "ddscope.row": e.row,
                "error.type": e.error_kind,
                "ddscope.attempts": e.attempts,
                "ddscope.message": e.message,
            }
            span.add_event("task_deferred", present(attrs), timestamp=self._book.ts(e.t_ns))

    def _row_dropped(self, e: ev.RowDropped) -> None:
        instruments = self.instruments
        instruments.rows_dropped.add(instruments.drop_reason(e.reason))
        span = self._book.event_span(e.row_group)
        if span is not None:
            attrs = {
                "ddscope.reason": e.reason,
                "ddscope.message": e.message,
                "ddscope.row": e.row,
                "ddscope.column": e.column,
                "ddscope.task_id": e.task_id,
            }
            span.add_event("row_dropped", present(attrs), timestamp=self._book.ts(e.t_ns))
