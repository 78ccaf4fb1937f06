"""Live: ddscope's sinks on a DataDesigner run, around ``create()`` / ``preview()``.

::

    from ddscope.integrations.datadesigner import observe

    with observe(designer, "ddscope-out/run.jsonl"):
        designer.create(config_builder, num_records=100)

Inside the block every job the designer runs is translated as it happens and fed to the sinks
``ddtrace run`` uses: a ddscope ``run.jsonl`` (the first job; later jobs get ``run-2.jsonl``, …),
live OTel spans and metrics over OTLP (``otlp_endpoint`` or the ``OTEL_*`` variables), and the
Prometheus endpoint (``prometheus_port``). Two hooks, both removed on exit (also on error):

* ``subscribe_request_admission_events`` — DataDesigner's process-wide request callbacks;
* the designer's resource provider gets our scheduler sink next to its own (through
  DataDesigner's ``fanout_scheduler_event_sinks``, which isolates sink failures), and the column
  configs give the columns' inputs for idle attribution.

Nothing here raises into DataDesigner: every callback catches, counts (``LiveRun.errors``) and
logs once, like an OTel span processor. A sink that fails is dropped by ddscope's EventBus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddscope import __version__
from ddscope.engine.client.scrub import scrub_error_text
from ddscope.events import EventBus, EventSink, event_adapter
from ddscope.exporters.otel.setup import build_otel_sink
from ddscope.integrations.datadesigner.layout import RunLayout
from ddscope.integrations.datadesigner.requests import RequestTranslator
from ddscope.integrations.datadesigner.translate import Out, RunTranslator
from ddscope.record.jsonl import JsonlRecorder

log = logging.getLogger(__name__)

# How long events wait to be put in time order (see _Bridge): DataDesigner publishes a request's
# admission when another waiter's acquire returns, which can take a cooldown or two.
REORDER_S = 10.0
TICK_S = 0.5  # how often waiting events are checked while DataDesigner is quiet


@dataclass
class LiveRun:
    """What :func:`observe` did: the records written, warnings, and swallowed errors."""

    records: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    errors: int = 0
    requests_without_task: int = 0
    late_events: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)  # from a newer DataDesigner


@dataclass
class _Job:
    bus: EventBus
    run: RunTranslator
    requests: RequestTranslator
    finish: Callable[[], list[str]]


class _Bridge:
    """DataDesigner's scheduler sink (``emit_scheduler_event``) and request callback
    (``on_request_event``) → translated ddscope events on one EventBus per job.

    *Order.* DataDesigner delivers request events late and out of order: its admission
    controller collects the events of every waiter it admits and publishes them when the
    *calling* waiter's acquire returns, so a request's ``request_lease_acquired`` can arrive
    after its ``request_lease_released``, seconds after it happened. Events therefore wait in a
    heap ordered by ``captured_at_monotonic`` and are translated once they are ``reorder_s``
    old (and all of them when the job completes or the block ends); one arriving later still is
    translated as it comes and counted in ``LiveRun.late_events``.
    """

    def __init__(
        self,
        record: Path,
        make_extra: Callable[[], tuple[list[EventSink], Any]],
        live: LiveRun,
        reorder_s: float,
    ) -> None:
        self._record = record
        self._make_extra = make_extra
        self._live = live
        self._reorder_s = reorder_s
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._heap: list[tuple[float, int, bool, dict[str, Any]]] = []
        self._pushed = 0
        self._released = float("-inf")  # captured time of the last event translated
        self.dependencies: dict[str, list[str]] | None = None

    # DataDesigner calls these ---------------------------------------------------------------

    def emit_scheduler_event(self, event: Any) -> None:
        self._guard(event, scheduler=True)

    def on_request_event(self, event: Any) -> None:
        self._guard(event, scheduler=False)

    def _guard(self, event: Any, *, scheduler: bool) -> None:
        try:
            with self._lock:
                self._arrive(_as_dict(event), scheduler)
        except Exception:  # never into DataDesigner: count, log the first
            self._live.errors += 1
            if self._live.errors == 1:
                log.warning("ddscope: translating a DataDesigner event failed", exc_info=True)

    # ordering -------------------------------------------------------------------------------

    def _arrive(self, event: dict[str, Any], scheduler: bool) -> None:
        captured = event.get("captured_at_monotonic")
        at = float(captured) if isinstance(captured, int | float) else time.monotonic()
        kind = event.get("event_kind")
        if at < self._released:
            self._live.late_events += 1
            self._translate(event, scheduler)
            return
        self._pushed += 1
        heapq.heappush(self._heap, (at, self._pushed, scheduler, event))
        if kind in ("scheduler_job_started", "scheduler_job_completed"):
            self._drain(float("inf"))  # a job's edges: everything before them goes now
        else:
            self._drain(time.monotonic() - self._reorder_s)

    def tick(self) -> None:
        """Translates what has waited long enough even while DataDesigner is quiet (a long
        cooldown emits nothing), so live sinks lag by at most ``reorder_s`` + one tick."""
        try:
            with self._lock:
                self._drain(time.monotonic() - self._reorder_s)
        except Exception:
            self._live.errors += 1
            log.debug("ddscope: a timed drain failed", exc_info=True)

    def _drain(self, up_to: float) -> None:
        while self._heap and self._heap[0][0] <= up_to:
            at, _, scheduler, event = heapq.heappop(self._heap)
            self._released = max(self._released, at)
            self._translate(event, scheduler)

    # translation ----------------------------------------------------------------------------

    def _translate(self, event: dict[str, Any], scheduler: bool) -> None:
        if scheduler:
            self._scheduler(event)
        elif self._job is not None:
            self._emit(self._job, self._job.requests.translate(event))

    def _scheduler(self, event: dict[str, Any]) -> None:
        kind = event.get("event_kind")
        if kind == "scheduler_job_started":
            self._end_job()
            self._start_job(event)
            return
        job = self._job
        if job is None:
            return
        out: Out = []
        if kind == "scheduler_job_completed":
            out += job.requests.close(job.run.clock(event.get("captured_at_monotonic")))
        out += job.run.scheduler(event)
        if kind == "worker_spawned" and isinstance(event.get("task_execution_id"), str):
            out += job.requests.lease_known(event["task_execution_id"])
        if job.run.holding:  # live, a deferral's kind comes from its request or not at all
            job.run.flush_unresolved()
        self._emit(job, out)
        if job.run.finished:
            self._end_job()

    def _start_job(self, event: dict[str, Any]) -> None:
        layout = RunLayout.from_job_started(event, self.dependencies)
        captured = float(event.get("captured_at_monotonic") or time.monotonic())
        # DataDesigner's times are time.monotonic(): anchor them to the wall clock now.
        started = time.time_ns() - int((time.monotonic() - captured) * 1e9)
        path = self._free_path()
        extra, finish = self._make_extra()
        bus = EventBus([JsonlRecorder(path), *extra])
        bus.open(layout.header(started, "datadesigner", __version__, wall_clock="live"))
        run = RunTranslator(layout, captured, request_events=True, scrub=_scrub)
        self._job = _Job(bus, run, RequestTranslator(run), finish)
        self._live.records.append(path)
        self._emit(self._job, run.start())

    def _free_path(self) -> Path:
        """``run.jsonl``, else ``run-2.jsonl``, ``run-3.jsonl`` … : never an existing record
        (not ``run.2.jsonl``: that is a resumed ddscope run's next segment)."""
        base, index = self._record, 1
        path = base
        while path.exists() or path in self._live.records:
            index += 1
            path = base.with_name(f"{base.stem}-{index}{base.suffix}")
        if index > 1 and not self._live.records:
            self._live.warnings.append(f"{base} exists; this job is recorded in {path.name}")
        return path

    def _emit(self, job: _Job, out: Out) -> None:
        for item in out:
            job.bus.emit(event_adapter.validate_python(item))
        self._live.events += len(out)

    def _end_job(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        self._live.requests_without_task += job.requests.skipped
        for kind, count in job.run.stats.unknown_kinds.items():
            self._live.unknown_kinds[kind] = self._live.unknown_kinds.get(kind, 0) + count
        job.bus.close()
        self._live.warnings += job.finish()

    def close(self) -> None:
        """On leaving the block: what waits in the heap is translated; a job still open (it
        never reported completion) is closed as it is: its record has no run_finished, so
        health calls it crashed, which it was."""
        with self._lock:
            try:
                self._drain(float("inf"))
                self._end_job()
            except Exception:
                self._live.errors += 1
                log.warning("ddscope: closing the DataDesigner run's sinks failed", exc_info=True)


@contextlib.contextmanager
def observe(
    designer: Any,
    record: str | Path = "ddscope-out/run.jsonl",
    *,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    prometheus_port: int | None = None,
    sinks: Sequence[EventSink] = (),
    reorder_s: float = REORDER_S,
) -> Iterator[LiveRun]:
    """Records (and exports) every job ``designer`` runs inside the block; see the module doc.
    A bad OTLP option raises here, before anything is hooked; nothing raises later."""
    live = LiveRun()

    def make_extra() -> tuple[list[EventSink], Callable[[], list[str]]]:
        otel, finish = build_otel_sink(otlp_endpoint, otlp_protocol, prometheus_port)
        return [*sinks, *([otel] if otel is not None else [])], finish

    bridge = _Bridge(Path(record), make_extra, live, reorder_s)
    stop = threading.Event()
    ticker = threading.Thread(
        target=_tick, args=(bridge, stop), name="ddscope-datadesigner", daemon=True
    )
    observability = _observability()
    undo: list[Callable[[], None]] = [bridge.close]
    try:
        undo.append(observability.subscribe_request_admission_events(bridge.on_request_event))
        undo.append(_hook_scheduler_sink(designer, bridge, observability))
        ticker.start()
        undo.append(lambda: _stop(stop, ticker))
        yield live
    finally:
        for step in reversed(undo):  # ticker, hook, subscription, then the sinks
            try:
                step()
            except Exception:  # leaving must not mask the block's own exception
                live.errors += 1
                log.warning("ddscope: undoing a DataDesigner hook failed", exc_info=True)


def _stop(stop: threading.Event, ticker: threading.Thread) -> None:
    stop.set()
    ticker.join(5)


def _tick(bridge: _Bridge, stop: threading.Event) -> None:
    while not stop.wait(TICK_S):  # bounded: ends when the block ends
        bridge.tick()


def _hook_scheduler_sink(designer: Any, bridge: _Bridge, observability: Any) -> Callable[[], None]:
    """Wraps the designer's ``_create_resource_provider`` (an instance attribute, so other
    designers are untouched) to add ``bridge`` as a scheduler event sink; returns the undo."""
    fanout = observability.fanout_scheduler_event_sinks
    original = designer._create_resource_provider

    def hooked(dataset_name: str, config_builder: Any, *args: Any, **kwargs: Any) -> Any:
        provider = original(dataset_name, config_builder, *args, **kwargs)
        try:
            bridge.dependencies = _dependencies(config_builder)
            provider.scheduler_event_sink = fanout(provider.scheduler_event_sink, bridge)
        except Exception:
            log.warning("ddscope: could not attach to DataDesigner's scheduler", exc_info=True)
        return provider

    designer._create_resource_provider = hooked

    def unhook() -> None:
        if vars(designer).get("_create_resource_provider") is hooked:
            del designer._create_resource_provider

    return unhook


def _observability() -> Any:
    """DataDesigner's observability module (an optional dependency: ddscope[datadesigner])."""
    try:
        return importlib.import_module("data_designer.engine.observability")
    except ImportError as exc:
        raise ImportError(
            "ddscope's DataDesigner adapter needs data-designer: "
            "pip install 'ddscope[datadesigner]'"
        ) from exc


def _dependencies(config_builder: Any) -> dict[str, list[str]]:
    return {
        str(column.name): [str(name) for name in column.required_columns]
        for column in config_builder.get_column_configs()
    }


def _as_dict(event: Any) -> dict[str, Any]:
    """A DataDesigner event dataclass as a dict, shallow: its fields are JSON-safe already."""
    if isinstance(event, dict):
        return event
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def _scrub(text: str) -> str:
    return scrub_error_text(text)
