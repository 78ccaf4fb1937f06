"""Track layout: lazy declaration, explicit order, and lanes that follow the peak concurrency."""

from __future__ import annotations

import random

import pytest

from ddscope.exporters.trace.layout import LaneGroup, Layout, SingleTrack, TrackSpec


def _layout() -> tuple[Layout, list[TrackSpec]]:
    declared: list[TrackSpec] = []
    return Layout(declared.append), declared


def test_tracks_are_declared_once_parent_first_and_ranked_by_arrival() -> None:
    layout, declared = _layout()
    process = layout.process("run", pid=7)
    group = layout.track(("domain", "a"), "a", process)
    limit = layout.track(("domain", "a", "limit"), "limit", group, counter=True, unit="requests")
    assert layout.track(("domain", "a"), "a", process) == group  # same key, same track
    other = layout.track(("domain", "b"), "b", process)
    assert [s.uuid for s in declared] == [process, group, limit, other]
    assert len({s.uuid for s in declared}) == 4
    assert declared[0].pid == 7 and declared[0].parent is None
    assert (declared[1].rank, declared[3].rank, declared[2].rank) == (0, 1, 0)
    assert declared[2].counter and declared[2].unit == "requests" and declared[2].parent == group


def test_a_lane_group_takes_the_lowest_free_lane() -> None:
    layout, declared = _layout()
    lanes = LaneGroup(layout, ("waits",), "request waits", layout.process("run", 1), "wait")
    first, second, third = lanes.acquire(), lanes.acquire(), lanes.acquire()
    lanes.release(second)
    lanes.release(first)
    assert lanes.acquire() == first  # lowest index, not the most recently freed
    assert lanes.acquire() == second
    assert lanes.lanes == 3 and lanes.open == 3
    names = [s.name for s in declared if s.parent == lanes.uuid]
    assert names == ["wait #1", "wait #2", "wait #3"]
    assert third not in (first, second)


def test_lane_count_equals_the_peak_overlap_of_random_intervals() -> None:
    rng = random.Random(11)
    for _ in range(50):
        layout, _ = _layout()
        lanes = LaneGroup(layout, ("x",), "x", layout.process("run", 1))
        intervals = sorted(
            (start, start + rng.randint(0, 30)) for start in rng.sample(range(200), 40)
        )
        ends: list[tuple[int, int]] = []  # (end, lane) of open intervals
        peak = 0
        for start, end in intervals:
            for finished in [e for e in ends if e[0] <= start]:
                lanes.release(finished[1])
                ends.remove(finished)
            ends.append((end, lanes.acquire()))
            assert len({lane for _, lane in ends}) == len(ends)  # one open slice per lane
            peak = max(peak, len(ends))
        assert lanes.lanes == peak


def test_a_single_track_refuses_a_second_open_slice() -> None:
    layout, declared = _layout()
    run = SingleTrack(layout, ("run",), "run", layout.process("run", 1))
    assert run.acquire() == run.uuid == declared[-1].uuid
    with pytest.raises(ValueError):
        run.acquire()
    run.release(run.uuid)
    assert run.acquire() == run.uuid and run.lanes == 1
