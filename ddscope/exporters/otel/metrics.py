"""The run's OpenTelemetry instruments (names, units and attributes in docs/METRICS.md) and the
state behind the gauges and counters; the GenAI client metrics are in ``genai``.

Gauges and counters are *observable*: the sink keeps plain numbers from the event stream
(requests on the wire, waiters, open cooldowns, leases, row groups; running totals per attribute
set in a :class:`Tally`) and the SDK reads them when a reader collects. A synchronous
``Counter.add`` costs ~6 µs (the SDK validates, copies and hashes the attributes on every call);
a tally costs a dict update, and a cumulative observable counter exports the same monotonic sum
(Prometheus: the same ``_total`` counter). Histograms have no observable form, so they are
recorded as events arrive, with attribute dicts built once per (domain, outcome) and reused
(``histograms``: the SDK's lookup of the attribute set is done once per dict).

Every counter exists from the start of a run, at 0, for every label set known then (each
domain of the header × each attempt outcome, each known drop reason): a Prometheus panel shows 0
rather than "No data", and ``rate()`` has a first sample to count from.

Ids (run, task, lease, request) are never attributes here: they would make every series unique.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ddscope.events import AttemptOutcome, DomainInfo, split_domain
from ddscope.exporters.otel.histograms import FastHistogram, fast_histogram

ATTEMPT_OUTCOMES: tuple[str, ...] = get_args(AttemptOutcome)
# The reasons a row can be dropped for (dispatch.drop_row's callers): a non-retryable attempt
# failure, a template error, a task out of salvage rounds, a run stopped. Others still count,
# from their first drop.
DROP_REASONS = (
    "client_error",
    "template_error",
    "retries_exhausted",
    "shutdown",
    "cancelled",
)
# Waits and cooldowns: from 1 ms (admitted at once) to minutes (a saturated endpoint).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_Callback = Callable[[CallbackOptions], Iterable[Observation]]
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
OUTCOME = "ddscope.outcome"


@dataclass(slots=True)
class DomainState:
    """One (provider, model) domain: its fixed attributes and its live gauge values."""

    name: str
    provider: str
    model: str
    server_address: str | None = None
    server_port: int | None = None
    limit: int | None = None  # unknown until a limit change or a health snapshot says
    in_flight: int = 0
    waiters: int = 0
    open_cooldowns: int = 0
    ratelimit_remaining_requests: int | None = None  # the provider's latest x-ratelimit-* count
    metric_attrs: dict[str, str] = field(default_factory=dict)
    span_attrs: dict[str, str | int] = field(default_factory=dict)  # of every attempt span
    # (outcome) → attribute dicts, built on first use and reused for every later measurement
    attempt_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    duration_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    token_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    usage_attrs: dict[str, str] = field(default_factory=dict)  # GenAI usage counters

    def __post_init__(self) -> None:
        self.metric_attrs = {PROVIDER: self.provider, REQUEST_MODEL: self.model}
        self.span_attrs = {"gen_ai.operation.name": "chat", **self.metric_attrs}
        if self.server_address is not None:
            self.span_attrs["server.address"] = self.server_address
        if self.server_port is not None:
            self.span_attrs["server.port"] = self.server_port

    @classmethod
    def from_info(cls, info: DomainInfo) -> DomainState:
        return cls(info.domain, info.provider, info.model, info.server_address, info.server_port)

    @classmethod
    def from_name(cls, domain: str) -> DomainState:
        provider, model = split_domain(domain)
        return cls(domain, provider, model)

    def attempt_attributes(self, outcome: str) -> dict[str, str]:
        attrs = self.attempt_attrs.get(outcome)
        if attrs is None:
            attrs = self.attempt_attrs[outcome] = {**self.metric_attrs, OUTCOME: outcome}
        return attrs

    def duration_attributes(self, outcome: str) -> dict[str, str]:
        attrs = self.duration_attrs.get(outcome)
        if attrs is None:
            attrs = {**self.metric_attrs, "gen_ai.operation.name": "chat"}
            if outcome != "ok":
                attrs["error.type"] = outcome
            self.duration_attrs[outcome] = attrs
        return attrs

    def token_attributes(self, token_type: str) -> dict[str, str]:
        attrs = self.token_attrs.get(token_type)
        if attrs is None:
            attrs = {**self.metric_attrs, "gen_ai.operation.name": "chat"}
            attrs["gen_ai.token.type"] = token_type
            self.token_attrs[token_type] = attrs
        return attrs


class Tally:
    """Running totals of one counter, per attribute set, read by an ObservableCounter.

    ``add`` keys the total by the *identity* of ``attributes``: callers pass long-lived,
    reused attribute dicts (the per-domain caches), so an add is one dict update. The dict is
    kept here, so its id is not reused while it counts. Equal dicts that are distinct objects
    are merged when observed. Thread-safety: the engine thread adds, a reader thread observes;
    each dict operation is atomic under the GIL and ``observe`` works on a copy.
    """

    __slots__ = ("_attributes", "_totals")

    def __init__(self) -> None:
        self._totals: dict[int, float] = {}
        self._attributes: dict[int, Mapping[str, Any] | None] = {}

    def add(self, attributes: Mapping[str, Any] | None = None, amount: float = 1) -> None:
        key = id(attributes)
        totals = self._totals
        if key in totals:
            totals[key] += amount
        else:
            self._attributes[key] = attributes  # before the total: observe() looks it up
            totals[key] = amount

    def totals(self) -> list[tuple[Mapping[str, Any] | None, float]]:
        """(attributes, total) per distinct attribute set."""
        merged: dict[frozenset[tuple[str, Any]], tuple[Mapping[str, Any] | None, float]] = {}
        for key, total in list(self._totals.items()):
            attributes = self._attributes[key]
            series = frozenset(attributes.items()) if attributes else frozenset()
            previous = merged.get(series)
            merged[series] = (attributes, total + (previous[1] if previous else 0))
        return list(merged.values())

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(total, attributes) for attributes, total in self.totals()]


@dataclass(slots=True)
class RunGauges:
    """Run-wide gauge values; ``domains`` is shared with the sink that updates them."""

    domains: dict[str, DomainState] = field(default_factory=dict)
    queue_depth: int = 0
    leases: int = 0
    row_groups: int = 0


def _nothing() -> None:
    pass


class RunInstruments:
    """Creates every ddscope instrument of docs/METRICS.md on ``meter``; gauges read
    ``gauges`` and counters their tallies on collect, after calling :attr:`before_collect` (the
    sink processes the events it has queued, so what a reader collects is up to date)."""

    def __init__(self, meter: Meter, gauges: RunGauges) -> None:
        self._gauges = gauges
        self.before_collect: Callable[[], None] = _nothing
        self.histograms: list[FastHistogram] = []  # folded by the sink after each batch
        self._observable_gauges(meter)
        self._observable_counters(meter)
        self._histograms(meter)
        for tally in (self.rows_completed, self.salvage_rounds):
            tally.add(None, 0)
        for reason in DROP_REASONS:
            self.rows_dropped.add(self.drop_reason(reason), 0)

    def zero(self, domain: DomainState) -> None:
        """Every per-domain counter of ``domain`` at 0 (outcomes: each attempt outcome)."""
        for outcome in ATTEMPT_OUTCOMES:
            self.attempts.add(domain.attempt_attributes(outcome), 0)
        attrs = domain.metric_attrs
        for tally in (
            self.rate_limited,
            self.admission_timeouts,
            self.breaker_openings,
            self.cooldown_time,
        ):
            tally.add(attrs, 0)

    def _observable_counters(self, meter: Meter) -> None:
        self.attempts = Tally()
        self.rate_limited = Tally()
        self.admission_timeouts = Tally()
        self.rows_completed = Tally()
        self.rows_dropped = Tally()
        self.salvage_rounds = Tally()
        self.breaker_openings = Tally()
        self.cooldown_time = Tally()
        self._drop_reasons: dict[str, dict[str, str]] = {}
        counters = (
            ("ddscope.request.attempts", "{request}", "Request attempts", self.attempts),
            (
                "ddscope.request.rate_limited",
                "{request}",
                "Attempts answered 429",
                self.rate_limited,
            ),
            (
                "ddscope.request.admission_timeouts",
                "{request}",
                "Requests whose wait for request admission timed out",
                self.admission_timeouts,
            ),
            ("ddscope.rows.completed", "{row}", "Rows written", self.rows_completed),
            ("ddscope.rows.dropped", "{row}", "Rows dropped, by reason", self.rows_dropped),
            ("ddscope.salvage.rounds", "{round}", "Salvage rounds run", self.salvage_rounds),
            (
                "ddscope.breaker.openings",
                "{opening}",
                "Circuit breaker openings",
                self.breaker_openings,
            ),
            ("ddscope.cooldown.time", "s", "Total time in cooldown", self.cooldown_time),
        )
        for name, unit, description, tally in counters:
            callback = self.observer(tally.observe)
            meter.create_observable_counter(name, [callback], unit, description)

    def drop_reason(self, reason: str) -> dict[str, str]:
        """The (reused) attributes of ``ddscope.rows.dropped`` for ``reason``."""
        attrs = self._drop_reasons.get(reason)
        if attrs is None:
            attrs = self._drop_reasons[reason] = {"ddscope.drop.reason": reason}
        return attrs

    def _histograms(self, meter: Meter) -> None:
        histogram = fast_histogram(meter, self.histograms)
        self.wait_duration = histogram(
            "ddscope.request.wait.duration",
            "s",
            "Time a request waited for request admission",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self.cooldown_duration = histogram(
            "ddscope.cooldown.duration",
            "s",
            "Length of each cooldown",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )

    def _observable_gauges(self, meter: Meter) -> None:
        per_domain = (
            ("ddscope.request.limit", "{request}", "AIMD concurrency limit", self._limits),
            ("ddscope.request.in_flight", "{request}", "Requests on the wire", self._in_flight),
            ("ddscope.request.waiters", "{request}", "Requests waiting", self._waiters),
            ("ddscope.request.cooldown.active", "1", "1 while in cooldown", self._cooling),
            ("ddscope.ratelimit.remaining_requests", "{request}", "Quota left", self._quota),
        )
        run_wide = (
            ("ddscope.queue.depth", "{task}", "Ready tasks waiting for a lease", "queue_depth"),
            ("ddscope.task.leases", "{task}", "Task leases held", "leases"),
            ("ddscope.row_groups.in_flight", "{row_group}", "Row groups in flight", "row_groups"),
        )
        for name, unit, description, callback in per_domain:
            meter.create_observable_gauge(name, [self.observer(callback)], unit, description)
        for name, unit, description, attr in run_wide:
            observe = self.observer(self._run_wide(attr))
            meter.create_observable_gauge(name, [observe], unit, description)

    def observer(self, callback: _Callback) -> _Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            self.before_collect()
            return callback(options)

        return observe

    def _domains(self) -> Iterator[DomainState]:
        # A copy: the engine thread may add a domain while a reader thread collects.
        return iter(list(self._gauges.domains.values()))

    def _limits(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(d.limit, d.metric_attrs) for d in self._domains() if d.limit]

    def _in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(d.in_flight, d.metric_attrs) for d in self._domains()]

    def _waiters(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(d.waiters, d.metric_attrs) for d in self._domains()]

    def _quota(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(d.ratelimit_remaining_requests, d.metric_attrs)
            for d in self._domains()
            if d.ratelimit_remaining_requests is not None
        ]

    def _cooling(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(d.open_cooldowns > 0), d.metric_attrs) for d in self._domains()]

    def _run_wide(self, attr: str) -> _Callback:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(self._gauges, attr))]

        return observe
