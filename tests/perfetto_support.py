"""Helpers for the trace exporter tests (not a test module).

:func:`read_trace` parses a .pftrace with the real Perfetto protobuf classes and checks, packet by
packet in file order, what every valid export must satisfy: one trusted sequence whose first
packet clears incremental state; every track declared (parent first) before any event uses it;
interned names resolved; slices only on slice tracks, counters only on counter tracks; per track,
timestamps never go backwards and begin/end pairs nest; every flow terminated exactly once and
never used after. It returns what tests then compare with the record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    DebugAnnotation,
    Trace,
    TracePacket,
    TrackDescriptor,
    TrackEvent,
)

from ddscope.events import Event, RunHeader
from ddscope.record.jsonl import RunReader


@dataclass
class Mark:
    """A slice or an instant as read back (``end == begin`` for instants); ``seq`` is the index
    of its (begin) packet in the file."""

    seq: int
    track: int
    name: str
    begin: int
    end: int
    args: dict[str, Any]
    flows: list[int] = field(default_factory=list)
    terminating: list[int] = field(default_factory=list)


@dataclass
class ParsedTrace:
    tracks: dict[int, TrackDescriptor]
    slices: list[Mark]
    instants: list[Mark]
    counters: dict[int, list[tuple[int, int]]]  # counter track → (ts, value) in file order

    def children(self, parent: int) -> list[int]:
        return [uuid for uuid, d in self.tracks.items() if d.parent_uuid == parent]

    def find(self, name: str, parent: int | None = None) -> int:
        found = [
            uuid
            for uuid, d in self.tracks.items()
            if d.name == name and (parent is None or d.parent_uuid == parent)
        ]
        assert len(found) == 1, f"{len(found)} tracks named {name!r}"
        return found[0]

    def on(self, tracks: Iterable[int]) -> list[Mark]:
        wanted = set(tracks)
        return [s for s in self.slices if s.track in wanted]

    def counter_values(self, track: int) -> list[int]:
        return [value for _, value in self.counters[track]]


class _Reader:
    def __init__(self) -> None:
        self.tracks: dict[int, TrackDescriptor] = {}
        self.event_names: dict[int, str] = {}
        self.annotation_names: dict[int, str] = {}
        self.open: dict[int, list[Mark]] = defaultdict(list)
        self.last_ts: dict[int, int] = {}
        self.live_flows: set[int] = set()
        self.ended_flows: set[int] = set()
        self.out = ParsedTrace({}, [], [], defaultdict(list))

    def packet(self, index: int, packet: TracePacket) -> None:
        assert packet.trusted_packet_sequence_id == 1, f"packet {index}: other sequence"
        if index == 0:
            assert packet.sequence_flags & TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
        for entry in packet.interned_data.event_names:
            assert entry.iid not in self.event_names, f"event name iid {entry.iid} reused"
            self.event_names[entry.iid] = entry.name
        for entry in packet.interned_data.debug_annotation_names:
            assert entry.iid not in self.annotation_names
            self.annotation_names[entry.iid] = entry.name
        if packet.HasField("track_descriptor"):
            self.declare(packet.track_descriptor)
        if packet.HasField("track_event"):
            self.event(index, packet)

    def declare(self, desc: TrackDescriptor) -> None:
        assert desc.uuid not in self.tracks, f"track {desc.uuid} declared twice"
        if desc.HasField("parent_uuid"):
            assert desc.parent_uuid in self.tracks, f"track {desc.uuid}: parent not declared yet"
        else:
            assert desc.HasField("process"), "only the process track has no parent"
        self.tracks[desc.uuid] = desc

    def event(self, index: int, packet: TracePacket) -> None:
        event, ts = packet.track_event, packet.timestamp
        where = f"packet {index}"
        assert event.track_uuid in self.tracks, f"{where}: track {event.track_uuid} not declared"
        is_counter_track = self.tracks[event.track_uuid].HasField("counter")
        assert is_counter_track == (event.type == TrackEvent.TYPE_COUNTER), where
        self.advance(event.track_uuid, ts, where)
        for track, value in zip(
            event.extra_counter_track_uuids, event.extra_counter_values, strict=True
        ):
            assert self.tracks[track].HasField("counter"), f"{where}: extra counter track"
            self.advance(track, ts, where)
            self.out.counters[track].append((ts, value))
        if event.type == TrackEvent.TYPE_COUNTER:
            self.out.counters[event.track_uuid].append((ts, event.counter_value))
            return
        assert packet.sequence_flags & TracePacket.SEQ_NEEDS_INCREMENTAL_STATE, where
        assert not event.HasField("name"), f"{where}: event name not interned"
        self.slice_event(index, event, ts)

    def advance(self, track: int, ts: int, where: str) -> None:
        assert ts >= self.last_ts.get(track, 0), f"{where}: time went backwards on {track}"
        self.last_ts[track] = ts

    def slice_event(self, index: int, event: TrackEvent, ts: int) -> None:
        where = f"packet {index}"
        args = {self.annotation_names[a.name_iid]: value_of(a) for a in event.debug_annotations}
        self.flows(event, where)
        stack = self.open[event.track_uuid]
        if event.type == TrackEvent.TYPE_SLICE_END:
            assert stack, f"{where}: end without a begin"
            mark = stack.pop()
            mark.end = ts
            mark.args.update(args)
            self.out.slices.append(mark)
            return
        name = self.event_names[event.name_iid]
        mark = Mark(index, event.track_uuid, name, ts, ts, args, list(event.flow_ids))
        mark.terminating = list(event.terminating_flow_ids)
        if event.type == TrackEvent.TYPE_SLICE_BEGIN:
            stack.append(mark)
        else:
            assert event.type == TrackEvent.TYPE_INSTANT, where
            self.out.instants.append(mark)

    def flows(self, event: TrackEvent, where: str) -> None:
        for flow in [*event.flow_ids, *event.terminating_flow_ids]:
            assert flow not in self.ended_flows, f"{where}: flow {flow} used after its end"
        self.live_flows.update(event.flow_ids)
        for flow in event.terminating_flow_ids:
            self.live_flows.discard(flow)
            self.ended_flows.add(flow)

    def finish(self) -> ParsedTrace:
        still_open = {track: len(s) for track, s in self.open.items() if s}
        assert not still_open, f"slices never ended: {still_open}"
        assert not self.live_flows, f"flows never terminated: {sorted(self.live_flows)[:5]}"
        self.out.tracks = self.tracks
        return self.out


def value_of(annotation: DebugAnnotation) -> Any:
    kind = annotation.WhichOneof("value")
    return getattr(annotation, kind) if kind else None


def read_trace(path: Path) -> ParsedTrace:
    trace = Trace()
    trace.ParseFromString(path.read_bytes())
    assert len(trace.packet) > 0
    reader = _Reader()
    for index, packet in enumerate(trace.packet):
        reader.packet(index, packet)
    return reader.finish()


# --- the record side -------------------------------------------------------------------------


def record_dicts(path: Path) -> list[dict[str, Any]]:
    """The record's events as dicts (complete lines only)."""
    return [d for _, d in RunReader(path, lenient=True).iter_dicts()]


def peak_concurrency(events: list[dict[str, Any]], kind: str, key: str) -> dict[str, int]:
    """Peak number of open ``kind`` intervals (``kind_started``/``kind_finished``) per
    ``key`` (domain or column), sweeping the events in record order."""
    open_now: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    for d in events:
        if d["kind"] == f"{kind}_started":
            open_now[d[key]] += 1
            peak[d[key]] = max(peak[d[key]], open_now[d[key]])
        elif d["kind"] == f"{kind}_finished":
            open_now[d[key]] -= 1
    return dict(peak)


def write_record(path: Path, header: RunHeader, events: Iterable[Event]) -> Path:
    """A record written the way JsonlRecorder writes it, without its flusher thread."""
    lines = [header.model_dump_json(by_alias=True, exclude_none=True)]
    lines += [event.model_dump_json(exclude_none=True) for event in events]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
