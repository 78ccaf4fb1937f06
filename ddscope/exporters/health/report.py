"""The health snapshot as data: frozen dataclasses and their stable JSON form (``to_json``).

The JSON document is versioned by ``schema`` (``HEALTH_SCHEMA``); a change that renames or
removes a key, or changes a meaning, bumps it (a test pins the key set). Times are seconds:
``*_s`` values are durations, ``t_s`` / ``start_s`` / ``end_s`` are seconds since the run
started (the record's ``t_ns`` / 1e9). ``*_slot_s`` values are slot-seconds (request slots ×
seconds). The README documents every key, under "The JSON document".

Verdict order (worst last): ``healthy < degraded < stalled < saturated < failed``; a finding's
``level`` is one of these or ``info`` (worth saying, no effect on the verdict).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ddscope.exporters.health.stats import RELATIVE_ERROR, Quantiles, TimelinePoint

HEALTH_SCHEMA = "ddscope.health/1"
Verdict = Literal["healthy", "degraded", "stalled", "saturated", "failed"]
VERDICTS: tuple[Verdict, ...] = ("healthy", "degraded", "stalled", "saturated", "failed")
Level = Literal["info", "degraded", "stalled", "saturated", "failed"]


def verdict_rank(verdict: str) -> int:
    """0 for healthy … 4 for failed; ``info`` ranks with healthy."""
    return VERDICTS.index(verdict) if verdict in VERDICTS else 0


@dataclass(frozen=True)
class Thresholds:
    """When a figure becomes a finding. Defaults are what ``ddtrace health`` uses."""

    stall_s: float = 30.0  # a no-progress interval (work pending) this long is a stall ...
    stall_fraction: float = 0.25  # ... and so is one this share of the run ...
    stall_min_s: float = 5.0  # ... when it is also at least this long
    degraded_429_share: float = 0.01  # a domain's 429 share from which the run is degraded
    # at the floor (limit 1) this long with this share of 429s there: saturated. Matched to the
    # engine's breaker (20 s window, 80 % refused), so an endpoint that serves 3 in 10 is
    # rate-limited (degraded, but serving), not saturated (issue 11).
    saturated_floor_s: float = 20.0
    saturated_429_share: float = 0.8
    admission_bound_share: float = 0.25  # ready work waited on admission ≥ this share of capacity
    starved_share: float = 0.5  # no ready work ≥ this share of capacity (an info finding)


@dataclass(frozen=True)
class Finding:
    code: str  # machine-readable, stable (see README_health.md)
    level: Level
    message: str  # one human sentence: what happened
    recommendation: str  # one concrete thing to do about it
    domain: str | None = None


@dataclass(frozen=True)
class DropExample:
    reason: str
    count: int
    rows: list[int]  # the first few rows dropped for this reason
    column: str | None
    message: str  # the first drop's sentence


@dataclass(frozen=True)
class Totals:
    state: Literal["finished", "running", "crashed"]  # running: --at before the end
    outcome: str | None  # run_finished.outcome; None unless finished
    reason: str | None
    message: str | None
    duration_s: float
    num_records: int
    rows_completed: int  # finished: run_finished's figure; else rows checkpointed so far
    rows_dropped: int
    drops_by_reason: dict[str, int]
    drop_examples: list[DropExample]
    rows_per_s: float
    requests: int  # finished attempts
    requests_per_s: float
    row_groups_total: int
    row_groups_finished: int
    resumes: int = 0  # segments after the first (``--resume``)
    stopped_s: float = 0.0  # between segments, within duration_s: the run was not running


@dataclass(frozen=True)
class LimitSummary:
    initial: int
    min: int
    max: int
    final: int
    changes: int


@dataclass(frozen=True)
class FloorStretch:
    """The longest stretch with the AIMD limit at its floor (1)."""

    start_s: float
    duration_s: float
    attempts: int
    rate_limited: int
    share_429: float
    open: bool  # still at the floor at the end of the window


@dataclass(frozen=True)
class Cooldowns:
    count: int
    total_s: float
    longest_s: float
    active: bool  # a cooldown was open at the end of the window


@dataclass(frozen=True)
class QuotaSummary:
    """The provider's quota (x-ratelimit-* headers) as the engine followed it."""

    pauses: int  # pauses until the stated reset (cooldowns of cause "quota")
    refused: int  # 429s answered while the quota was spent (not saturation evidence)


@dataclass(frozen=True)
class BreakerEvent:
    t_s: float
    state: str
    reason: str | None
    consecutive_429: int
    share_429: float
    time_at_floor_s: float
    policy: str


@dataclass(frozen=True)
class WaitingIdle:
    """Idle slot-seconds while ready model work waited, by the first cause that held."""

    total_slot_s: float
    cooldown_slot_s: float
    breaker_slot_s: float
    shutdown_slot_s: float
    limit_slot_s: float
    waiters_ahead_slot_s: float


