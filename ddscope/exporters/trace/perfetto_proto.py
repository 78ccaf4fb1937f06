"""Perfetto TrackEvent packets built with the ``perfetto`` package's generated protobuf classes.

Two uses: :func:`descriptor_packet` builds the (rare) track-descriptor packets for both writers,
and :class:`ProtoTraceWriter` is the reference writer: every packet is a real ``TracePacket``
message, streamed one at a time through ``StreamingTraceProtoBuilder``. It is the slower of the
two (message construction dominates) and serves as the oracle the hand-encoded
:class:`~ddscope.exporters.trace.perfetto_wire.WireTraceWriter` is tested against.

Both writers put every packet on one trusted sequence (id 1). The first packet clears the
sequence's incremental state; event names and debug-annotation names are interned on it
(``interned_data`` on the packet that first uses a name, then ``name_iid``), and packets that
rely on interned names say so with ``SEQ_NEEDS_INCREMENTAL_STATE``.
"""

from __future__ import annotations

from typing import IO

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    DebugAnnotation,
    TracePacket,
    TrackDescriptor,
    TrackEvent,
)
from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

from ddscope.exporters.trace.layout import TrackSpec
from ddscope.exporters.trace.writer import Args, Counters, Flows

SEQUENCE_ID = 1
STATE_CLEARED = TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
NEEDS_STATE = TracePacket.SEQ_NEEDS_INCREMENTAL_STATE


def descriptor_packet(spec: TrackSpec, *, first: bool) -> TracePacket:
    """The TrackDescriptor packet declaring ``spec`` (``first`` clears incremental state)."""
    packet = TracePacket()
    packet.trusted_packet_sequence_id = SEQUENCE_ID
    if first:
        packet.sequence_flags = STATE_CLEARED
    desc = packet.track_descriptor
    desc.uuid = spec.uuid
    desc.name = spec.name
    if spec.parent is not None:
        desc.parent_uuid = spec.parent
    if spec.pid is not None:
        desc.process.pid = spec.pid
        desc.process.process_name = spec.name
    if spec.counter:
        desc.counter.SetInParent()
        if spec.unit:
            desc.counter.unit_name = spec.unit
    else:
        desc.child_ordering = TrackDescriptor.EXPLICIT
    desc.sibling_order_rank = spec.rank
    # Lanes have distinct names anyway; say it so the UI never folds two lanes into one.
    desc.sibling_merge_behavior = TrackDescriptor.SIBLING_MERGE_BEHAVIOR_NONE
    return packet


def set_annotation_value(annotation: DebugAnnotation, value: int | float | str | bool) -> None:
    if value is True or value is False:
        annotation.bool_value = value
    elif isinstance(value, int):
        annotation.int_value = value
    elif isinstance(value, float):
        annotation.double_value = value
    else:
        annotation.string_value = str(value)


class ProtoTraceWriter:
    """Reference :class:`~ddscope.exporters.trace.writer.TraceWriter` on the protobuf classes."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._builder = StreamingTraceProtoBuilder(file)
        self._declared = 0
        self._event_names: dict[str, int] = {}
        self._annotation_names: dict[str, int] = {}

    def declare(self, track: TrackSpec) -> None:
        self._builder.write_packet(descriptor_packet(track, first=self._declared == 0))
        self._declared += 1

    def begin(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        counters: Counters = (),
    ) -> None:
        packet, event = self._event(ts, track, TrackEvent.TYPE_SLICE_BEGIN, args, counters)
        event.name_iid = self._event_name(packet, name)
        event.flow_ids.extend(flows)
        self._builder.write_packet(packet)

    def end(self, ts: int, track: int, args: Args = (), counters: Counters = ()) -> None:
        packet, _ = self._event(ts, track, TrackEvent.TYPE_SLICE_END, args, counters)
        self._builder.write_packet(packet)

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
        packet, event = self._event(ts, track, TrackEvent.TYPE_INSTANT, args, counters)
        event.name_iid = self._event_name(packet, name)
        event.flow_ids.extend(flows)
        event.terminating_flow_ids.extend(terminating)
        self._builder.write_packet(packet)

    def counter(self, ts: int, track: int, value: int | float) -> None:
        packet = TracePacket(timestamp=ts, trusted_packet_sequence_id=SEQUENCE_ID)
        event = packet.track_event
        event.type = TrackEvent.TYPE_COUNTER
        event.track_uuid = track
        if isinstance(value, int):
            event.counter_value = value
        else:
            event.double_counter_value = value
        self._builder.write_packet(packet)

    def close(self) -> int:
        self._file.flush()
        return self._file.tell()

    def _event(
        self, ts: int, track: int, kind: int, args: Args, counters: Counters
    ) -> tuple[TracePacket, TrackEvent]:
        packet = TracePacket(timestamp=ts, trusted_packet_sequence_id=SEQUENCE_ID)
        packet.sequence_flags = NEEDS_STATE
        event = packet.track_event
        event.type = kind
        event.track_uuid = track
        for key, value in args:
            if value is None:
                continue
            annotation = event.debug_annotations.add()
            annotation.name_iid = self._annotation_name(packet, key)
            set_annotation_value(annotation, value)
        for counter_track, value in counters:
            event.extra_counter_track_uuids.append(counter_track)
            event.extra_counter_values.append(value)
        return packet, event

    def _event_name(self, packet: TracePacket, name: str) -> int:
        iid = self._event_names.get(name)
        if iid is None:
            iid = self._event_names[name] = len(self._event_names) + 1
            packet.interned_data.event_names.add(iid=iid, name=name)
        return iid

    def _annotation_name(self, packet: TracePacket, name: str) -> int:
        iid = self._annotation_names.get(name)
        if iid is None:
            iid = self._annotation_names[name] = len(self._annotation_names) + 1
            packet.interned_data.debug_annotation_names.add(iid=iid, name=name)
        return iid
