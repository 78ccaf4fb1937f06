"""A run's bins → the per-bin numbers the plots draw (plain lists, JSON-ready, rounded).

Cumulative figures are differenced edge to edge: a mean is ``Δintegral / Δt`` and a rate is
``Δcount / Δt``, exact over each bin. Series are indexed like the edges: value ``i`` describes
the bin that *starts* at edge ``i`` (the plots draw steps after each point), and the last edge
repeats the last bin so the step reaches the end of the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from ddscope.exporters.health.stats import GAMMA, LogHistogram
from ddscope.exporters.report.collect import RunData
from ddscope.exporters.report.series import IDLE_PARTS, DomainSeries

NS = 1e9
RATE_WINDOWS = 60  # throughput is averaged over windows of ~1/60 of the run ...
RATE_EVENTS = 20  # ... or wider, so that a window holds this many events on average
HIST_MERGE = 12  # log buckets of ratio 1.02 merged per histogram bar: bars of ratio ≈ 1.27

# column index of each cumulative figure in DomainSeries.cumulative
_COLUMNS = (*IDLE_PARTS, "busy", "cooldown_ns", "breaker_ns", "attempts", "rate_limited")
_COL = {name: i for i, name in enumerate((*_COLUMNS, "limit_int", "in_flight_int", "waiters_int"))}

Numbers = list[float | None]


@dataclass
class DomainView:
    name: str
    capacity: int
    series: dict[str, Numbers] = field(default_factory=dict)
    cooldown_bands: list[tuple[float, float]] = field(default_factory=list)
    breaker_bands: list[tuple[float, float]] = field(default_factory=list)
    wait_hist: list[tuple[float, int]] = field(default_factory=list)  # (bar start s, count)
    attempt_hist: list[tuple[float, int]] = field(default_factory=list)
    peak_waiters: int = 0
    peak_in_flight: int = 0


@dataclass
class RunView:
    x: list[float]  # edges, seconds since the run started
    series: dict[str, Numbers]
    domains: list[DomainView]
    salvage_bands: list[tuple[float, float, str]]  # (start s, end s, label)


def run_view(run: RunData) -> RunView:
    s = run.series
    edges = s.edges
    x = [round(e / NS, 6) for e in edges]
    widths = [(b - a) / NS for a, b in pairwise(edges)]
    rows = [c[0] for c in s.run_cumulative]
    drops = [c[1] for c in s.run_cumulative]
    domains = [_domain_view(d, widths, x) for d in s.domains.values()]
    cums = [d.cumulative for d in s.domains.values()]

    def total(name: str) -> list[int]:
        if not cums:
            return [0] * len(edges)
        return [sum(c[_COL[name]] for c in edge) for edge in zip(*cums, strict=True)]

    series: dict[str, Numbers] = {
        "rows_done": [float(v) for v in rows],
        "rows_dropped": [float(v) for v in drops],
        "rows_per_s": _smoothed_rate(rows, x),
        "requests_per_s": _smoothed_rate(total("attempts"), x),
        "rate_limited_per_s": _smoothed_rate(total("rate_limited"), x),
    }
    end = x[-1] if x else 0.0
    bands = [
        (r.start_s, r.end_s if r.end_s is not None else end, f"salvage {r.round}")
        for r in run.health.scheduler.salvage_rounds
    ]
    return RunView(x=x, series=series, domains=domains, salvage_bands=bands)


def _domain_view(d: DomainSeries, widths: list[float], x: list[float]) -> DomainView:
    cum = d.cumulative

    def mean(name: str, scale: float = 1.0) -> Numbers:
        return _rate([c[_COL[name]] for c in cum], widths, scale=scale / NS)

    view = DomainView(name=d.tracker.domain, capacity=d.tracker.cap)
    view.series = {
        "limit_mean": mean("limit_int"),
        "limit_min": _stepped([float(m[0]) for m in d.maxima[1:]]),
        "in_flight_mean": mean("in_flight_int"),
        "in_flight_max": _stepped([float(m[1]) for m in d.maxima[1:]]),
        "waiters_mean": mean("waiters_int"),
        "waiters_max": _stepped([float(m[2]) for m in d.maxima[1:]]),
        "r429": _marks([c[_COL["rate_limited"]] for c in cum]),
        "busy": mean("busy"),
        **{f"idle_{part}": mean(part) for part in IDLE_PARTS},
    }
    quota = d.quota[1:]
    if any(r is not None or k is not None for r, k in quota):  # the provider sent the headers
        view.series["quota_requests"] = _stepped([_num(r) for r, _ in quota])
        view.series["quota_tokens"] = _stepped([_num(k) for _, k in quota])
    view.cooldown_bands = _bands([c[_COL["cooldown_ns"]] for c in cum], x)
    view.breaker_bands = _bands([c[_COL["breaker_ns"]] for c in cum], x)
    view.wait_hist = histogram_bars(d.tracker.wait_hist)
    view.attempt_hist = histogram_bars(d.tracker.attempt_hist)
    view.peak_in_flight = max((m[1] for m in d.maxima), default=0)
    view.peak_waiters = max((m[2] for m in d.maxima), default=0)
    return view


def _rate(cumulative: Sequence[int | float], widths: list[float], *, scale: float = 1.0) -> Numbers:
    """Per-bin Δvalue/Δt (× scale), indexed by the bin's start edge."""
    out: Numbers = [
        round((b - a) * scale / w, 3) if w > 0 else 0.0
        for a, b, w in zip(cumulative, cumulative[1:], widths, strict=False)
    ]
    return _stepped(out)


