"""Hand-encoded Perfetto TrackEvent packets: the fast writer behind ``ddtrace export --perfetto``.

Building one protobuf message object per event costs more than reading the event (see
benchmarks/bench_s6_perfetto.py), so the hot packet types — slice begin/end, instant, counter —
are encoded here straight to protobuf wire format, field numbers taken from the Perfetto schema
(perfetto_trace.proto). The output is a valid ``Trace``: a concatenation of ``Trace.packet``
fields (tag 1, length-delimited). Tests parse it with the generated classes and compare it
with :class:`~ddscope.exporters.trace.perfetto_proto.ProtoTraceWriter`'s output (equal messages,
equal size). About twice as fast as building message objects, per the S6 benchmark.
Track descriptors are rare and use the generated classes.
"""

from __future__ import annotations

import struct
from typing import IO

from ddscope.exporters.trace.layout import TrackSpec
from ddscope.exporters.trace.perfetto_proto import descriptor_packet
from ddscope.exporters.trace.writer import Args, Counters, Flows

_FLUSH_PIECES = 1 << 16  # pieces of packets per write: about 10k packets, 0.5 MB
_ANNOTATION_CACHE = 1 << 14
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack

# TracePacket fields: timestamp=8, trusted_packet_sequence_id=10 (always 1), track_event=11,
# interned_data=12, sequence_flags=13 (2 = SEQ_NEEDS_INCREMENTAL_STATE).
_TIMESTAMP = b"\x40"
_SEQUENCE = b"\x50\x01"
_NEEDS_STATE = b"\x68\x02"
_TRACK_EVENT = b"\x5a"
_INTERNED = b"\x62"
# TrackEvent fields: type=9, track_uuid=11, name_iid=10, debug_annotations=4,
# counter_value=30 (int64), double_counter_value=44, flow_ids=47 and terminating_flow_ids=48
# (fixed64), extra_counter_track_uuids=31, extra_counter_values=12 (repeated fields unpacked, as
# the proto2 schema declares them).
_BEGIN = b"\x48\x01"
_END = b"\x48\x02"
_INSTANT = b"\x48\x03"
_COUNTER = b"\x48\x04"
_TRACK_UUID = b"\x58"
_NAME_IID = b"\x50"
_ANNOTATION = b"\x22"
_COUNTER_INT = b"\xf0\x01"
_COUNTER_DOUBLE = b"\xe1\x02"
_FLOW = b"\xf9\x02"
_TERMINATING_FLOW = b"\x81\x03"
_EXTRA_COUNTER_TRACK = b"\xf8\x01"
_EXTRA_COUNTER_VALUE = b"\x60"
# InternedData: event_names=2, debug_annotation_names=3, each {iid=1, name=2}.
# DebugAnnotation: name_iid=1, bool=2, int=4, double=5, string=6.
_TRACE_PACKET = b"\x0a"  # Trace.packet
# What follows the timestamp in every packet, up to the track_event's length.
_EVENT_HEAD = _SEQUENCE + _NEEDS_STATE + _TRACK_EVENT
_COUNTER_HEAD = _SEQUENCE + _TRACK_EVENT  # counters use no interned state

