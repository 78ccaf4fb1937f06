"""A domain's 429 cooldown: while it runs, no new request of the domain is admitted.

The duration honours the server's ``Retry-After`` (already parsed to seconds by the model client,
whether it was given in seconds or as an HTTP date), else a default, capped at a maximum and
never below a floor: ``Retry-After: 0`` (or a date in the past) does not mean "hammer me", and a
burst of such 429s must still be paced. A quota pause (cause ``quota``) lasts until the
provider's stated reset, capped too. A 429 during a cooldown extends it only if it asks for
longer; an extension finishes the running cooldown and starts a new one, so every cooldown
interval in the record lasts exactly the duration its ``cooldown_started`` announced.

The expiry is a timer on the engine clock; ``on_end`` runs when it fires (not on :meth:`finish`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ddscope import events
from ddscope.engine.clock import TimerHandle
from ddscope.engine.emitter import Emitter

Cause = Literal["rate_limited", "probe", "quota"]


class DomainCooldown:
    def __init__(
        self,
        domain: str,
        emitter: Emitter,
        *,
        default_s: float,
        min_s: float,
        max_s: float,
        on_end: Callable[[], None],
    ) -> None:
        self.domain = domain
        self.default_s = default_s
        self.min_s = min_s
        self.max_s = max_s
        self.cause: Cause | None = None  # of the running cooldown
        self._emitter = emitter
        self._on_end = on_end
        # Invariant: all three are None together (no cooldown) or all set (one running).
        self._cooldown_id: int | None = None
        self._ends_at: float | None = None
        self._timer: TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self._timer is not None

    def remaining(self, now: float) -> float:
        return 0.0 if self._ends_at is None else max(0.0, self._ends_at - now)

    def duration_for(self, retry_after_s: float | None, *, until_reset: bool = False) -> float:
        """Retry-After (else the default) within [min_s, max_s]; a pause until a quota's stated
        reset within [0, max_s] (the provider said when its budget is back: no floor)."""
        wait = self.default_s if retry_after_s is None else max(0.0, retry_after_s)
        floor = 0.0 if until_reset else self.min_s
        return min(max(wait, floor), self.max_s)

    def start(
        self,
        retry_after_s: float | None,
        *,
        cause: Cause = "rate_limited",
        request_id: int | None = None,
        attempt: int | None = None,
        until_reset: bool = False,
    ) -> bool:
        """Starts or extends the cooldown; False if it changed nothing. ``until_reset``:
        ``retry_after_s`` is a quota's stated reset (no floor); every 429 gets the floor."""
        duration = self.duration_for(retry_after_s, until_reset=until_reset)
        if duration <= 0:
            return False  # a quota reset already due: nothing to wait for
        now = self._emitter.clock.now()
        if self._ends_at is not None and now + duration <= self._ends_at:
            return False
        self.finish()
        self._cooldown_id = self._emitter.next_id()
        self._ends_at = now + duration
        self._timer = self._emitter.clock.call_later(duration, self._expired)
        self.cause = cause
        self._emitter.emit(
            events.CooldownStarted(
                t_ns=self._emitter.t_ns(),
                cooldown_id=self._cooldown_id,
                domain=self.domain,
                cause=cause,
                retry_after_s=retry_after_s,
                duration_s=duration,
                request_id=request_id,
                attempt=attempt,
            )
        )
        return True

    def finish(self) -> None:
        """Ends a running cooldown now (emits ``cooldown_finished``); no-op when none runs."""
        if self._timer is None or self._cooldown_id is None:
            return
        self._timer.cancel()
        cooldown_id = self._cooldown_id
        self._cooldown_id = self._ends_at = self._timer = self.cause = None
        self._emitter.emit(
            events.CooldownFinished(
                t_ns=self._emitter.t_ns(), cooldown_id=cooldown_id, domain=self.domain
            )
        )

    def _expired(self) -> None:
        self.finish()
        self._on_end()