def _smoothed_rate(cumulative: Sequence[int], x: list[float]) -> Numbers:
    """Events per second over a window of ~1/RATE_WINDOWS of the run centred on each edge:
    per-bin rates of rare events (a row every 100 bins) would be spikes and zeros."""
    n = len(cumulative) - 1
    if n < 1:
        return [0.0] * len(cumulative)
    # a window of ~1/RATE_WINDOWS of the run, widened until it holds ~RATE_EVENTS events on
    # average (a short run with few requests), at most a quarter of the run
    total = cumulative[-1] - cumulative[0]
    half = max(1, n // (2 * RATE_WINDOWS), math.ceil(RATE_EVENTS * n / (2 * total)) if total else 1)
    half = min(half, max(1, n // 4))
    out: Numbers = []
    for i in range(n + 1):
        lo, hi = max(0, i - half), min(n, i + half)
        span = x[hi] - x[lo]
        out.append(round((cumulative[hi] - cumulative[lo]) / span, 3) if span > 0 else 0.0)
    return out


def _stepped(values: Numbers) -> Numbers:
    """Per-bin values → one per edge (the last bin's value repeated at the final edge)."""
    return [*values, values[-1]] if values else [0.0]


def _num(value: int | None) -> float | None:
    return None if value is None else float(value)


def _marks(cumulative: Sequence[int]) -> Numbers:
    """429s per bin, None where there were none (drawn as points only where they happened)."""
    counts = [b - a for a, b in pairwise(cumulative)]
    return [float(c) if c else None for c in counts] + [None]


def _bands(cumulative: Sequence[int], x: list[float]) -> list[tuple[float, float]]:
    """Time ranges of consecutive bins in which the integral grew (a cooldown or an open
    breaker held during some of the bin)."""
    bands: list[tuple[float, float]] = []
    for i, (a, b) in enumerate(pairwise(cumulative)):
        if b <= a:
            continue
        if bands and bands[-1][1] == x[i]:
            bands[-1] = (bands[-1][0], x[i + 1])
        else:
            bands.append((x[i], x[i + 1]))
    return bands


def histogram_bars(hist: LogHistogram) -> list[tuple[float, int]]:
    """The analyzer's log buckets merged ``HIST_MERGE`` at a time: (bar start in s, count)."""
    hist.flush()
    bars: list[tuple[float, int]] = []
    if hist.zeros:
        bars.append((0.0, hist.zeros))
    counts = hist.counts
    for first in range(0, len(counts), HIST_MERGE):
        n = sum(counts[first : first + HIST_MERGE])
        if n:
            bars.append((float(f"{GAMMA**first / NS:.4g}"), n))
    return bars


def peak(values: Numbers) -> float:
    return max((v for v in values if v is not None and not math.isnan(v)), default=0.0)
