"""The event contract: every view of a run (run.jsonl, OTel, Perfetto, health) reads these.

A run record is JSON Lines. Line 1 is a :class:`RunHeader`; every later line is one event, a
pydantic model discriminated on ``kind``. Times are ``t_ns``: nanoseconds since the run started,
read from the engine's clock (monotonic, or a fake clock in tests), so records are comparable
across machines and replayable with their original timing (``RunHeader.started_at_unix_ns`` +
``t_ns`` gives wall-clock time).

Intervals are pairs of events that share an id, so any consumer can rebuild them:

============================  ==========================  ===========================
interval                      start / finish kinds        shared id
============================  ==========================  ===========================
run                           run_started / run_finished  (one per record)
row group                     row_group_started/_finished ``row_group``
task lease                    lease_started / _finished   ``lease_id``
request-admission wait        wait_started / _finished    ``request_id`` + ``attempt``
request attempt               attempt_started / _finished ``request_id`` + ``attempt``
cooldown                      cooldown_started / _fin.    ``cooldown_id``
salvage round                 salvage_started / _finished ``round``
============================  ==========================  ===========================

Point events: ``limit_changed`` (AIMD), ``breaker``, ``task_deferred``, ``row_dropped``,
``health``, ``shutdown``, ``resumed``.

Compatibility: ``SCHEMA`` is bumped when a change would break a reader of old records (a field
removed or renamed, a meaning changed). Adding an optional field or a new kind does not bump it:
readers skip kinds they do not know, with a count.

Secrets never appear here: providers are described by name, endpoint host and the *name* of the
environment variable that holds the key. Prompt and completion text appear only when the user
opted in (``RunHeader.record_text``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA = "ddscope.run/1"

log = logging.getLogger(__name__)

# Outcomes and kinds are plain string literals so records stay readable and JSON-stable.
AttemptOutcome = Literal[
    "ok",
    "rate_limited",  # HTTP 429
    "server_error",  # 5xx
    "client_error",  # other 4xx: not retryable
    "timeout",  # the request took longer than the model's timeout
    "connection_error",  # could not connect / connection reset
    "bad_response",  # 2xx with a body that is not a chat completion
    "cancelled",
]
WaitOutcome = Literal["admitted", "timeout", "cancelled", "breaker_open"]
LeaseOutcome = Literal["ok", "deferred", "dropped", "cancelled"]
RunOutcome = Literal["complete", "failed", "shutdown", "cancelled"]
BreakerState = Literal["open", "half_open", "closed"]
LimitChangeReason = Literal["increase", "decrease", "ramp", "ramp_end", "probe"]
# Error kinds a task can fail with: the attempt outcomes that are failures, plus local ones.
ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection_error",
    "bad_response",
    "admission_timeout",  # local: request admission's acquire timed out (never a row drop)
    "breaker_open",  # local: the domain's circuit breaker refused the request
    "template_error",  # local: a prompt/expression could not be rendered
    "cancelled",
]
RETRYABLE_KINDS: frozenset[str] = frozenset(
    {
        "rate_limited",
        "server_error",
        "timeout",
        "connection_error",
        "admission_timeout",
        "breaker_open",
        "bad_response",
    }
)


class _Model(BaseModel):
    # Frozen: events are facts. extra="ignore": a newer writer's extra fields do not break us.
    model_config = ConfigDict(frozen=True, extra="ignore")


# ---------------------------------------------------------------------------------------------
# Header


class DomainInfo(_Model):
    """One request-admission domain: a (provider, model) pair."""

    domain: str  # "provider/model"
    provider: str
    model: str
    server_address: str | None = None  # endpoint host, for OTel server.address
    server_port: int | None = None
    max_parallel_requests: int
    api_key_env: str | None = None  # the variable's *name*; the value is never recorded


class ColumnInfo(_Model):
    name: str
    type: str  # sampler | llm_text | expression
    model_alias: str | None = None
    domain: str | None = None
    depends_on: list[str] = Field(default_factory=list)


class RunHeader(_Model):
    kind: Literal["header"] = "header"
    schema_: str = Field(default=SCHEMA, alias="schema")
    ddscope_version: str
    run_id: str
    started_at_unix_ns: int
    pipeline_name: str = "pipeline"
    num_records: int
    buffer_size: int
    columns: list[ColumnInfo] = Field(default_factory=list)
    domains: list[DomainInfo] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)  # run settings, secrets excluded
    record_text: bool = False
    # Resume (engine/resume.py): segment 0 is the first record file; a resumed run writes
    # segment N to run.N.jsonl with the same run_id. ``fingerprint`` names each part of the
    # pipeline that decides the rows (columns, models, seed, sizes) with a digest, so a resume
    # with a changed pipeline is refused naming what changed.
    segment: int = 0
    fingerprint: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# ---------------------------------------------------------------------------------------------
# Events


class _Event(_Model):
    t_ns: int = Field(ge=0)


class RunStarted(_Event):
    kind: Literal["run_started"] = "run_started"
    num_records: int
    row_groups: int


class RunFinished(_Event):
    kind: Literal["run_finished"] = "run_finished"
    outcome: RunOutcome
    reason: str | None = None  # machine-readable, e.g. "endpoint_saturated"
    message: str | None = None  # one human sentence
    rows_completed: int
    rows_dropped: int


class RowGroupStarted(_Event):
    kind: Literal["row_group_started"] = "row_group_started"
    row_group: int
    first_row: int
    rows: int


class RowGroupFinished(_Event):
    kind: Literal["row_group_finished"] = "row_group_finished"
    row_group: int
    outcome: Literal["checkpointed", "abandoned"]
    rows_completed: int
    rows_dropped: int


class LeaseStarted(_Event):
    """A task lease was granted: the task holds its resources and a worker runs it."""

    kind: Literal["lease_started"] = "lease_started"
    lease_id: int
    task_id: str  # "{column}:{row}"
    row_group: int
    column: str
    row: int
    resources: dict[str, int] = Field(default_factory=dict)
    salvage_round: int | None = None  # None in the main pass


class LeaseFinished(_Event):
    kind: Literal["lease_finished"] = "lease_finished"
    lease_id: int
    task_id: str
    row_group: int
    column: str
    outcome: LeaseOutcome
    error_kind: ErrorKind | None = None


class WaitStarted(_Event):
    """A request started waiting for request admission in its domain."""

    kind: Literal["wait_started"] = "wait_started"
    request_id: int
    attempt: int  # 1-based attempt number of this request
    task_id: str
    lease_id: int
    domain: str


class WaitFinished(_Event):
    kind: Literal["wait_finished"] = "wait_finished"
    request_id: int
    attempt: int
    task_id: str
    domain: str
    outcome: WaitOutcome


class AttemptStarted(_Event):
    kind: Literal["attempt_started"] = "attempt_started"
    request_id: int
    attempt: int
    task_id: str
    lease_id: int
    domain: str
    prompt: str | None = None  # only with RunHeader.record_text


class AttemptFinished(_Event):
    kind: Literal["attempt_finished"] = "attempt_finished"
    request_id: int
    attempt: int
    task_id: str
    domain: str
    outcome: AttemptOutcome
    status_code: int | None = None
    retry_after_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    response_model: str | None = None
    error: str | None = None  # short description of a failure; never contains secrets
    completion: str | None = None  # only with RunHeader.record_text
    # The provider's x-ratelimit-* headers on this answer (absent when it sent none).
    ratelimit_remaining_requests: int | None = None
    ratelimit_remaining_tokens: int | None = None
    ratelimit_reset_requests_s: float | None = None
    ratelimit_reset_tokens_s: float | None = None
    quota_exhausted: bool | None = None  # a 429 judged quota exhaustion, not saturation
    backoff_s: float | None = None  # the jittered pause before this task's next try (5xx, …)


class CooldownStarted(_Event):
    kind: Literal["cooldown_started"] = "cooldown_started"
    cooldown_id: int
    domain: str
    # rate_limited: a 429 (or a 503 with Retry-After); probe: pacing a half-open probe;
    # quota: the provider's x-ratelimit-remaining-* reached 0, paused until its reset
    cause: Literal["rate_limited", "probe", "quota"] = "rate_limited"
    retry_after_s: float | None = None  # what the server asked for, if anything
    duration_s: float  # what the engine will wait (Retry-After, else default, capped)
    request_id: int | None = None  # the attempt that caused it
    attempt: int | None = None


class CooldownFinished(_Event):
    kind: Literal["cooldown_finished"] = "cooldown_finished"
    cooldown_id: int
    domain: str


class LimitChanged(_Event):
    """The AIMD concurrency limit of a domain changed."""

    kind: Literal["limit_changed"] = "limit_changed"
    domain: str
    old: int
    new: int
    reason: LimitChangeReason


class BreakerChanged(_Event):
    kind: Literal["breaker"] = "breaker"
    domain: str
    state: BreakerState
    reason: str  # e.g. "sustained_429", "probe_succeeded", "cooldown_ended"
    consecutive_429: int = 0
    share_429: float = 0.0  # refused share of the breaker's sliding window
    time_at_floor_s: float = 0.0
    last_retry_after_s: float | None = None
    policy: Literal["fail_fast", "wait"] = "fail_fast"
    window_s: float | None = None  # the sliding window judged, and what it held
    window_attempts: int | None = None
    window_refused: int | None = None


class SalvageStarted(_Event):
    kind: Literal["salvage_started"] = "salvage_started"
    round: int  # 1-based
    tasks: int


class SalvageFinished(_Event):
    kind: Literal["salvage_finished"] = "salvage_finished"
    round: int
    recovered: int
    still_deferred: int


class TaskDeferred(_Event):
    """A retryable failure: the task goes back for a later salvage round."""

    kind: Literal["task_deferred"] = "task_deferred"
    task_id: str
    row_group: int
    column: str
    row: int
    error_kind: ErrorKind
    attempts: int
    message: str | None = None


class RowDropped(_Event):
    kind: Literal["row_dropped"] = "row_dropped"
    row_group: int
    row: int
    column: str | None = None  # the column whose task failed
    task_id: str | None = None
    reason: str  # machine-readable, e.g. "client_error", "retries_exhausted"
    message: str


class DomainHealth(_Model):
    domain: str
    limit: int
    in_flight: int
    waiters: int
    cooldown_remaining_s: float = 0.0
    recent_429_share: float = 0.0
    breaker: BreakerState = "closed"
    at_floor: bool = False


class Health(_Event):
    """A periodic snapshot, so "stuck" and "slow" can always be told apart."""

    kind: Literal["health"] = "health"
    queue_depth: int  # ready tasks waiting for a lease
    leases: int  # task leases held
    in_flight: int  # requests on the wire
    deferred: int
    rows_completed: int
    rows_dropped: int
    row_groups_in_flight: int
    domains: list[DomainHealth] = Field(default_factory=list)
    note: str | None = None


class Resumed(_Event):
    """First event after ``run_started`` of a resumed run's segment: what earlier segments
    already wrote (those row groups are not generated again)."""

    kind: Literal["resumed"] = "resumed"
    segment: int
    row_groups_done: int
    rows_done: int


class Shutdown(_Event):
    """The engine decided to stop early; run_finished follows once in-flight work settles."""

    kind: Literal["shutdown"] = "shutdown"
    reason: str  # "endpoint_saturated" | "error_rate" | "cancelled" | ...
    message: str
    domain: str | None = None


Event = Annotated[
    RunStarted
    | RunFinished
    | RowGroupStarted
    | RowGroupFinished
    | LeaseStarted
    | LeaseFinished
    | WaitStarted
    | WaitFinished
    | AttemptStarted
    | AttemptFinished
    | CooldownStarted
    | CooldownFinished
    | LimitChanged
    | BreakerChanged
    | SalvageStarted
    | SalvageFinished
    | TaskDeferred
    | RowDropped
    | Health
    | Resumed
    | Shutdown,
    Field(discriminator="kind"),
]

EVENT_TYPES: dict[str, type[BaseModel]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        RunStarted,
        RunFinished,
        RowGroupStarted,
        RowGroupFinished,
        LeaseStarted,
        LeaseFinished,
        WaitStarted,
        WaitFinished,
        AttemptStarted,
        AttemptFinished,
        CooldownStarted,
        CooldownFinished,
        LimitChanged,
        BreakerChanged,
        SalvageStarted,
        SalvageFinished,
        TaskDeferred,
        RowDropped,
        Health,
        Resumed,
        Shutdown,
    )
}
EVENT_KINDS: frozenset[str] = frozenset(EVENT_TYPES)

# Every field of each event class, one set per class, for events handed to sinks (EventBus.emit).
_EVERY_FIELD: dict[type[BaseModel], set[str]] = {
    cls: set(cls.model_fields) for cls in EVENT_TYPES.values()
}
_set_slot = object.__setattr__

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def split_domain(domain: str) -> tuple[str, str]:
    """``"provider/model"`` → (provider, model). Model ids may themselves contain ``/``."""
    provider, _, model = domain.partition("/")
    return provider, model


# ---------------------------------------------------------------------------------------------
# Sinks and the bus


@runtime_checkable
class EventSink(Protocol):
    """A consumer of one run's events. Must be quick: it runs on the engine's event loop."""

    def open(self, header: RunHeader) -> None: ...

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventBus:
    """Fans events out to sinks. A sink that raises is logged once and then skipped for the rest
    of the run: telemetry must never raise into the engine (like the OTel SDK's processors)."""

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self._sinks: list[EventSink] = list(sinks)
        self._failed: set[int] = set()
        # The hot path (``emit``): (index, bound ``handle``) of each live sink, rebuilt when a
        # sink is added or fails, so an event costs one call per sink.
        self._handles: list[tuple[int, Callable[[Event], None]]] = []
        self._refresh_handles()
        self.header: RunHeader | None = None
        # An *essential* sink (``essential = True``, e.g. the run.jsonl recorder) that fails is
        # not just skipped: ``fatal`` says why and ``on_fatal`` tells the engine, which stops
        # the run (a run without its record is not a run).
        self.fatal: str | None = None
        self.on_fatal: Callable[[str], None] | None = None

    @property
    def sinks(self) -> list[EventSink]:
        return list(self._sinks)

    def add(self, sink: EventSink) -> None:
        self._sinks.append(sink)
        self._refresh_handles()

    def _refresh_handles(self) -> None:
        self._handles = [
            (i, sink.handle) for i, sink in enumerate(self._sinks) if i not in self._failed
        ]

    @property
    def failed_sinks(self) -> list[EventSink]:
        return [s for i, s in enumerate(self._sinks) if i in self._failed]

    def open(self, header: RunHeader) -> None:
        self.header = header
        for i, sink in enumerate(self._sinks):
            self._call(i, sink, "open", header)

    def emit(self, event: Event) -> None:
        handles = self._handles
        if handles:
            shared = _EVERY_FIELD.get(type(event))
            if shared is not None:
                # Sinks keep events a while (the record's writer up to 0.1 s, the OTel sink's
                # batch 256 events) and free them on other threads. pydantic gives each event
                # its own set of the fields it was given: ~700 bytes, more than the fields
                # themselves. The class's shared set of every field replaces it (an engine
                # event states every field; pydantic copies the set before it changes one), so
                # what the sinks keep and free is half the memory. S5, record + OTLP over no
                # sinks: ~7 µs a task less (issue 17).
                _set_slot(event, "__pydantic_fields_set__", shared)
        for i, handle in handles:
            try:
                handle(event)
            except Exception as exc:
                self._sink_failed(i, self._sinks[i], "handle", exc)

    def close(self) -> None:
        for i, sink in enumerate(self._sinks):
            if i not in self._failed:
                self._call(i, sink, "close")

    def _call(self, index: int, sink: EventSink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:
            self._sink_failed(index, sink, method, exc)

    def _sink_failed(self, index: int, sink: EventSink, method: str, exc: Exception) -> None:
        if index not in self._failed:
            self._failed.add(index)
            self._refresh_handles()
            if getattr(sink, "essential", False):
                self._essential_failed(exc)
            else:
                log.exception(
                    "event sink %s failed in %s(); it is skipped for the rest of the run",
                    type(sink).__name__,
                    method,
                )
            if method != "close":
                try:  # give it a chance to release files/threads; its errors no longer matter
                    sink.close()
                except Exception:
                    log.debug("closing failed sink %s also failed", type(sink).__name__)

    def _essential_failed(self, exc: Exception) -> None:
        if self.fatal is None:
            self.fatal = str(exc) or type(exc).__name__
            if self.on_fatal is not None:
                self.on_fatal(self.fatal)


class ListSink:
    """Keeps every event in memory: for tests and small tools."""

    def __init__(self) -> None:
        self.header: RunHeader | None = None
        self.events: list[Event] = []
        self.closed = False

    def open(self, header: RunHeader) -> None:
        self.header = header

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True

    def of_kind(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.kind == kind]
