"""Tests of the virtual-time fair ready queue (pure, plain calls)."""

from __future__ import annotations

import itertools

import pytest

from ddscope.engine.scheduling.fair_queue import FairQueue


def drain(queue: FairQueue[str], n: int) -> list[str]:
    out = []
    for _ in range(n):
        cand = queue.select()
        assert cand is not None
        out.append(queue.commit(cand))
    return out


def test_select_does_not_mutate():
    q: FairQueue[str] = FairQueue()
    q.push("a", "a0")
    first = q.select()
    second = q.select()
    assert first == second
    assert len(q) == 1
    assert q.statistics().committed == 0


def test_commit_takes_exactly_the_candidate_and_rejects_stale_ones():
    q: FairQueue[str] = FairQueue()
    q.push("a", "a1", key=1)
    cand = q.select()
    assert cand is not None and cand.item == "a1"
    q.push("a", "a0", key=0)  # a new head: the old candidate is stale
    with pytest.raises(ValueError, match="stale"):
        q.commit(cand)
    fresh = q.select()
    assert fresh is not None and q.commit(fresh) == "a0"
    assert len(q) == 1


def test_within_a_group_items_leave_in_key_order_then_push_order():
    q: FairQueue[str] = FairQueue()
    for key, item in [(5, "r5"), (1, "r1"), (3, "r3a"), (3, "r3b")]:
        q.push("col", item, key=key)
    assert drain(q, 4) == ["r1", "r3a", "r3b", "r5"]


def test_groups_alternate_when_both_have_work():
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push("root", f"root{i}", key=i)
        q.push("deep", f"deep{i}", key=i)
    groups = [item[:4] for item in drain(q, 8)]
    assert groups.count("root") == 4
    # strict alternation: neither group is served twice in a row while the other waits
    assert all(a != b for a, b in itertools.pairwise(groups))


def test_an_idle_group_does_not_bank_credit():
    q: FairQueue[str] = FairQueue()
    for i in range(10):
        q.push("root", f"root{i}", key=i)
    drain(q, 6)  # only root had work: virtual time moved on
    for i in range(3):
        q.push("deep", f"deep{i}", key=i)
    served = drain(q, 4)
    # deep is served fairly from now on, not 6 times in a row to "catch up"
    assert sum(s.startswith("deep") for s in served) == 2


def test_weights_share_service_proportionally():
    q: FairQueue[str] = FairQueue(weights={"heavy": 3.0})
    for i in range(40):
        q.push("heavy", "h", key=i)
        q.push("light", "l", key=i)
    served = drain(q, 40)
    assert served.count("h") == 30
    assert served.count("l") == 10


def test_exclude_skips_groups_without_changing_them():
    q: FairQueue[str] = FairQueue()
    q.push("a", "a0")
    q.push("b", "b0")
    cand = q.select(exclude={"a"})
    assert cand is not None and cand.group == "b"
    assert q.select(exclude={"a", "b"}) is None
    assert q.depth("a") == 1 and q.depth("b") == 1


def test_remove_where_drops_matching_items_without_charging_time():
    q: FairQueue[tuple[str, int]] = FairQueue()
    for row in range(6):
        q.push("x", ("x", row), key=row)
    assert q.remove_where(lambda item: item[1] % 2 == 0) == 3
    assert len(q) == 3
    stats = q.statistics()
    assert stats.groups["x"].committed == 0 and stats.virtual_time == 0.0
    out = []
    while (cand := q.select()) is not None:
        out.append(q.commit(cand)[1])
    assert out == [1, 3, 5]


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError):
        FairQueue(weights={"a": 0.0})
    with pytest.raises(ValueError):
        FairQueue(default_weight=-1)
