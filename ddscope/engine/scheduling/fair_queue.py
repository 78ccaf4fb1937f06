"""A virtual-time fair ready queue with select-then-commit.

Ready tasks are pushed into *groups* (the scheduler uses one group per column). Selection is
start-time fair queueing: every group carries a virtual finish tag; the next candidate comes from
the non-empty group with the smallest start tag ``max(finish_g, V)``, where ``V`` is the system
virtual time (the start tag of the last committed item). A group that was empty cannot bank
credit while idle, so a deep column that becomes ready late is served as soon as it has work,
without starving the root column either.

Selection is two-phase so a task is only taken out once its lease is granted:

* :meth:`FairQueue.select` returns a :class:`Candidate` and mutates nothing;
* :meth:`FairQueue.commit` removes exactly that candidate and advances virtual time.

Inside a group items leave in ``key`` order (the scheduler uses the global row index, so earlier
row groups finish, and are checkpointed, first), ties in push order.

Pure: no asyncio, no clock, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """The head of one group, as returned by :meth:`FairQueue.select`."""

    group: str
    item: T
    seq: int  # identifies the queue entry; commit checks it is still the group's head


@dataclass(frozen=True, slots=True)
class GroupStats:
    depth: int
    virtual_finish: float
    committed: int


@dataclass(frozen=True, slots=True)
class FairQueueStats:
    depth: int
    virtual_time: float
    committed: int
    groups: dict[str, GroupStats]


class _Group(Generic[T]):
    __slots__ = ("committed", "finish", "heap", "order", "weight")

    def __init__(self, order: int, weight: float) -> None:
        self.order = order  # registration order breaks ties between equal start tags
        self.weight = weight
        self.finish = 0.0
        self.committed = 0
        # (key, seq, item); seq keeps push order among equal keys and makes entries unique
        self.heap: list[tuple[Any, int, T]] = []


class FairQueue(Generic[T]):
    """Ready tasks by group, served fairly in virtual time. Invariant: ``len(self)`` equals the
    total number of pushed and not yet committed or removed items."""

    def __init__(self, weights: dict[str, float] | None = None, default_weight: float = 1.0):
        if default_weight <= 0:
            raise ValueError("default_weight must be > 0")
        self._weights = dict(weights or {})
        if any(w <= 0 for w in self._weights.values()):
            raise ValueError("group weights must be > 0")
        self._default_weight = default_weight
        self._groups: dict[str, _Group[T]] = {}
        self._seq = itertools.count()
        self._virtual_time = 0.0
        self._size = 0
        self._committed = 0

    def __len__(self) -> int:
        return self._size

    def depth(self, group: str) -> int:
        g = self._groups.get(group)
        return len(g.heap) if g else 0

    def push(self, group: str, item: T, key: Any = 0) -> None:
        g = self._groups.get(group)
        if g is None:
            g = _Group[T](len(self._groups), self._weights.get(group, self._default_weight))
            self._groups[group] = g
        heapq.heappush(g.heap, (key, next(self._seq), item))
        self._size += 1

    def select(self, exclude: Container[str] = _NOTHING) -> Candidate[T] | None:
        """The next candidate outside ``exclude``, or None. Does not change the queue."""
        best: tuple[float, int, str] | None = None
        for name, g in self._groups.items():
            if not g.heap or name in exclude:
                continue
            rank = (max(g.finish, self._virtual_time), g.order, name)
            if best is None or rank < best:
                best = rank
        if best is None:
            return None
        _, seq, item = self._groups[best[2]].heap[0]
        return Candidate(best[2], item, seq)

    def commit(self, candidate: Candidate[T]) -> T:
        """Takes ``candidate`` out and charges its group one unit of virtual time."""
        g = self._groups.get(candidate.group)
        if g is None or not g.heap or g.heap[0][1] != candidate.seq:
            raise ValueError(f"stale candidate for group {candidate.group!r}")
        _, _, item = heapq.heappop(g.heap)
        start = max(g.finish, self._virtual_time)
        g.finish = start + 1.0 / g.weight
        g.committed += 1
        self._virtual_time = start
        self._size -= 1
        self._committed += 1
        return item

    def remove_where(self, predicate: Callable[[T], bool]) -> int:
        """Removes every queued item matching ``predicate`` (e.g. the tasks of a dropped row)
        without charging virtual time. Returns how many were removed."""
        removed = 0
        for g in self._groups.values():
            kept = [entry for entry in g.heap if not predicate(entry[2])]
            if len(kept) != len(g.heap):
                removed += len(g.heap) - len(kept)
                heapq.heapify(kept)
                g.heap = kept
        self._size -= removed
        return removed

    def statistics(self) -> FairQueueStats:
        groups = {
            name: GroupStats(len(g.heap), g.finish, g.committed) for name, g in self._groups.items()
        }
        return FairQueueStats(self._size, self._virtual_time, self._committed, groups)
