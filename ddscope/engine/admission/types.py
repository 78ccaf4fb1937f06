"""The value types of request admission: settings, permits and statistics snapshots.

Kept apart from the gate so the pipeline loader can build and check settings without asyncio.

Settings have ONE source of truth: :class:`~ddscope.engine.pipeline.parts.RunSettings` (and the
model alias's ``max_parallel_requests`` / ``ramp_s``). :class:`AdmissionSettings` holds a validated
``RunSettings`` and reads every value from it — no default and no check is repeated here. A bad
value raises :class:`ConfigError` naming the field (``run.breaker_window_s: …``), whichever way
the settings were built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ddscope import events
from ddscope.engine.admission.aimd import AimdSettings
from ddscope.engine.pipeline.parts import ModelAlias, RunSettings
from ddscope.engine.pipeline.source import validate_run_settings
from ddscope.errors import ConfigError

BREAKER_POLICIES = ("fail_fast", "wait")
_ALIAS_DEFAULTS = ModelAlias.model_fields


@dataclass(frozen=True)
class AdmissionSettings:
    """One domain's request-admission settings: the alias's parallelism and ramp, the run's
    settings for everything else. Build with :meth:`for_alias` (a run) or :meth:`of` (tests,
    tools: keyword overrides of the RunSettings defaults)."""

    max_parallel: int
    ramp_s: float
    run: RunSettings

    def __post_init__(self) -> None:
        # The two alias fields are checked by ModelAlias's own field rules (their only copy).
        try:
            ModelAlias(
                alias="x",
                provider="x",
                model="x",
                max_parallel_requests=self.max_parallel,
                ramp_s=self.ramp_s,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(f"{error['loc'][0]}: {error['msg']}") from None

    @classmethod
    def for_alias(cls, alias: ModelAlias, run: RunSettings) -> AdmissionSettings:
        return cls(max_parallel=alias.max_parallel_requests, ramp_s=alias.ramp_s, run=run)

    @classmethod
    def of(
        cls, max_parallel: int | None = None, ramp_s: float | None = None, **run_fields: Any
    ) -> AdmissionSettings:
        """Settings from keyword values; anything not given takes its one default
        (``ModelAlias`` for the two alias fields, ``RunSettings`` for the rest)."""
        return cls(
            max_parallel=(
                _ALIAS_DEFAULTS["max_parallel_requests"].default
                if max_parallel is None
                else max_parallel
            ),
            ramp_s=_ALIAS_DEFAULTS["ramp_s"].default if ramp_s is None else ramp_s,
            run=validate_run_settings(run_fields),
        )

    # The values the gate reads most, by their old names (the scheduler and dispatcher use them).
    @property
    def breaker_policy(self) -> Literal["fail_fast", "wait"]:
        return self.run.breaker_policy

    @property
    def acquire_timeout_s(self) -> float | None:
        return self.run.acquire_timeout_s

    def aimd_settings(self) -> AimdSettings:
        return AimdSettings.from_run(self.run, max_limit=self.max_parallel, ramp_s=self.ramp_s)


@dataclass(frozen=True)
class Permit:
    """Held by one in-flight attempt; give it back with :meth:`RequestGate.release`."""

    domain: str
    request_id: int
    attempt: int
    epoch: int  # the AIMD epoch at admission: a 429 decreases the limit once per epoch (wave)
    admitted_at: float  # clock seconds
    seq: int = 0  # admission order within the domain (quota budget: quota.DomainQuota)


@dataclass(frozen=True)
class GateStatistics:
    """A frozen snapshot of one gate, read by tests, health events and metrics alike."""

    domain: str
    limit: int
    max_parallel: int
    in_flight: int
    waiters: int
    cooldown_remaining_s: float
    recent_429_share: float
    breaker: events.BreakerState
    at_floor: bool
    consecutive_429: int
    time_at_floor_s: float
    quota_exhausted: bool = False  # the provider's remaining count reached 0
    quota_budget: int | None = None  # requests left by its headers (None: not stated)

    def to_event(self) -> events.DomainHealth:
        return events.DomainHealth(
            domain=self.domain,
            limit=self.limit,
            in_flight=self.in_flight,
            waiters=self.waiters,
            cooldown_remaining_s=self.cooldown_remaining_s,
            recent_429_share=self.recent_429_share,
            breaker=self.breaker,
            at_floor=self.at_floor,
        )
