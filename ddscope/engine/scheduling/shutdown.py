"""Why a run stops early: the error-rate window and the shutdown decision with its sentence.

:class:`ErrorRateWindow` watches the outcomes of the most recent request attempts. Only
*provider failures other than rate limiting* count against the endpoint (5xx, 4xx, timeouts,
connection errors, bad responses): a 429 is pacing, handled by request admission and the
breaker; an admission timeout is local and never a provider failure; a cancelled attempt says
nothing. The window decides only once it is full, so one early failure out of one attempt is not
a "100 % error rate".

:class:`StopReason` is the first (and only) decision to stop: the reason code, the one human
sentence, and the domain where one is to blame; :func:`breaker_open_message` is the sentence
for a breaker that opened under ``fail_fast``. These are pure (no asyncio, no clock); the last
three helpers wire a stop requested from outside (``stop_requested``: the CLI's signals) into
the run's task.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass

from ddscope import events
from ddscope.errors import ConfigError

# attempt outcomes that say nothing about the endpoint's health (see the module docstring)
NOT_COUNTED: frozenset[str] = frozenset({"cancelled", "admission_timeout", "breaker_open"})
NOT_FAILURES: frozenset[str] = frozenset({"ok", "rate_limited"})


@dataclass(frozen=True, slots=True)
class StopReason:
    reason: str  # "error_rate" | "endpoint_saturated" | "cancelled"
    message: str
    domain: str | None = None


def breaker_open_message(event: events.BreakerChanged) -> str:
    """The sentence for a breaker that opened under ``fail_fast``, with its evidence."""
    provider, model = events.split_domain(event.domain)
    last = event.last_retry_after_s
    # The breaker's evidence: its sliding window (issue 11), else the older records' counts.
    evidence = (
        f"{event.window_refused} of {event.window_attempts} attempts refused "
        f"({event.share_429:.0%}) over the last {event.window_s:g} s"
        if event.window_s is not None
        else f"{event.consecutive_429} consecutive 429s, {event.share_429:.0%} rate-limited"
    )
    return (
        f"provider {provider!r} model {model!r} is saturated: circuit breaker opened "
        f"({event.reason}): {evidence}"
        + (f", last Retry-After {last:g} s" if last is not None else "")
        + "; stopped (breaker_policy fail_fast), completed rows kept"
    )


class ErrorRateWindow:
    """Share of non-rate-limit failures over the last ``size`` counted attempts."""

    def __init__(self, size: int, threshold: float) -> None:
        if size < 1:
            raise ConfigError(f"run.error_rate_window: must be >= 1, got {size}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"run.error_rate_threshold: must be in (0, 1], got {threshold:g}")
        self.size = size
        self.threshold = threshold
        self._recent: deque[str] = deque(maxlen=size)  # the failure kind, or "" for not a failure
        self._failures = 0

    def record(self, outcome: str) -> bool:
        """Notes one attempt's outcome; True when the window is full and over the threshold."""
        if outcome in NOT_COUNTED:
            return False
        if len(self._recent) == self.size and self._recent[0]:
            self._failures -= 1
        failure = "" if outcome in NOT_FAILURES else outcome
        self._recent.append(failure)
        self._failures += bool(failure)
        return self.tripped

    @property
    def share(self) -> float:
        return self._failures / len(self._recent) if self._recent else 0.0

    @property
    def tripped(self) -> bool:
        return len(self._recent) == self.size and self.share >= self.threshold

    def stop_reason(self) -> StopReason:
        """The sentence for a tripped window: how many failed, of what kind, against what."""
        kinds = Counter(kind for kind in self._recent if kind)
        detail = ", ".join(f"{kind} ×{n}" for kind, n in kinds.most_common())
        message = (
            f"{self._failures} of the last {len(self._recent)} requests failed with errors other "
            f"than rate limiting ({detail}), at or over the error_rate_threshold of "
            f"{self.threshold:.0%}; stopped early to avoid wasting requests"
        )
        return StopReason("error_rate", message)


# -- a stop requested from outside (the CLI's signals): see scheduler.run_pipeline ----------


async def cancel_when(event: asyncio.Event | None, phases: asyncio.Task[None]) -> None:
    if event is None:
        return
    await event.wait()
    phases.cancel(msg=STOP_REQUESTED)


STOP_REQUESTED = "ddscope: stop requested"


def cancelled_by_us(phases: asyncio.Task[None]) -> bool:
    """Whether ``phases`` ended because ``stop_requested`` was set (not a cancel of the
    caller, which must propagate)."""
    current = asyncio.current_task()
    return phases.cancelled() and (current is None or current.cancelling() == 0)


def cancel_reason(stop_requested: asyncio.Event | None) -> StopReason:
    why = getattr(stop_requested, "why", None)  # the CLI names the signal
    return StopReason(
        "cancelled", f"the run was cancelled ({why})" if why else "the run was cancelled"
    )
