"""engine.gc_pacing: the young generation's threshold is raised for a run and put back after
the last of overlapping runs (issue 17)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from engine_records import EngineSpec, run_engine

from ddscope.engine.gc_pacing import RUN_YOUNG_THRESHOLD, fewer_young_collections


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 11, 12)
    yield gc.get_threshold()
    gc.set_threshold(*saved)


def test_raised_inside_and_restored_after(thresholds: tuple[int, int, int]) -> None:
    with fewer_young_collections():
        assert gc.get_threshold() == (RUN_YOUNG_THRESHOLD, 11, 12)
    assert gc.get_threshold() == thresholds


def test_overlapping_runs_restore_only_when_the_last_ends(
    thresholds: tuple[int, int, int],
) -> None:
    first, second = fewer_young_collections(), fewer_young_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second is still on
    assert gc.get_threshold()[0] == RUN_YOUNG_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == thresholds


def test_restored_when_the_run_raises_and_disabled_or_higher_left_alone(
    thresholds: tuple[int, int, int],
) -> None:
    with pytest.raises(RuntimeError), fewer_young_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == thresholds
    gc.set_threshold(0, 11, 12)  # collection disabled by the host: stays disabled
    with fewer_young_collections():
        assert gc.get_threshold()[0] == 0
    gc.set_threshold(RUN_YOUNG_THRESHOLD * 2, 11, 12)  # already higher: not lowered
    with fewer_young_collections():
        assert gc.get_threshold()[0] == RUN_YOUNG_THRESHOLD * 2


def test_a_real_run_has_it_raised_and_puts_it_back(thresholds: tuple[int, int, int]) -> None:
    seen: list[int] = []

    class Watch:
        def open(self, header: object) -> None:
            seen.append(gc.get_threshold()[0])

        def handle(self, event: object) -> None:
            pass

        def close(self) -> None:
            seen.append(gc.get_threshold()[0])

    run_engine(EngineSpec(rows=3), [Watch()])
    assert seen[0] == RUN_YOUNG_THRESHOLD  # raised when the sinks open
    assert seen[1] == thresholds[0]  # put back by the time they close
    assert gc.get_threshold() == thresholds
