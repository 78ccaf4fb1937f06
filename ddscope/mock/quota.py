"""Hosted-API request quotas for the mock endpoint, with the headers such APIs send.

Two shapes, both answering every request with ``x-ratelimit-limit-requests`` and
``x-ratelimit-remaining-requests``:

* :class:`TokenBucket` — OpenAI-style: ``rate`` requests per second refill a bucket of ``burst``.
  Answers also carry ``x-ratelimit-reset-requests`` (time until the bucket is full again, as
  ``250ms`` / ``1s`` / ``1m0s``). With no token left: 429 with ``Retry-After`` (whole seconds,
  rounded up), ``retry-after-ms`` (exact) and ``remaining: 0``.
* :class:`CalendarWindow` — a gateway's fixed budget per calendar window (per minute, aligned to
  the wall clock: 12:00:00–12:00:59), counting down on every answer with **no** reset header;
  beyond it, 429 *without* Retry-After until the window rolls over.

Pure: time is passed in (monotonic seconds for the bucket, unix seconds for the window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class QuotaAnswer:
    allowed: bool
    headers: Headers
    retry_after: str | None = None  # Retry-After of a refusal


def format_duration(seconds: float) -> str:
    """``0.25`` → ``250ms``, ``1`` → ``1s``, ``61.5`` → ``1m1.5s`` (OpenAI's reset format)."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    rest_text = f"{round(rest, 3):g}s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> QuotaAnswer:
        """One request at ``now``: spends a token, or is refused."""
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        reset = (self.burst - self._tokens) / self.rate
        headers: list[tuple[str, str]] = [
            ("x-ratelimit-limit-requests", str(self.burst)),
            ("x-ratelimit-remaining-requests", str(math.floor(self._tokens))),
            ("x-ratelimit-reset-requests", format_duration(reset)),
        ]
        if allowed:
            return QuotaAnswer(True, tuple(headers))
        wait_s = (1.0 - self._tokens) / self.rate
        headers.append(("retry-after-ms", str(math.ceil(wait_s * 1000))))
        return QuotaAnswer(False, tuple(headers), retry_after=str(math.ceil(wait_s)))


class CalendarWindow:
    def __init__(self, budget: int, window_s: float) -> None:
        self.budget = budget
        self.window_s = window_s
        self._window: int | None = None
        self._used = 0

    def take(self, wall: float) -> QuotaAnswer:
        """One request at unix time ``wall``: counts against its calendar window, or is refused."""
        window = math.floor(wall / self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        allowed = self._used < self.budget
        self._used += allowed
        headers = (
            ("x-ratelimit-limit-requests", str(self.budget)),
            ("x-ratelimit-remaining-requests", str(self.budget - self._used)),
        )
        return QuotaAnswer(allowed, headers)