# Varints from tables: any value below 2**14 is one lookup; larger ones are built from 14-bit
# groups ("continued" two-byte pieces), so a 61-bit timestamp costs four lookups, not a loop.
_SHORT = [bytes((v,)) if v < 0x80 else bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(1 << 14)]
_CONTINUED = [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14)]
# Trace.packet tag, packet length, then the packet's first byte: the timestamp's tag
_FRAMED_TS = [_TRACE_PACKET + length + _TIMESTAMP for length in _SHORT]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint (negative ints as 64-bit two's complement, like int64)."""
    if value < 0x4000:
        if value >= 0:
            return _SHORT[value]
        value &= 0xFFFF_FFFF_FFFF_FFFF
    pieces = []
    while value >= 0x4000:
        pieces.append(_CONTINUED[value & 0x3FFF])
        value >>= 14
    pieces.append(_SHORT[value])
    return b"".join(pieces)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


class WireTraceWriter:
    """Fast :class:`~ddscope.exporters.trace.writer.TraceWriter`: buffered, hand-encoded.

    Encoded debug annotations are cached by their (name, value) pair, so repeated values
    ("outcome": "ok", "attempt": 1) are encoded once; the cache is cleared when it grows past
    ``_ANNOTATION_CACHE`` entries, which bounds memory. (Numerically equal values of different
    types — 1, 1.0, True — under the same name share the first one's encoding.)
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._chunks: list[bytes] = []  # pieces of framed packets not yet written
        self.bytes_written = 0
        self._declared = 0
        self._event_names: dict[str, bytes] = {}  # name → encoded name_iid field
        self._annotation_keys: dict[str, bytes] = {}  # key → encoded DebugAnnotation.name_iid
        self._annotations_cache: dict[tuple[str, object], bytes] = {}
        self._new_interned: list[bytes] = []  # interned entries the next packet must carry
        self._tracks: dict[int, bytes] = {}  # uuid → encoded track_uuid field
        self._extra_tracks: dict[int, bytes] = {}  # uuid → encoded extra_counter_track_uuids
        # cached per 2**28 ns of timestamps (see _event_packet)
        self._ts_high = -1
        self._event_tail = self._counter_tail = b""
        self._event_fixed = self._counter_fixed = 0

    # --- TraceWriter -----------------------------------------------------------------------

    def declare(self, track: TrackSpec) -> None:
        packet = descriptor_packet(track, first=self._declared == 0).SerializeToString()
        self._declared += 1
        self._tracks[track.uuid] = _TRACK_UUID + varint(track.uuid)
        self._packet(packet)

    def begin(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        counters: Counters = (),
    ) -> None:
        event = _BEGIN + self._tracks[track] + (self._event_names.get(name) or self._new_name(name))
        if args:
            event += self._annotations(args)
        for flow in flows:
            event += _FLOW + _pack_fixed64(flow)
        if counters:
            event += self._extra_counters(counters)
        self._event_packet(ts, event)

    def end(self, ts: int, track: int, args: Args = (), counters: Counters = ()) -> None:
        event = _END + self._tracks[track]
        if args:
            event += self._annotations(args)
        if counters:
            event += self._extra_counters(counters)
        self._event_packet(ts, event)

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
        name_field = self._event_names.get(name) or self._new_name(name)
        event = _INSTANT + self._tracks[track] + name_field
        if args:
            event += self._annotations(args)
        for flow in flows:
            event += _FLOW + _pack_fixed64(flow)
        for flow in terminating:
            event += _TERMINATING_FLOW + _pack_fixed64(flow)
        if counters:
            event += self._extra_counters(counters)
        self._event_packet(ts, event)

    def counter(self, ts: int, track: int, value: int | float) -> None:
        if type(value) is int and 0 <= value < 0x4000:
            event = _COUNTER + self._tracks[track] + _COUNTER_INT + _SHORT[value]
        elif type(value) is int:
            event = _COUNTER + self._tracks[track] + _COUNTER_INT + varint(value)
        else:
            event = _COUNTER + self._tracks[track] + _COUNTER_DOUBLE + _pack_double(value)
        if ts >> 28 != self._ts_high:
            self._set_high_bits(ts)
        size = len(event)  # a counter event is always shorter than 128 bytes
        if self._ts_high > 0:
            self._chunks.extend(
                (
                    _FRAMED_TS[self._counter_fixed + size],
                    _CONTINUED[ts & 0x3FFF],
                    _CONTINUED[(ts >> 14) & 0x3FFF],
                    self._counter_tail,
                    _SHORT[size],
                    event,
                )
            )
            if len(self._chunks) >= _FLUSH_PIECES:
                self._flush()
        else:
            self._packet(_TIMESTAMP + varint(ts) + _COUNTER_HEAD + _SHORT[size] + event)

    def close(self) -> int:
        self._flush()
        self._file.flush()
        return self.bytes_written

    # --- encoding --------------------------------------------------------------------------

    def _event_packet(self, ts: int, event: bytes) -> None:
        """Appends a packet: timestamp, sequence fields, interned data if new, the event.

        Fast path: an epoch timestamp is a 9-byte varint whose top bits change only every
        2**28 ns (0.27 s); their bytes are cached with the fixed fields that follow them, and
        the low 28 bits are two table lookups. The packet goes out as pieces, joined once per
        flush: building each packet as one bytes object costs more than the rest."""
        if ts >> 28 != self._ts_high:
            self._set_high_bits(ts)
        size = len(event)
        if size < 0x80 and self._ts_high > 0 and not self._new_interned:
            self._chunks.extend(
                (
                    _FRAMED_TS[self._event_fixed + size],
                    _CONTINUED[ts & 0x3FFF],
                    _CONTINUED[(ts >> 14) & 0x3FFF],
                    self._event_tail,
                    _SHORT[size],
                    event,
                )
            )
            if len(self._chunks) >= _FLUSH_PIECES:
                self._flush()
            return
        head = _TIMESTAMP + varint(ts) + _SEQUENCE + _NEEDS_STATE
        if self._new_interned:
            head += self._interned_data()
        self._packet(head + _TRACK_EVENT + varint(size) + event)

    def _set_high_bits(self, ts: int) -> None:
        high = self._ts_high = ts >> 28
        high_bytes = varint(high) if high > 0 else b""
        self._event_tail = high_bytes + _EVENT_HEAD
        self._counter_tail = high_bytes + _COUNTER_HEAD
        # packet length without the event: tag, 4 low bytes, the tail, the event's length byte
        self._event_fixed = 1 + 4 + len(self._event_tail) + 1
        self._counter_fixed = 1 + 4 + len(self._counter_tail) + 1

    def _packet(self, packet: bytes) -> None:
        self._chunks.append(_TRACE_PACKET + varint(len(packet)) + packet)
        if len(self._chunks) >= _FLUSH_PIECES:
            self._flush()

    def _new_name(self, name: str) -> bytes:
        iid = varint(len(self._event_names) + 1)
        entry = b"\x08" + iid + _length_delimited(b"\x12", name.encode())
        self._new_interned.append(_length_delimited(b"\x12", entry))
        field = self._event_names[name] = _NAME_IID + iid
        return field

    def _annotations(self, args: Args) -> bytes:
        cache = self._annotations_cache
        encoded = b""
        for pair in args:
            annotation = cache.get(pair)
            if annotation is None:
                annotation = self._cached_annotation(pair)
            encoded += annotation
        return encoded

    def _cached_annotation(self, pair: tuple[str, object]) -> bytes:
        cache = self._annotations_cache
        annotation = cache.get(pair)
        if annotation is None:
            if len(cache) >= _ANNOTATION_CACHE:
                cache.clear()
            annotation = cache[pair] = self._annotation(pair[0], pair[1])
        return annotation

    def _annotation(self, key: str, value: object) -> bytes:
        """One DebugAnnotation field (empty for a None value)."""
        if value is None:
            return b""
        name = self._annotation_keys.get(key) or self._new_key(key)
        if value is True or value is False:
            body = b"\x10\x01" if value else b"\x10\x00"
        elif isinstance(value, int):
            body = b"\x20" + varint(value)
        elif isinstance(value, float):
            body = b"\x29" + _pack_double(value)
        else:
            text = str(value).encode()
            body = b"\x32" + varint(len(text)) + text
        return _length_delimited(_ANNOTATION, name + body)

    def _new_key(self, key: str) -> bytes:
        iid = varint(len(self._annotation_keys) + 1)
        entry = b"\x08" + iid + _length_delimited(b"\x12", key.encode())
        self._new_interned.append(_length_delimited(b"\x1a", entry))
        field = self._annotation_keys[key] = b"\x08" + iid
        return field

    def _extra_counters(self, counters: Counters) -> bytes:
        """TrackEvent.extra_counter_track_uuids (31) and extra_counter_values (12), unpacked: the
        i-th uuid goes with the i-th value, so interleaving the two fields keeps them paired."""
        out = b""
        for track, value in counters:
            field = self._extra_tracks.get(track)
            if field is None:
                field = self._extra_tracks[track] = _EXTRA_COUNTER_TRACK + varint(track)
            value_field = _SHORT[value] if 0 <= value < 0x4000 else varint(value)
            out += field + _EXTRA_COUNTER_VALUE + value_field
        return out

    def _interned_data(self) -> bytes:
        body = b"".join(self._new_interned)
        self._new_interned.clear()
        return _length_delimited(_INTERNED, body)

    def _flush(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._file.write(data)
            self.bytes_written += len(data)
            self._chunks.clear()
