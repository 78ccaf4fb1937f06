"""A run record as a timeline of tracks, slices, counters, instants and flows — format-agnostic.

Fed one event dict at a time (``RunReader.iter_dicts()``), it tells a
:class:`~ddscope.exporters.trace.writer.TraceWriter` what to draw; memory holds only what is
open (intervals, live flows, tracks), never the events. Layout under one process for the run:

- ``run`` (the run slice) and ``events`` (shutdown, row drops, deferrals as instants);
- ``row groups`` and ``salvage rounds``, lane groups;
- counters ``ready queue`` (health events), ``rows done`` (checkpointed), ``rows dropped``;
- one group per column: its task leases on lanes;
- one group per provider/model domain (see :mod:`ddscope.exporters.trace.domain`).

Flows follow a task, keyed by ``task_id``: lease → wait → attempt → next wait → … → an instant
at the lease's end that terminates the flow (a terminating id on the lease's own end would link
the lease to itself). A deferred task keeps its flow into its salvage lease. Timestamps are
``started_at_unix_ns + t_ns``, clamped so they never go backwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ddscope.errors import ConfigError, RecordError
from ddscope.events import RunHeader
from ddscope.exporters.result import ExportResult
from ddscope.exporters.trace.domain import DomainTracks
from ddscope.exporters.trace.layout import LaneGroup, Layout, SingleTrack
from ddscope.exporters.trace.writer import Flows, TraceWriter
from ddscope.record.detect import open_record

Handler = Callable[[dict[str, Any], int], None]
# Kinds that concern one domain only: DomainTracks methods, called with the event's domain.
_DOMAIN_HANDLERS: dict[str, Callable[[DomainTracks, dict[str, Any], int], None]] = {
    "wait_started": DomainTracks.wait_started,
    "wait_finished": DomainTracks.wait_finished,
    "attempt_started": DomainTracks.attempt_started,
    "attempt_finished": DomainTracks.attempt_finished,
    "cooldown_started": DomainTracks.cooldown_started,
    "cooldown_finished": DomainTracks.cooldown_finished,
    "breaker": DomainTracks.breaker,
}
PID = 1
Lanes = LaneGroup | SingleTrack
_UNFINISHED = (("unfinished", True),)


class RunTimeline:
    """``source`` names the record in messages. An event that lacks a field the trace needs
    raises RecordError naming its line, or with ``lenient`` is skipped with a note."""

    def __init__(
        self,
        writer: TraceWriter,
        header: RunHeader,
        source: str = "<record>",
        lenient: bool = False,
    ) -> None:
        self._w = writer
        self.source = source
        self.lenient = lenient
        self.notes: list[str] = []
        self.base = header.started_at_unix_ns
        self.now = self.base
        self.run_start = self.base
        self.rows_done = 0
        self.rows_dropped = 0
        self._column_domain = {c.name: c.domain for c in header.columns}
        self._columns: dict[str, LaneGroup] = {}
        self._domains: dict[str, DomainTracks] = {}
        self._declare_run_tracks(header)
        # open intervals: id → (lane group, lane uuid)
        self._open_run: dict[int, tuple[Lanes, int]] = {}
        self._open_row_groups: dict[Any, tuple[Lanes, int]] = {}
        self._open_salvage: dict[Any, tuple[Lanes, int]] = {}
        self._open_leases: dict[Any, tuple[LaneGroup, int, str]] = {}
        self._task_leases: dict[str, int] = {}  # task_id → open leases of the task
        # task_id → ((flow id,), column group track, row) while the task's flow is live
        self._flows: dict[str, tuple[Flows, int, Any]] = {}
        self._next_flow = 1
        self.handlers: dict[str, Handler] = self._handler_table()

    def _declare_run_tracks(self, header: RunHeader) -> None:
        """The run-level tracks, then the header's columns and domains, in display order."""
        self.layout = layout = Layout(self._w.declare)
        name = f"{header.pipeline_name} · run {header.run_id}"
        self.process = process = layout.process(name, PID)
        self._run = SingleTrack(layout, ("run",), "run", process)
        self._events = layout.track(("events",), "events", process)
        self._row_groups = LaneGroup(layout, ("row_groups",), "row groups", process, "row group")
        self._salvage = LaneGroup(layout, ("salvage",), "salvage rounds", process, "salvage")
        self._queue = layout.track(("queue",), "ready queue", process, counter=True, unit="tasks")
        self._rows_done = layout.track(("done",), "rows done", process, counter=True, unit="rows")
        self._rows_dropped = layout.track(
            ("dropped",), "rows dropped", process, counter=True, unit="rows"
        )
        for column in header.columns:
            self._column(column.name)
        for domain in header.domains:
            self._domain(domain.domain)

    # --- feeding -------------------------------------------------------------------------

    def consume(self, events: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Feeds ``(line_no, event)`` pairs, as ``RunReader.iter_dicts()`` yields them."""
        handlers, base, now = self.handlers, self.base, self.now
        domains, by_domain = self._domains, _DOMAIN_HANDLERS
        ignore = _ignore
        for line_no, d in events:
            ts = base + d["t_ns"]
            if ts < now:
                ts = now  # a record's clock never runs backwards; a trace track must not either
            else:
                now = self.now = ts
            kind = d["kind"]
            handler = by_domain.get(kind)
            try:
                if handler is not None:  # most events: called straight on the domain's tracks
                    handler(domains.get(d["domain"]) or self._domain_of(d), d, ts)
                else:
                    handlers.get(kind, ignore)(d, ts)
            except KeyError as exc:
                self._missing_field(line_no, d, exc)

    def _missing_field(self, line_no: int, d: dict[str, Any], exc: KeyError) -> None:
        field = exc.args[0] if exc.args else None
        if not isinstance(field, str) or field in d:
            raise exc  # not the event's fault
        message = f"{self.source}:{line_no}: {d['kind']} event without {field!r}"
        if not self.lenient:
            raise RecordError(message) from None
        self.notes.append(f"{message}; skipped")

    def finish(self) -> list[str]:
        """Closes what a cut-off record left open, at the last timestamp; returns notes."""
        ts, closed = self.now, 0
        for domain in self._domains.values():
            closed += domain.close_open(ts)
        for lease_id in list(self._open_leases):
            self.lease_finished({"lease_id": lease_id, "outcome": "unfinished"}, ts)
            closed += 1
        for task, (flows, group, _) in self._flows.items():
            self._w.instant(ts, group, "task never resumed", (("task_id", task),), (), flows)
        self._flows.clear()
        for opened in (self._open_salvage, self._open_row_groups, self._open_run):
            for lane_group, lane in opened.values():
                self._w.end(ts, lane, _UNFINISHED)
                lane_group.release(lane)
                closed += 1
            opened.clear()
        if closed:
            self.notes.append(
                f"{closed} intervals left open were closed at the end (record cut off?)"
            )
        return self.notes

    def _handler_table(self) -> dict[str, Handler]:
        return {
            "run_started": self.run_started,
            "run_finished": self.run_finished,
            "row_group_started": self.row_group_started,
            "row_group_finished": self.row_group_finished,
            "lease_started": self.lease_started,
            "lease_finished": self.lease_finished,
            "limit_changed": self.limit_changed,
            "salvage_started": self.salvage_started,
            "salvage_finished": self.salvage_finished,
            "task_deferred": self.task_deferred,
            "row_dropped": self.row_dropped,
            "health": self.health,
            "shutdown": self.shutdown,
        }

    # --- tracks --------------------------------------------------------------------------

    def _column(self, column: str) -> LaneGroup:
        group = self._columns.get(column)
        if group is None:
            key = ("column", column)
            group = self._columns[column] = LaneGroup(self.layout, key, column, self.process)
        return group

    def _domain_of(self, d: dict[str, Any]) -> DomainTracks:
        domain = str(d.get("domain", "?"))
        tracks = self._domains.get(domain)
        return tracks if tracks is not None else self._domain(domain)

    def _domain(self, domain: str) -> DomainTracks:
        tracks = self._domains.get(domain)
        if tracks is None:
            tracks = DomainTracks(self.layout, self._w, domain, self.process, self._flow_of)
            self._domains[domain] = tracks
        return tracks

    # --- run, row groups, salvage --------------------------------------------------------

    def run_started(self, d: dict[str, Any], ts: int) -> None:
        self.run_start = ts
        args = (("num_records", d.get("num_records")), ("row_groups", d.get("row_groups")))
        self._open(self._open_run, 0, self._run, ts, "run", args)

    def run_finished(self, d: dict[str, Any], ts: int) -> None:
        keys = ("outcome", "reason", "message", "rows_completed", "rows_dropped")
        self._close(self._open_run, 0, ts, tuple((k, d.get(k)) for k in keys))

    def row_group_started(self, d: dict[str, Any], ts: int) -> None:
        group = d.get("row_group")
        args = (("first_row", d.get("first_row")), ("rows", d.get("rows")))
        self._open(self._open_row_groups, group, self._row_groups, ts, f"row group {group}", args)

    def row_group_finished(self, d: dict[str, Any], ts: int) -> None:
        keys = ("outcome", "rows_completed", "rows_dropped")
        args = tuple((k, d.get(k)) for k in keys)
        completed = d.get("rows_completed")
        if isinstance(completed, int) and completed:
            self.rows_done += completed
            self._w.counter(ts, self._rows_done, self.rows_done)
        self._close(self._open_row_groups, d.get("row_group"), ts, args)

    def salvage_started(self, d: dict[str, Any], ts: int) -> None:
        n = d.get("round")
        args = (("tasks", d.get("tasks")),)
        self._open(self._open_salvage, n, self._salvage, ts, f"salvage round {n}", args)

    def salvage_finished(self, d: dict[str, Any], ts: int) -> None:
        args = (("recovered", d.get("recovered")), ("still_deferred", d.get("still_deferred")))
        self._close(self._open_salvage, d.get("round"), ts, args)

    def _open(
        self,
        opened: dict[Any, tuple[Lanes, int]],
        key: Any,
        group: Lanes,
        ts: int,
        name: str,
        args: tuple[tuple[str, Any], ...],
    ) -> None:
        if key in opened:  # started twice: close the first so lanes stay one-slice-at-a-time
            self._close(opened, key, ts, (("restarted", True),))
        lane = group.acquire()
        opened[key] = (group, lane)
        self._w.begin(ts, lane, name, args)

    def _close(
        self,
        opened: dict[Any, tuple[Lanes, int]],
        key: Any,
        ts: int,
        args: tuple[tuple[str, Any], ...],
    ) -> None:
        entry = opened.pop(key, None)
        if entry is not None:
            group, lane = entry
            self._w.end(ts, lane, args)
            group.release(lane)

    # --- leases and flows ----------------------------------------------------------------

    def lease_started(self, d: dict[str, Any], ts: int) -> None:
        lease_id, task, column = d["lease_id"], d["task_id"], d["column"]
        if lease_id in self._open_leases:
            self.lease_finished({"lease_id": lease_id, "outcome": "restarted"}, ts)
        group = self._column(column)
        lane = group.acquire()
        self._open_leases[lease_id] = (group, lane, task)
        self._task_leases[task] = self._task_leases.get(task, 0) + 1
        flows: Flows = ()
        if self._column_domain.get(column, column) is not None:  # model columns, or unknown
            flows = self._flow_of(task) or self._new_flow(task, group.uuid, d.get("row"))
        salvage = d.get("salvage_round")
        name = column if salvage is None else f"{column} · salvage {salvage}"
        args = (("task_id", task), ("row_group", d.get("row_group")))
        self._w.begin(ts, lane, name, args, flows)

    def lease_finished(self, d: dict[str, Any], ts: int) -> None:
        lease_id, outcome, error = d["lease_id"], d["outcome"], d.get("error_kind")
        entry = self._open_leases.pop(lease_id, None)
        if entry is None:
            return
        group, lane, task = entry
        self._task_leases[task] -= 1
        if not self._task_leases[task]:
            del self._task_leases[task]
        args: tuple[tuple[str, Any], ...] = (("outcome", outcome), ("error_kind", error))
        flow = self._flows.get(task)
        if flow is not None:  # the outcome goes on the instant that carries the flow
            if outcome == "deferred":  # the flow goes on into the salvage lease
                self._w.instant(ts, lane, "lease deferred", args, flow[0])
            else:
                del self._flows[task]
                self._w.instant(ts, lane, f"lease {outcome}", args, (), flow[0])
            args = ()
        self._w.end(ts, lane, (*args, *_UNFINISHED) if outcome == "unfinished" else args)
        group.release(lane)

    def _flow_of(self, task: Any) -> Flows:
        flow = self._flows.get(task)
        return flow[0] if flow is not None else ()

    def _new_flow(self, task: str, group_uuid: int, row: Any) -> Flows:
        flows = (self._next_flow,)
        self._next_flow += 1
        self._flows[task] = (flows, group_uuid, row)
        return flows

    # --- requests (delegated to the domain) ----------------------------------------------

    def limit_changed(self, d: dict[str, Any], ts: int) -> None:
        self._domain_of(d).limit_changed(d, ts, self.run_start)

    # --- point events --------------------------------------------------------------------

    def task_deferred(self, d: dict[str, Any], ts: int) -> None:
        keys = ("task_id", "column", "row", "error_kind", "attempts", "message")
        self._w.instant(ts, self._events, "task deferred", tuple((k, d.get(k)) for k in keys))

    def row_dropped(self, d: dict[str, Any], ts: int) -> None:
        keys = ("row", "row_group", "column", "task_id", "reason", "message")
        terminating = self._end_deferred_flows(d.get("task_id"), d.get("row"))
        args = tuple((k, d.get(k)) for k in keys)
        self.rows_dropped += 1
        counters = ((self._rows_dropped, self.rows_dropped),)
        self._w.instant(ts, self._events, "row dropped", args, (), terminating, counters)

    def _end_deferred_flows(self, task: Any, row: Any) -> Flows:
        """Flows of deferred tasks (no lease open) that end with their row's drop: the task's
        own, or, for a row-level drop (at shutdown), those of every deferred task of the row."""
        if task is not None:
            tasks = [task] if task in self._flows else []
        else:  # rare (drops), over live flows only: no index to keep on the hot path
            tasks = [t for t, flow in self._flows.items() if flow[2] == row]
        ended: Flows = ()
        for deferred in tasks:
            if deferred not in self._task_leases:
                ended += self._flows.pop(deferred)[0]
        return ended

    def health(self, d: dict[str, Any], ts: int) -> None:
        depth = d.get("queue_depth")
        if isinstance(depth, int):
            self._w.counter(ts, self._queue, depth)
        for domain in d.get("domains") or ():
            if isinstance(domain, dict) and isinstance(domain.get("domain"), str):
                self._domain(domain["domain"]).seed_limit(domain.get("limit"), ts)

    def shutdown(self, d: dict[str, Any], ts: int) -> None:
        args = (("reason", d.get("reason")), ("message", d.get("message")))
        self._w.instant(ts, self._events, "shutdown", (*args, ("domain", d.get("domain"))))


def _ignore(d: dict[str, Any], ts: int) -> None:
    """Kinds the reader knows but the timeline does not draw."""


WriterFactory = Callable[[IO[bytes], RunHeader], TraceWriter]


def export_timeline(
    record: Path, out: Path, make_writer: WriterFactory, *, lenient: bool = False
) -> ExportResult:
    """Streams ``record`` through a :class:`RunTimeline` into ``out`` (written whole or not at
    all: a ``.partial`` file is renamed at the end). Raises RecordError for a bad record and
    ConfigError for an output that cannot be written."""
    reader = open_record(record, lenient=lenient)  # run.jsonl or DataDesigner events
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as file:
            writer = make_writer(file, reader.header)
            timeline = RunTimeline(writer, reader.header, str(record), lenient)
            timeline.consume(reader.iter_dicts())
            notes = timeline.finish()
            size = writer.close()
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
    return ExportResult(out, reader.stats.events, size, reader.finish_warnings() + notes)
