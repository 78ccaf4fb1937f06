"""Track layout for trace exports: track ids, groups and lanes. Pure: no I/O, no encoding.

A slice must nest on its track, so intervals that overlap (leases of one column, requests of one
domain, row groups) cannot share one track. They go on *lanes*: child tracks of a group, each
holding at most one open slice. A slice takes the lowest free lane, which is the greedy colouring
of an interval graph in start order and therefore uses exactly as many lanes as the peak number
of overlapping intervals, however many intervals there are in total.

Tracks are declared lazily: the first time a track is asked for, :class:`Layout` hands its
:class:`TrackSpec` to the ``declare`` callback, so a writer can emit the descriptor before the
track's first event.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One track as a writer needs to declare it."""

    uuid: int
    name: str
    parent: int | None  # None only for the process track
    rank: int  # position among its siblings (explicit ordering)
    counter: bool = False
    unit: str | None = None  # counter unit name shown in the UI, e.g. "requests"
    pid: int | None = None  # set only on the process track


class Layout:
    """Hands out track uuids and declares each track once, before its first use."""

    PROCESS_UUID = 1

    def __init__(self, declare: Callable[[TrackSpec], None]) -> None:
        self._declare = declare
        self._next_uuid = self.PROCESS_UUID + 1
        self._by_key: dict[tuple[str, ...], int] = {}
        self._child_count: dict[int, int] = {}
        self.specs: list[TrackSpec] = []  # every track declared so far, in declaration order

    def process(self, name: str, pid: int) -> int:
        key = ("process",)
        if key not in self._by_key:
            self._by_key[key] = self.PROCESS_UUID
            self._emit(TrackSpec(self.PROCESS_UUID, name, None, 0, pid=pid))
        return self.PROCESS_UUID

    def track(
        self,
        key: tuple[str, ...],
        name: str,
        parent: int,
        *,
        counter: bool = False,
        unit: str | None = None,
    ) -> int:
        """The uuid of the track called ``key``, declared under ``parent`` on first use."""
        uuid = self._by_key.get(key)
        if uuid is None:
            uuid = self._next_uuid
            self._next_uuid += 1
            self._by_key[key] = uuid
            rank = self._child_count.get(parent, 0)
            self._child_count[parent] = rank + 1
            self._emit(TrackSpec(uuid, name, parent, rank, counter=counter, unit=unit))
        return uuid

    def _emit(self, spec: TrackSpec) -> None:
        self.specs.append(spec)
        self._declare(spec)


class LaneGroup:
    """A group track whose slices spread over child lanes, lowest free lane first.

    Invariant: a lane is either free (in ``_free``) or holds exactly one open slice; so slices
    on one lane never overlap and ``lanes`` equals the peak number of open slices. Lanes are
    named ``"{lane_name} #{n}"`` (1-based) under the group track.
    """

    def __init__(
        self,
        layout: Layout,
        key: tuple[str, ...],
        name: str,
        parent: int,
        lane_name: str | None = None,
    ) -> None:
        self._layout = layout
        self._key = key
        self._name = lane_name or name
        self.uuid = layout.track(key, name, parent)
        self._free: list[int] = []  # heap of free lane indexes
        self._lane_uuids: list[int] = []
        self._index_of: dict[int, int] = {}
        self.open = 0

    @property
    def lanes(self) -> int:
        return len(self._lane_uuids)

    def acquire(self) -> int:
        """Takes the lowest free lane and returns its track uuid."""
        self.open += 1
        if self._free:
            return self._lane_uuids[heapq.heappop(self._free)]
        index = len(self._lane_uuids)
        uuid = self._layout.track((*self._key, str(index)), f"{self._name} #{index + 1}", self.uuid)
        self._lane_uuids.append(uuid)
        self._index_of[uuid] = index
        return uuid

    def release(self, lane_uuid: int) -> None:
        """Frees a lane taken by :meth:`acquire` (the slice on it has ended)."""
        self.open -= 1
        heapq.heappush(self._free, self._index_of[lane_uuid])


class SingleTrack:
    """A track for intervals that never overlap (the run itself): the :class:`LaneGroup`
    interface without lanes, so the slice sits on the named track."""

    def __init__(self, layout: Layout, key: tuple[str, ...], name: str, parent: int) -> None:
        self.uuid = layout.track(key, name, parent)
        self.open = 0

    @property
    def lanes(self) -> int:
        return 1

    def acquire(self) -> int:
        if self.open:
            raise ValueError("SingleTrack holds one open slice at a time")
        self.open = 1
        return self.uuid

    def release(self, lane_uuid: int) -> None:
        self.open = 0
