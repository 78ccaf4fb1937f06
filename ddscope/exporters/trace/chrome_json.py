"""``ddtrace export RUN.jsonl --chrome-json``: the same timeline as Chrome trace-event JSON.

For tools that only read JSON (chrome://tracing, older viewers, ad-hoc scripts), and as the
size yardstick for the Perfetto export. Same layout, lanes and flows as the Perfetto trace
(:mod:`ddscope.exporters.trace.timeline`), written as a stream of ``traceEvents``:

- every slice track (a lane) is a thread of one process, named by ``thread_name`` metadata with
  its parent's name in front ("summary › summary #2"), ordered by ``thread_sort_index``;
- slices are ``B``/``E`` pairs; instants are ``i`` (thread scope), or zero-length ``X`` slices
  when they carry a flow (JSON importers attach flows to slices only);
- counters are ``C`` events named after their track;
- flows use the v2 fields ``bind_id``/``flow_in``/``flow_out`` on the slices themselves.

Timestamps are microseconds since the run started (a float keeps nanosecond digits there,
which it could not for epoch times).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

from ddscope.events import RunHeader
from ddscope.exporters.result import ExportResult
from ddscope.exporters.trace.layout import TrackSpec
from ddscope.exporters.trace.timeline import PID, export_timeline
from ddscope.exporters.trace.writer import Args, Counters, Flows

_FLUSH_EVENTS = 8192
_SORT_SPAN = 1000  # sort index digits per level of the track tree


def export_chrome_json(record: Path, out: Path, *, lenient: bool = False) -> ExportResult:
    """Writes ``out`` (.trace.json) from ``record`` (run.jsonl); same warnings as Perfetto's."""

    def make_writer(file: IO[bytes], header: RunHeader) -> ChromeJsonWriter:
        return ChromeJsonWriter(file, header.started_at_unix_ns)

    return export_timeline(Path(record), Path(out), make_writer, lenient=lenient)


class ChromeJsonWriter:
    """:class:`~ddscope.exporters.trace.writer.TraceWriter` for Chrome trace-event JSON."""

    def __init__(self, file: IO[bytes], base_ns: int) -> None:
        self._file = file
        self._base = base_ns
        self._pending: list[bytes] = []
        self.bytes_written = 0
        self._names: dict[int, str] = {}  # track uuid → display name (qualified)
        self._sort: dict[int, int] = {}  # track uuid → sort index
        self._live_flows: set[int] = set()
        self._write(b'{"displayTimeUnit":"ns","traceEvents":[\n')
        self._first = True

    def declare(self, track: TrackSpec) -> None:
        parent = track.parent
        if parent is None or parent not in self._names:
            self._names[track.uuid] = track.name
            self._sort[track.uuid] = 0
            if track.pid is not None:
                self._meta(track.uuid, "process_name", {"name": track.name})
            return
        parent_name = self._names[parent]
        top_level = self._sort[parent] == 0
        self._names[track.uuid] = track.name if top_level else f"{parent_name} › {track.name}"
        sort = self._sort[parent] * _SORT_SPAN + min(track.rank, _SORT_SPAN - 2) + 1
        self._sort[track.uuid] = sort
        if not track.counter:
            self._meta(track.uuid, "thread_name", {"name": self._names[track.uuid]})
            self._meta(track.uuid, "thread_sort_index", {"sort_index": sort})

    def begin(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        counters: Counters = (),
    ) -> None:
        event = self._event("B", ts, track, args)
        event["name"] = name
        self._bind_flow(event, flows, ())
        self._emit(event)
        self._counters(ts, counters)

    def end(self, ts: int, track: int, args: Args = (), counters: Counters = ()) -> None:
        self._emit(self._event("E", ts, track, args))
        self._counters(ts, counters)

    def instant(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        terminating: Flows = (),
        counters: Counters = (),
    ) -> None:
        if flows or terminating:
            event = self._event("X", ts, track, args)
            event["dur"] = 0
            self._bind_flow(event, flows, terminating[:1])
            for extra in terminating[1:]:  # one flow per JSON event: a marker per extra flow
                self.instant(ts, track, name, (), (), (extra,))
        else:
            event = self._event("i", ts, track, args)
            event["s"] = "t"
        event["name"] = name
        self._emit(event)
        self._counters(ts, counters)

    def counter(self, ts: int, track: int, value: int | float) -> None:
        self._emit(
            {
                "ph": "C",
                "pid": PID,
                "ts": (ts - self._base) / 1000,
                "name": self._names[track],
                "args": {"value": value},
            }
        )

    def close(self) -> int:
        self._write(b"\n]}\n")
        self._flush()
        self._file.flush()
        return self.bytes_written

    # --- helpers ---------------------------------------------------------------------------

    def _event(self, phase: str, ts: int, track: int, args: Args) -> dict[str, Any]:
        event: dict[str, Any] = {
            "ph": phase,
            "pid": PID,
            "tid": track,
            "ts": (ts - self._base) / 1000,
        }
        if args:
            values = {key: value for key, value in args if value is not None}
            if values:
                event["args"] = values
        return event

    def _bind_flow(self, event: dict[str, Any], flows: Flows, terminating: Flows) -> None:
        # A JSON event binds one flow; only a row drop may end several (see instant()).
        if terminating:
            event["bind_id"] = terminating[0]
            event["flow_in"] = True
            self._live_flows.discard(terminating[0])
        elif flows:
            event["bind_id"] = flows[0]
            if flows[0] in self._live_flows:
                event["flow_in"] = True
            self._live_flows.add(flows[0])
            event["flow_out"] = True

    def _counters(self, ts: int, counters: Counters) -> None:
        for track, value in counters:
            self.counter(ts, track, value)

    def _meta(self, track: int, name: str, args: dict[str, Any]) -> None:
        self._emit({"ph": "M", "pid": PID, "tid": track, "name": name, "args": args})

    def _emit(self, event: dict[str, Any]) -> None:
        line = orjson.dumps(event)
        self._write(line if self._first else b",\n" + line)
        self._first = False

    def _write(self, data: bytes) -> None:
        self._pending.append(data)
        if len(self._pending) >= _FLUSH_EVENTS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._file.write(data)
            self.bytes_written += len(data)
            self._pending.clear()
