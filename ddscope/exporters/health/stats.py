"""Bounded summaries for the health snapshot: a log-bucket histogram and a doubling timeline.

Both use memory that does not grow with the run, so a snapshot of a 10-million-event record costs
the same few kilobytes as one of a hundred events.

:class:`LogHistogram` — durations (ns) in logarithmic buckets of ratio ``GAMMA`` = 1.02. A
percentile is reported as the geometric middle of its bucket, so it is within
``sqrt(GAMMA) − 1`` ≈ **±1 % relative error** of the exact nearest-rank percentile (and never
above the exact maximum, which is kept). Zero durations have their own bucket.

:class:`TimeBins` — per-time-bin counters (attempts, 429s) and the AIMD limit's min / max / last
value. It starts with ``BINS`` bins of ``start_width_ns`` and doubles the bin width (merging
neighbours) whenever the run outgrows them, so a timeline is exact to within one bin, i.e. at
most ``duration / (BINS / 2)``.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat

GAMMA = 1.02
RELATIVE_ERROR = math.sqrt(GAMMA) - 1.0  # ≈ 0.00995
_INV_LN_GAMMA = 1.0 / math.log(GAMMA)
_BUCKETS = 2400  # GAMMA**2400 ns ≈ 4e20 ns: any duration a run can have
NS_PER_S = 1_000_000_000
FLUSH_EVERY = 4096  # pending values bucketed at once (bounds the memory of ``pending``)


@dataclass(frozen=True)
class Quantiles:
    """Percentiles of a duration distribution, in seconds (None when nothing was observed)."""

    count: int
    p50: float | None
    p95: float | None
    max: float | None


class LogHistogram:
    """Durations (ns) in log buckets. Hot loops append raw values to ``pending`` (a list that
    keeps its identity, so a bound ``pending.append`` may be cached) and call :meth:`flush`
    every few thousand values; :meth:`add` does both for occasional use. Memory: the buckets
    plus at most one flush interval of pending values."""

    __slots__ = ("count", "counts", "max_ns", "pending", "zeros")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.zeros = 0
        self.count = 0
        self.max_ns = 0
        self.pending: list[int] = []

    def add(self, ns: int) -> None:
        self.pending.append(ns)
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Buckets the pending values: C-level map/Counter, ~0.1 µs a value."""
        values = self.pending
        if not values:
            return
        self.count += len(values)
        self.max_ns = max(self.max_ns, max(values))
        positive = [v for v in values if v > 0]
        self.zeros += len(values) - len(positive)
        counts, last = self.counts, _BUCKETS - 1
        buckets = map(int, map(operator.mul, map(math.log, positive), repeat(_INV_LN_GAMMA)))
        for index, n in Counter(buckets).items():
            counts[index if index < last else last] += n
        values.clear()

    def percentile_ns(self, q: float) -> float:
        """Nearest-rank percentile ``q`` (0 < q ≤ 1), within ±RELATIVE_ERROR of the exact value."""
        self.flush()
        if self.count == 0:
            raise ValueError("no observations")
        rank = max(1, math.ceil(q * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(float(GAMMA ** (index + 0.5)), float(self.max_ns))
        return float(self.max_ns)  # pragma: no cover - rank ≤ count always lands above

    def quantiles(self) -> Quantiles:
        self.flush()
        if self.count == 0:
            return Quantiles(0, None, None, None)
        return Quantiles(
            count=self.count,
            p50=self.percentile_ns(0.50) / NS_PER_S,
            p95=self.percentile_ns(0.95) / NS_PER_S,
            max=self.max_ns / NS_PER_S,
        )


BINS = 64


@dataclass(frozen=True)
class TimelinePoint:
    """One segment of a domain's timeline: [t_s, t_end_s) seconds since the run started."""

    t_s: float
    t_end_s: float
    limit_min: int
    limit_max: int
    limit_end: int
    attempts: int
    rate_limited: int


class TimeBins:
    """Counters and limit extremes per time bin; bounded at ``BINS`` bins (see module doc)."""

    __slots__ = ("attempts", "initial_limit", "last_set", "max_set", "min_set", "rl", "t0", "width")

    def __init__(self, t0_ns: int, initial_limit: int, start_width_ns: int = 50_000_000) -> None:
        self.t0 = t0_ns
        self.width = start_width_ns
        self.initial_limit = initial_limit
        self.attempts = [0] * BINS
        self.rl = [0] * BINS
        self.min_set: list[int | None] = [None] * BINS  # extremes of limits *set* in the bin
        self.max_set: list[int | None] = [None] * BINS
        self.last_set: list[int | None] = [None] * BINS

    def index(self, t_ns: int) -> int:
        """The bin of ``t_ns``, doubling the width first if the run outgrew the bins. Hot
        callers compute ``(t − t0) // width`` themselves and call this only when it is out of
        range."""
        index = (t_ns - self.t0) // self.width
        while index >= BINS:
            self._double()
            index = (t_ns - self.t0) // self.width
        return index if index > 0 else 0

    def _double(self) -> None:
        """Merges neighbouring bins pairwise; the upper half starts empty."""
        half = BINS // 2
        for name in ("attempts", "rl"):
            values = getattr(self, name)
            merged = [values[2 * i] + values[2 * i + 1] for i in range(half)]
            setattr(self, name, merged + [0] * half)
        mins, maxs, lasts = self.min_set, self.max_set, self.last_set
        self.min_set = [_pick(min, mins[2 * i], mins[2 * i + 1]) for i in range(half)] + [
            None
        ] * half
        self.max_set = [_pick(max, maxs[2 * i], maxs[2 * i + 1]) for i in range(half)] + [
            None
        ] * half
        self.last_set = [
            lasts[2 * i + 1] if lasts[2 * i + 1] is not None else lasts[2 * i] for i in range(half)
        ] + [None] * half
        self.width *= 2

    def attempt(self, t_ns: int, rate_limited: bool) -> None:
        index = self.index(t_ns)
        self.attempts[index] += 1
        if rate_limited:
            self.rl[index] += 1

    def limit(self, t_ns: int, new: int) -> None:
        index = self.index(t_ns)
        low, high = self.min_set[index], self.max_set[index]
        self.min_set[index] = new if low is None or new < low else low
        self.max_set[index] = new if high is None or new > high else high
        self.last_set[index] = new

    def points(self, end_ns: int, max_points: int = 10) -> list[TimelinePoint]:
        """At most ``max_points`` equal segments covering [t0, end_ns]."""
        used = min(BINS, max(1, -(-(end_ns - self.t0) // self.width)))
        per = -(-used // max_points)
        carry = self.initial_limit
        out: list[TimelinePoint] = []
        for first in range(0, used, per):
            bins = range(first, min(used, first + per))
            low = high = carry
            attempts = rl = 0
            for i in bins:
                attempts += self.attempts[i]
                rl += self.rl[i]
                last, lowest, highest = self.last_set[i], self.min_set[i], self.max_set[i]
                if last is not None and lowest is not None and highest is not None:
                    low, high, carry = min(low, lowest), max(high, highest), last
            t_end = min(end_ns, self.t0 + bins[-1] * self.width + self.width)
            out.append(
                TimelinePoint(
                    t_s=(self.t0 + first * self.width) / NS_PER_S,
                    t_end_s=t_end / NS_PER_S,
                    limit_min=low,
                    limit_max=high,
                    limit_end=carry,
                    attempts=attempts,
                    rate_limited=rl,
                )
            )
        return out


def _pick(func: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return func(a, b)
