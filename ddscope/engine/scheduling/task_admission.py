"""Task admission: named resources with limits, and the leases tasks hold on them.

A *task lease* is the set of resources a task holds while its worker runs; the scheduler spawns
a worker only once a lease is granted, so there are never more workers than resources allow.
The scheduler's resources are

* ``llm_wait`` — slots for model tasks that wait on a model (a global bound), and
* ``request:{provider}/{model}`` — sized from the domain's request-admission capacity, so that a
  model task is leased only when a request slot is (about to be) free and never piles up as a
  waiter that later times out.

Invariants (checked by the tests):

* a lease is granted only if, for each resource, ``held + amount <= limit`` at grant time;
* lowering a limit never pre-empts granted leases (like trio's ``CapacityLimiter``): ``held``
  may then exceed ``limit`` until leases are released, and nothing new is granted meanwhile;
* a lease is released at most once.

Pure: no asyncio, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    resources: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class ResourceStats:
    limit: int
    held: int
    peak: int  # highest ``held`` ever reached


@dataclass(frozen=True, slots=True)
class TaskAdmissionStats:
    leases: int  # leases currently held
    granted: int
    refused: int
    resources: dict[str, ResourceStats] = field(default_factory=dict)


class TaskAdmission:
    def __init__(self, limits: Mapping[str, int]) -> None:
        self._limit: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        for name, limit in limits.items():
            self.set_limit(name, limit)
        self._leases: dict[int, Lease] = {}
        self._granted = 0
        self._refused = 0

    def set_limit(self, name: str, limit: int) -> None:
        """Sets (or adds) a resource's limit. Lowering it never takes back granted leases."""
        if limit < 0:
            raise ValueError(f"resource {name!r}: limit must be >= 0, got {limit}")
        self._limit[name] = limit
        self._held.setdefault(name, 0)
        self._peak.setdefault(name, 0)

    def limit(self, name: str) -> int:
        return self._limit[name]

    def held(self, name: str) -> int:
        return self._held[name]

    def room(self, name: str) -> int:
        """How much of ``name`` can still be granted (0 while over a lowered limit)."""
        return max(0, self._limit[name] - self._held[name])

    def can_admit(self, resources: Mapping[str, int]) -> bool:
        for name, amount in resources.items():
            if name not in self._limit:
                raise KeyError(f"unknown resource {name!r}")
            if amount < 0:
                raise ValueError(f"resource {name!r}: negative amount {amount}")
            if self._held[name] + amount > self._limit[name]:
                return False
        return True

    def try_acquire(self, resources: Mapping[str, int], lease_id: int) -> Lease | None:
        """Grants a lease on all of ``resources`` at once, or nothing."""
        if lease_id in self._leases:
            raise ValueError(f"lease {lease_id} is already held")
        if not self.can_admit(resources):
            self._refused += 1
            return None
        lease = Lease(lease_id, dict(resources))
        for name, amount in resources.items():
            held = self._held[name] + amount
            self._held[name] = held
            self._peak[name] = max(self._peak[name], held)
        self._leases[lease_id] = lease
        self._granted += 1
        return lease

    def release(self, lease: Lease) -> None:
        if self._leases.pop(lease.lease_id, None) is None:
            raise ValueError(f"lease {lease.lease_id} is not held (released twice?)")
        for name, amount in lease.resources.items():
            self._held[name] -= amount

    @property
    def leases(self) -> int:
        return len(self._leases)

    def statistics(self) -> TaskAdmissionStats:
        resources = {
            name: ResourceStats(self._limit[name], self._held[name], self._peak[name])
            for name in self._limit
        }
        return TaskAdmissionStats(len(self._leases), self._granted, self._refused, resources)
