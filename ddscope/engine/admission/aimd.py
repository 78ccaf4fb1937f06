"""A pure AIMD concurrency limit: additive increase, multiplicative decrease, startup ramp.

No asyncio, no locks, no clock reads: the caller passes ``now`` (seconds on its clock) and the
outcome, and gets back the change it caused (or ``None``). Tested by calling it and asserting
numbers, like Netflix concurrency-limits' ``AIMDLimit``.

Rules:

* **Additive increase** — every ``successes_per_increase`` successes raise the limit by
  ``increase_step`` (up to ``max_limit``). Successes seen while the domain cools down do not count:
  a 429 just said the provider is full, so a success streak of older requests is not evidence of
  spare capacity.
* **Multiplicative decrease, once per wave** — a 429 multiplies the limit by ``decrease_factor``
  (rounded down, floor 1). Each decrease starts a new *epoch*; every permit is stamped with the
  epoch it was admitted in, and a 429 from a request admitted before the last decrease does not
  decrease again: those requests were sent at the old limit, so their 429s are the same signal.
* **Startup ramp** (``ramp_s`` > 0) — the limit starts at 1 and climbs as
  ``1 + ⌊(max − 1) · elapsed / ramp_s⌋`` from :meth:`AimdLimit.begin_ramp` (the gate calls it at
  the endpoint's first answer); the first 429 ends the ramp and plain AIMD takes over from the
  ramp's current value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddscope.engine.pipeline.parts import RunSettings
from ddscope.events import LimitChangeReason

# Guards the ramp's floor() against float error exactly at a step boundary (a timer that fires at
# the boundary must see the new step, or it would re-arm itself at the same instant forever).
_RAMP_EPSILON = 1e-9


@dataclass(frozen=True)
class AimdSettings:
    """The AIMD parameters. No defaults here: :meth:`from_run` reads them from ``RunSettings``
    (their one source, already validated); tests pass every value."""

    max_limit: int
    decrease_factor: float
    successes_per_increase: int
    increase_step: int
    ramp_s: float  # 0 = no startup ramp

    @classmethod
    def from_run(cls, run: RunSettings, *, max_limit: int, ramp_s: float) -> AimdSettings:
        return cls(
            max_limit=max_limit,
            decrease_factor=run.aimd_decrease_factor,
            successes_per_increase=run.aimd_successes_per_increase,
            increase_step=run.aimd_increase_step,
            ramp_s=ramp_s,
        )


@dataclass(frozen=True)
class LimitChange:
    old: int
    new: int
    reason: LimitChangeReason


class AimdLimit:
    """One domain's concurrency limit. Invariant: ``1 <= limit <= settings.max_limit``."""

    def __init__(self, settings: AimdSettings) -> None:
        self.settings = settings
        self._ramp_enabled = settings.ramp_s > 0 and settings.max_limit > 1
        # With a ramp the limit is 1 until the ramp's clock starts (begin_ramp), then climbs.
        self._limit = 1 if self._ramp_enabled else settings.max_limit
        self._ramp_started_at: float | None = None
        self._ramping = self._ramp_enabled
        self._epoch = 0  # bumped by every decrease; permits carry the epoch they were admitted in
        self._success_streak = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def ramping(self) -> bool:
        """True while the startup ramp governs the limit (configured and not yet ended)."""
        return self._ramping

    @property
    def ramp_started(self) -> bool:
        return self._ramp_started_at is not None

    def begin_ramp(self, now: float) -> None:
        """Starts the ramp clock (once; later calls and calls without a ramp do nothing)."""
        if self._ramping and self._ramp_started_at is None:
            self._ramp_started_at = now

    def observe(self, now: float) -> LimitChange | None:
        """Advances the ramp to ``now``; returns the ``ramp`` change if the limit climbed."""
        if not self._ramping or self._ramp_started_at is None:
            return None
        value = self._ramp_value(now)
        if value >= self.settings.max_limit:
            self._ramping = False  # the ramp is complete: plain AIMD from the maximum
        if value == self._limit:
            return None
        old, self._limit = self._limit, value
        return LimitChange(old, value, "ramp")

    def next_ramp_step_at(self) -> float | None:
        """When the ramp next raises the limit (for a timer), or None if it will not."""
        if not self._ramping or self._ramp_started_at is None:
            return None
        steps = self.settings.max_limit - 1
        return self._ramp_started_at + self._limit * self.settings.ramp_s / steps

    def on_success(self, now: float, *, cooling_down: bool = False) -> LimitChange | None:
        """A request succeeded. ``cooling_down``: the domain is in a 429 cooldown right now."""
        if self._ramping:
            return self.observe(now)  # the ramp, not the streak, governs the limit
        if cooling_down:
            return None
        self._success_streak += 1
        if self._success_streak < self.settings.successes_per_increase:
            return None
        self._success_streak = 0
        if self._limit >= self.settings.max_limit:
            return None
        old = self._limit
        self._limit = min(self.settings.max_limit, old + self.settings.increase_step)
        return LimitChange(old, self._limit, "increase")

    def on_rate_limited(self, now: float, admitted_epoch: int) -> LimitChange | None:
        """A request admitted in ``admitted_epoch`` got a 429.

        Decreases at most once per wave: if the limit was already decreased after that request
        was admitted, this 429 is part of the wave that caused the decrease and changes nothing.
        The first 429 during the ramp ends it (reason ``ramp_end``, even at 1 → 1, so the record
        shows where the ramp stopped).
        """
        self._success_streak = 0
        if self._ramping:
            self.observe(now)
            self._ramping = False
            return self._decrease("ramp_end")
        if admitted_epoch < self._epoch:
            return None
        change = self._decrease("decrease")
        return change if change.old != change.new else None

    def _decrease(self, reason: LimitChangeReason) -> LimitChange:
        self._epoch += 1
        old = self._limit
        self._limit = max(1, math.floor(old * self.settings.decrease_factor))
        return LimitChange(old, self._limit, reason)

    def _ramp_value(self, now: float) -> int:
        assert self._ramp_started_at is not None
        elapsed = max(0.0, now - self._ramp_started_at)
        steps = self.settings.max_limit - 1
        climbed = math.floor(steps * elapsed / self.settings.ramp_s + _RAMP_EPSILON)
        return min(self.settings.max_limit, 1 + climbed)
