"""Tests of task admission: resources, limits and leases (pure, plain calls)."""

from __future__ import annotations

import random

import pytest

from ddscope.engine.scheduling.task_admission import TaskAdmission


def test_lease_is_all_or_nothing():
    adm = TaskAdmission({"llm_wait": 2, "request:p/m": 1})
    need = {"llm_wait": 1, "request:p/m": 1}
    first = adm.try_acquire(need, lease_id=1)
    assert first is not None
    assert adm.try_acquire(need, lease_id=2) is None  # request full
    assert adm.held("llm_wait") == 1  # the refused lease took nothing
    stats = adm.statistics()
    assert (stats.leases, stats.granted, stats.refused) == (1, 1, 1)
    adm.release(first)
    assert adm.try_acquire(need, lease_id=3) is not None


def test_lowering_a_limit_never_preempts_and_blocks_new_leases():
    adm = TaskAdmission({"request:p/m": 3})
    leases = [adm.try_acquire({"request:p/m": 1}, lease_id=i) for i in range(3)]
    assert all(leases)
    adm.set_limit("request:p/m", 1)
    assert adm.held("request:p/m") == 3  # nothing taken back
    assert adm.room("request:p/m") == 0
    adm.release(leases[0])  # type: ignore[arg-type]
    assert adm.try_acquire({"request:p/m": 1}, lease_id=10) is None  # 2 held > limit 1
    adm.release(leases[1])  # type: ignore[arg-type]
    adm.release(leases[2])  # type: ignore[arg-type]
    assert adm.try_acquire({"request:p/m": 1}, lease_id=11) is not None


def test_release_twice_and_duplicate_ids_are_errors():
    adm = TaskAdmission({"r": 2})
    lease = adm.try_acquire({"r": 1}, lease_id=7)
    assert lease is not None
    with pytest.raises(ValueError, match="already held"):
        adm.try_acquire({"r": 1}, lease_id=7)
    adm.release(lease)
    with pytest.raises(ValueError, match="not held"):
        adm.release(lease)


def test_unknown_resource_and_bad_limits_are_errors():
    adm = TaskAdmission({"r": 1})
    with pytest.raises(KeyError, match="nope"):
        adm.try_acquire({"nope": 1}, lease_id=1)
    with pytest.raises(ValueError):
        adm.set_limit("r", -1)


def test_random_workload_never_exceeds_limits():
    rng = random.Random(3)
    limits = {"llm_wait": 5, "request:a/x": 3, "request:b/y": 2}
    adm = TaskAdmission(limits)
    held: list = []
    for step in range(2000):
        if held and rng.random() < 0.45:
            adm.release(held.pop(rng.randrange(len(held))))
        else:
            domain = rng.choice(["request:a/x", "request:b/y"])
            lease = adm.try_acquire({"llm_wait": 1, domain: 1}, lease_id=step)
            if lease is not None:
                held.append(lease)
        for name, limit in limits.items():
            assert adm.held(name) <= limit
    stats = adm.statistics()
    assert stats.resources["llm_wait"].peak == 5  # the bound was reached, and held
    assert stats.leases == len(held)
