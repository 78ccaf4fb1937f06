"""The interface between the run timeline and a trace file format (Perfetto protobuf, Chrome JSON).

:class:`~ddscope.exporters.trace.timeline.RunTimeline` decides *what* goes on which track;
a :class:`TraceWriter` decides how it is encoded. Timestamps are absolute nanoseconds; tracks
are uuids from :class:`~ddscope.exporters.trace.layout.Layout`, always declared before use.
Flows are 64-bit ids: ``flows`` continue (or start) a flow on an event, ``terminating`` ends it.
``counters`` are integer counter samples taken at the event's timestamp, as (counter track,
value) pairs; Perfetto stores them on the event itself (``extra_counter_values``), which saves a
packet per sample.
"""

from __future__ import annotations

from typing import Protocol

from ddscope.exporters.trace.layout import TrackSpec

ArgValue = int | float | str | bool | None
# Debug annotations as (name, value) pairs; writers skip pairs whose value is None.
Args = tuple[tuple[str, ArgValue], ...]
Flows = tuple[int, ...]
Counters = tuple[tuple[int, int], ...]


class TraceWriter(Protocol):
    def declare(self, track: TrackSpec) -> None: ...

    def begin(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        counters: Counters = (),
    ) -> None:
        """Opens a slice on ``track``; it closes at the next :meth:`end` on the same track."""

    def end(self, ts: int, track: int, args: Args = (), counters: Counters = ()) -> None:
        """Closes the innermost open slice on ``track``; ``args`` are added to it."""

    def instant(
        self,
        ts: int,
        track: int,
        name: str,
        args: Args = (),
        flows: Flows = (),
        terminating: Flows = (),
        counters: Counters = (),
    ) -> None: ...

    def counter(self, ts: int, track: int, value: int | float) -> None: ...

    def close(self) -> int:
        """Flushes and closes the file; returns the bytes written."""
        ...
