"""The value types of request admission: settings, permits and statistics snapshots.

Kept apart from the gate so the pipeline loader can build and check settings without asyncio.
A bad setting raises :class:`ConfigError` naming the field and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ddscope import events
from ddscope.engine.admission.aimd import AimdSettings
from ddscope.errors import ConfigError

BREAKER_POLICIES = ("fail_fast", "wait")


@dataclass(frozen=True)
class AdmissionSettings:
    max_parallel: int
    decrease_factor: float = 0.75
    successes_per_increase: int = 25
    increase_step: int = 1
    ramp_s: float = 0.0  # 0 = no startup ramp
    default_cooldown_s: float = 2.0  # 429 without Retry-After
    max_cooldown_s: float = 60.0  # cap on Retry-After
    acquire_timeout_s: float | None = 30.0  # None = wait for as long as it takes
    breaker_consecutive_429: int = 8
    breaker_no_success_s: float = 20.0
    breaker_policy: Literal["fail_fast", "wait"] = "fail_fast"

    def __post_init__(self) -> None:
        _integer(self, "max_parallel", minimum=1)
        _integer(self, "successes_per_increase", minimum=1)
        _integer(self, "increase_step", minimum=1)
        _integer(self, "breaker_consecutive_429", minimum=1)
        factor = self.decrease_factor
        if not _is_number(factor) or not 0 < factor < 1:
            raise ConfigError(f"decrease_factor must be a number in (0, 1), got {factor!r}")
        _seconds(self, "ramp_s", allow_zero=True)
        _seconds(self, "default_cooldown_s", allow_zero=True)
        _seconds(self, "max_cooldown_s", allow_zero=False)
        _seconds(self, "breaker_no_success_s", allow_zero=False)
        if self.acquire_timeout_s is not None:
            _seconds(self, "acquire_timeout_s", allow_zero=False)
        if self.breaker_policy not in BREAKER_POLICIES:
            raise ConfigError(
                f"breaker_policy must be one of {', '.join(BREAKER_POLICIES)}, "
                f"got {self.breaker_policy!r}"
            )

    def aimd_settings(self) -> AimdSettings:
        return AimdSettings(
            max_limit=self.max_parallel,
            decrease_factor=self.decrease_factor,
            successes_per_increase=self.successes_per_increase,
            increase_step=self.increase_step,
            ramp_s=self.ramp_s,
        )


@dataclass(frozen=True)
class Permit:
    """Held by one in-flight attempt; give it back with :meth:`RequestGate.release`."""

    domain: str
    request_id: int
    attempt: int
    epoch: int  # the AIMD epoch at admission: a 429 decreases the limit once per epoch (wave)
    admitted_at: float  # clock seconds


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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(settings: AdmissionSettings, name: str, *, minimum: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _seconds(settings: AdmissionSettings, name: str, *, allow_zero: bool) -> None:
    value = getattr(settings, name)
    ok = _is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = "≥ 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