@dataclass(frozen=True)
class NoWorkIdle:
    """Idle slot-seconds with no ready model work for them."""

    total_slot_s: float
    dependencies_slot_s: float
    awaiting_salvage_slot_s: float
    horizon_slot_s: float


@dataclass(frozen=True)
class IdleAttribution:
    capacity_slot_s: float  # max_parallel_requests × window
    busy_slot_s: float  # attempts on the wire
    idle_slot_s: float  # = ready_work_waiting.total + no_ready_work.total
    utilization: float  # busy / capacity
    ready_work_waiting: WaitingIdle
    no_ready_work: NoWorkIdle


@dataclass(frozen=True)
class DomainNow:
    """The domain's state at the end of the window (open intervals are counted as open)."""

    limit: int
    in_flight: int
    waits_open: int
    cooldown_active: bool
    breaker_open: bool


@dataclass(frozen=True)
class DomainReport:
    domain: str
    provider: str
    model: str
    max_parallel_requests: int
    attempts: dict[str, int]  # finished attempts by outcome
    attempts_total: int
    share_429: float
    tokens_in: int
    tokens_out: int
    limit: LimitSummary
    timeline: list[TimelinePoint]
    time_at_floor_s: float
    longest_floor: FloorStretch | None
    cooldowns: Cooldowns
    wait: Quantiles  # request-admission waits (only requests that had to wait record one)
    attempt_ok: Quantiles  # duration of successful attempts
    waits_by_outcome: dict[str, int]
    admission_timeouts: int
    breaker_openings: int
    breaker_events: list[BreakerEvent]
    idle: IdleAttribution
    now: DomainNow
    quota: QuotaSummary


@dataclass(frozen=True)
class GapDomain:
    """What one domain did during the longest no-progress interval (shares of its length)."""

    domain: str
    cooldown_share: float
    breaker_share: float
    on_the_wire_share: float  # ≥ 1 attempt on the wire
    ready_waiting_share: float  # ≥ 1 ready cell not on the wire
    awaiting_salvage_share: float
    mean_in_flight: float
    attempts: int
    rate_limited: int


@dataclass(frozen=True)
class EngineDomainHealth:
    domain: str
    limit: int
    in_flight: int
    waiters: int
    cooldown_remaining_s: float
    recent_429_share: float
    breaker: str
    at_floor: bool


@dataclass(frozen=True)
class EngineHealth:
    """The engine's own latest ``health`` event (in the window, or in the interval)."""

    t_s: float
    queue_depth: int
    leases: int
    in_flight: int
    deferred: int
    rows_completed: int
    rows_dropped: int
    row_groups_in_flight: int
    note: str | None
    domains: list[EngineDomainHealth]


@dataclass(frozen=True)
class NoProgress:
    """The longest interval, while rows were still unresolved, with no completed task (lease
    ok) and no checkpointed row group."""

    start_s: float
    end_s: float
    duration_s: float
    open: bool  # the window ended inside it
    # breaker_open | cooldown | on_the_wire | admission | awaiting_salvage | no_ready_work
    cause: str
    explanation: str
    domains: list[GapDomain]
    engine_health: EngineHealth | None


@dataclass(frozen=True)
class SalvageRound:
    round: int
    tasks: int
    recovered: int | None  # None while the round is open
    still_deferred: int | None
    start_s: float
    end_s: float | None


@dataclass(frozen=True)
class ShutdownInfo:
    t_s: float
    reason: str
    message: str
    domain: str | None


@dataclass(frozen=True)
class SchedulerReport:
    longest_no_progress: NoProgress | None
    max_silence_s: float  # longest time without a completed task, checkpoint or health event
    salvage_rounds: list[SalvageRound]
    tasks_deferred: dict[str, int]  # by error kind
    leases_by_outcome: dict[str, int]
    lease: Quantiles  # task lease duration
    peak_queue_depth: int  # from the engine's health events
    peak_leases: int
    peak_row_groups_in_flight: int
    health_events: int
    shutdown: ShutdownInfo | None


@dataclass(frozen=True)
class RecordInfo:
    path: str
    run_id: str
    pipeline_name: str
    ddscope_version: str
    events: int  # events read (those after --at included)
    warnings: list[str]


@dataclass(frozen=True)
class HealthReport:
    record: RecordInfo
    as_of_s: float | None  # --at, else None
    verdict: Verdict
    reasons: list[str]  # codes of the findings at the verdict's level
    findings: list[Finding]  # worst first
    totals: Totals
    domains: list[DomainReport]
    scheduler: SchedulerReport
    engine_health: EngineHealth | None
    thresholds: Thresholds
    percentile_relative_error: float = RELATIVE_ERROR
    schema: str = field(default=HEALTH_SCHEMA)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (a plain dict; ``schema`` first)."""
        data = _rounded(dataclasses.asdict(self))
        return {"schema": data.pop("schema"), **data}


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals (µs for seconds): stable, diff-friendly output."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
