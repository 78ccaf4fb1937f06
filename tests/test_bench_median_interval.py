"""The S5 benchmark's verdict on a goal: a distribution-free interval for the median of its
rounds (benchmarks/bench_s5_overhead.py), so a run with too few or too spread rounds says
"undecided" instead of passing or failing on noise."""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_s5_overhead import goal_verdict, median_interval


def test_too_few_rounds_give_no_interval() -> None:
    assert median_interval([1.1, 1.2, 1.3]) is None  # 3 rounds cover 75 % at best
    assert median_interval([1.1, 1.2, 1.3], confidence=0.75) == (1.1, 1.3)
    assert median_interval([]) is None


@pytest.mark.parametrize(
    ("n", "k"),
    [(5, 1), (6, 1), (8, 2), (10, 2), (20, 6), (40, 15)],
)
def test_the_interval_is_the_kth_smallest_to_kth_largest(n: int, k: int) -> None:
    """k from the binomial tables: the largest k with 1 − 2·P(X < k) ≥ 90 %, X ~ B(n, ½)."""
    values = [float(v) for v in random.Random(n).sample(range(1000), n)]
    ordered = sorted(values)
    assert median_interval(values) == (ordered[k - 1], ordered[n - k])


def test_the_interval_covers_the_median_as_often_as_it_says() -> None:
    rng = random.Random(17)
    trials, covered = 2000, 0
    for _ in range(trials):  # skewed rounds, as a noisy machine gives: true median 1.2
        rounds = [1.2 + rng.choice((-1, 1)) * rng.expovariate(30) for _ in range(10)]
        interval = median_interval(rounds)
        assert interval is not None
        covered += interval[0] <= 1.2 <= interval[1]
    assert covered / trials >= 0.95  # 97.9 % in theory for 10 rounds


def test_the_verdict_needs_the_whole_interval_on_one_side() -> None:
    assert goal_verdict([1.10, 1.12, 1.15, 1.18, 1.19], 1.20).startswith("met")
    assert goal_verdict([1.21, 1.22, 1.25, 1.30, 1.24], 1.20).startswith("not met")
    spread = [1.10, 1.17, 1.19, 1.22, 1.26]
    assert statistics.median(spread) < 1.20  # a median under the goal is not enough
    assert goal_verdict(spread, 1.20).startswith("undecided (")
    assert goal_verdict([1.1, 1.1, 1.1], 1.20).startswith("undecided: 3 rounds")
