"""Downsampled time series of a run, sampled from the health analyzer's own state while it reads.

The report plots a run over time, but a record can hold millions of events. So the collector
keeps a bounded number of *bins*: their edges are ``t0 + k × width``, and when the run outgrows
``MAX_BINS`` bins the width doubles and neighbouring bins merge. Memory is a few arrays of at
most ``MAX_BINS`` numbers per series, whatever the length of the run.

What is stored at each bin edge is chosen so that merging is exact:

* *cumulative* figures (a counter, or a time integral such as "slot-ns in cooldown") are read at
  the edge; merging two bins just drops the edge between them. Per-bin means and rates are the
  difference of two edges divided by the bin's width, so they are exact, not sampled.
* *extremes* (the largest number in flight inside a bin, the lowest AIMD limit) merge pairwise.

Most cumulative figures are the analyzer's (:class:`~ddscope.exporters.health.domain.
DomainTracker`: idle attribution, cooldown and breaker time, attempts and 429s; rows and drops of
:class:`~ddscope.exporters.health.analyzer.HealthAnalyzer`), read at each edge after
integrating the tracker up to it — the report shows the same numbers as ``ddtrace health``. The
collector itself only follows three step functions per domain that the analyzer does not
integrate: the AIMD limit, requests on the wire and requests waiting for admission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddscope.exporters.health.analyzer import HealthAnalyzer
from ddscope.exporters.health.domain import DomainTracker

MAX_BINS = 1024  # a plot has 512-1024 bins once the run is longer than 512 × START_WIDTH_NS
START_WIDTH_NS = 1_000_000  # 1 ms: a sub-second demo run still gets a smooth plot
IDLE_PARTS = (
    "cooldown",
    "breaker",
    "shutdown",
    "limit",
    "waiters_ahead",
    "awaiting_salvage",
    "dependencies",
    "horizon",
)
# tracker attributes read at each edge (cumulative), in the order of DomainTracker.idle_parts
_TRACKER_CUMULATIVE = (
    "w_cooldown",
    "w_breaker",
    "w_shutdown",
    "w_limit",
    "w_ahead",
    "n_salvage",
    "n_deps",
    "n_horizon",
    "busy_slot_ns",
    "cooldown_ns",
    "breaker_ns",
    "attempts_total",
    "rate_limited",
)


class Step:
    """A step function of time (a count or a limit): its running integral and per-bin
    extremes."""

    __slots__ = ("bin_max", "bin_min", "integral", "last_t", "value")

    def __init__(self, value: int, t0: int) -> None:
        self.value = value
        self.last_t = t0
        self.integral = 0  # value × ns
        self.bin_max = self.bin_min = value

    def set(self, t: int, value: int) -> None:
        self.integral += self.value * (t - self.last_t)
        self.last_t = t
        self.value = value
        if value > self.bin_max:
            self.bin_max = value
        elif value < self.bin_min:
            self.bin_min = value

    def edge(self, t: int) -> tuple[int, int, int]:
        """(integral up to t, max and min inside the bin that ends at t); starts the next bin."""
        self.integral += self.value * (t - self.last_t)
        self.last_t = t
        out = (self.integral, self.bin_max, self.bin_min)
        self.bin_max = self.bin_min = self.value
        return out


class DomainSeries:
    """One domain's bins: the analyzer's cumulative figures plus the three steps."""

    def __init__(self, tracker: DomainTracker, t0: int) -> None:
        self.tracker = tracker
        self.limit = Step(tracker.limit, t0)
        self.in_flight = Step(0, t0)
        self.waiters = Step(0, t0)
        self.limit_seen = False  # a limit_changed was seen (the initial limit is then known)
        self.cumulative: list[tuple[int, ...]] = []  # per edge: _TRACKER_CUMULATIVE + 3 integrals
        self.maxima: list[tuple[int, int, int]] = []  # per bin: limit min; in flight, waiters max
        # per bin: the lowest x-ratelimit-remaining-{requests,tokens} a provider answered with
        # (None: no answer in the bin carried the header)
        self.quota: list[tuple[int | None, int | None]] = []
        self.quota_bin: tuple[int | None, int | None] = (None, None)

    def sample(self, t: int) -> None:
        tracker = self.tracker
        if tracker.last_t < t:
            tracker.touch(t)
        limit, in_flight, waiters = self.limit.edge(t), self.in_flight.edge(t), self.waiters.edge(t)
        values = tuple(getattr(tracker, name) for name in _TRACKER_CUMULATIVE)
        self.cumulative.append((*values, limit[0], in_flight[0], waiters[0]))
        self.maxima.append((limit[2], in_flight[1], waiters[1]))
        self.quota.append(self.quota_bin)
        self.quota_bin = (None, None)

    def restate_initial_limit(self, limit: int, edges: list[int]) -> None:
        """Replays the time so far with ``limit`` instead of the assumed initial limit."""
        step, t0 = self.limit, edges[0] if edges else self.limit.last_t
        delta = limit - step.value
        step.integral += delta * (step.last_t - t0)
        step.value = step.bin_max = step.bin_min = limit
        column = len(_TRACKER_CUMULATIVE)  # the limit integral follows the tracker's figures
        self.cumulative = [
            (*c[:column], c[column] + delta * (edge - t0), *c[column + 1 :])
            for c, edge in zip(self.cumulative, edges, strict=True)
        ]
        self.maxima = [(limit, m[1], m[2]) for m in self.maxima]

    def quota_seen(self, requests: int | None, tokens: int | None) -> None:
        low_r, low_t = self.quota_bin
        self.quota_bin = (_lowest(low_r, requests), _lowest(low_t, tokens))

    def halve(self) -> None:
        """Merges bins pairwise; index 0 is the sample at t0 (an empty bin) and stays."""
        c, m = self.cumulative, self.maxima
        self.cumulative = c[0:1] + c[2::2]
        self.maxima = m[0:1] + [
            (min(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))
            for a, b in zip(m[1::2], m[2::2], strict=True)
        ]
        q = self.quota
        self.quota = q[0:1] + [
            (_lowest(a[0], b[0]), _lowest(a[1], b[1]))
            for a, b in zip(q[1::2], q[2::2], strict=True)
        ]


def _lowest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


class SeriesCollector:
    """Watches the events the analyzer reads (call :meth:`observe` *before* the analyzer
    handles each event, :meth:`finish` after ``analyzer.finish()``)."""

    def __init__(self, analyzer: HealthAnalyzer) -> None:
        self.analyzer = analyzer
        self.t0: int | None = None
        self.width = START_WIDTH_NS
        self.next_edge = -1  # the first event starts the bins
        self.edges: list[int] = []
        self.run_cumulative: list[tuple[int, int, int]] = []  # rows done, rows dropped, tasks ok
        self.domains: dict[str, DomainSeries] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], int], None]] = {
            "attempt_started": self._attempt_started,
            "attempt_finished": self._attempt_finished,
            "wait_started": self._wait_started,
            "wait_finished": self._wait_finished,
            "limit_changed": self._limit_changed,
        }

    def observe(self, data: dict[str, Any]) -> None:
        """One event (the hot path is inlined in :func:`~.collect.watched`)."""
        t = data["t_ns"]
        if t >= self.next_edge:
            self.advance(t)
        handler = self.handlers.get(data["kind"])
        if handler is not None:
            handler(data, t)

    def advance(self, t: int) -> None:
        """Samples every bin edge up to ``t`` (the first call starts the bins at ``t``)."""
        if self.t0 is None:
            self._begin(t)
        while t >= self.next_edge:
            self._sample(self.next_edge)

    def finish(self) -> None:
        """The last, partial bin: up to the analyzer's end of the window."""
        if self.t0 is None:
            self._begin(self.analyzer.end_ns)
        end = self.analyzer.end_ns
        while end >= self.next_edge:
            self._sample(self.next_edge)
        if not self.edges or end > self.edges[-1]:
            self._sample(end)

    # -- bins ----------------------------------------------------------------------------------

    def _begin(self, t: int) -> None:
        self.t0 = t
        self.next_edge = t + self.width
        for name, tracker in self.analyzer.trackers.items():
            self.domains[name] = DomainSeries(tracker, t)
        self.edges.append(t)
        self._sample_values(t)

    def _sample(self, t: int) -> None:
        self.edges.append(t)
        self._sample_values(t)
        self.next_edge = t + self.width
        if len(self.edges) > MAX_BINS:
            self._halve()

    def _sample_values(self, t: int) -> None:
        a = self.analyzer
        drops = sum(a.tally.drops.values())
        self.run_cumulative.append((a.rows_written, drops, a.lease_outcomes.get("ok", 0)))
        for series in self.domains.values():
            series.sample(t)

    def _halve(self) -> None:
        """Doubles the width: keeps the first edge (t0) and every second edge after it."""
        self.edges = self.edges[0:1] + self.edges[2::2]
        self.run_cumulative = self.run_cumulative[0:1] + self.run_cumulative[2::2]
        for series in self.domains.values():
            series.halve()
        self.width *= 2
        self.next_edge = self.edges[-1] + self.width

    # -- the three step functions ------------------------------------------------------------

    def _domain(self, name: str, t: int) -> DomainSeries | None:
        """The domain's series; None for a domain missing from the header (the analyzer warns
        about it, and the report has no capacity to plot it against)."""
        return self.domains.get(name)

    def _attempt_started(self, data: dict[str, Any], t: int) -> None:
        s = self._domain(data["domain"], t)
        if s is not None:
            s.in_flight.set(t, s.in_flight.value + 1)

    def _attempt_finished(self, data: dict[str, Any], t: int) -> None:
        s = self._domain(data["domain"], t)
        if s is None:
            return
        if s.in_flight.value > 0:
            s.in_flight.set(t, s.in_flight.value - 1)
        requests = data.get("ratelimit_remaining_requests")
        tokens = data.get("ratelimit_remaining_tokens")
        if requests is not None or tokens is not None:  # newer records carry the quota headers
            s.quota_seen(requests, tokens)

    def _wait_started(self, data: dict[str, Any], t: int) -> None:
        s = self._domain(data["domain"], t)
        if s is not None:
            s.waiters.set(t, s.waiters.value + 1)

    def _wait_finished(self, data: dict[str, Any], t: int) -> None:
        s = self._domain(data["domain"], t)
        if s is not None and s.waiters.value > 0:
            s.waiters.set(t, s.waiters.value - 1)

    def _limit_changed(self, data: dict[str, Any], t: int) -> None:
        s = self._domain(data["domain"], t)
        if s is None:
            return
        if not s.limit_seen and data["old"] != s.limit.value:
            # the limit before the first change was not the header's capacity (a startup
            # ramp starts lower): the record knows better, as in the health analyzer
            s.restate_initial_limit(data["old"], self.edges)
        s.limit_seen = True
        s.limit.set(t, data["new"])
