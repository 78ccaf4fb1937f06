"""A provider's request quota, as its ``x-ratelimit-*`` headers state it, and what the gate does.

Hosted APIs (OpenAI and the gateways that copy it) answer every request with

* ``x-ratelimit-remaining-requests`` / ``x-ratelimit-remaining-tokens`` — budget left, and
* ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` — when it is back in full, as a
  duration: ``1s``, ``6m0s``, ``20ms``, ``1m30.5s`` (a bare number is seconds), and
* ``x-ratelimit-limit-requests`` — the budget when full.

:func:`ratelimit_from_headers` reads them into a :class:`RateLimitHeaders` (the model client
attaches it to every answer, successful or not). :class:`DomainQuota` keeps one domain's view:

* **Budget.** The latest answer's remaining count, minus the requests admitted after the request
  that answer belongs to (they were sent after the server counted it, so they spend the same
  budget). Answers that arrive out of order are judged by admission order: an answer to an
  older request says less than the one already seen and is ignored. The gate never admits more
  than the budget, so a quota that is about to run out is not discovered by a 429.
* **Exhausted.** An answer said a remaining count is 0. With a reset time the domain pauses until
  then (a cooldown with cause ``quota``) and afterwards assumes a full budget (the stated limit,
  or unknown until the next answer); without one (a
  per-minute gateway window that only counts down) it probes: one request at a time, each 429
  pausing the domain again, until an answer shows budget left.

A 429 while the quota is exhausted — or one whose own headers say 0 left — is **quota
exhaustion, not saturation**: it does not lower the AIMD limit and is not evidence for the
circuit breaker (``breaker.py``). Pure: no asyncio, no clock (time is passed in).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HEADER_PREFIX = "x-ratelimit-"
_PREFIX_BYTES = HEADER_PREFIX.encode()
_PREFIX_LEN = len(HEADER_PREFIX)
# A Go-style duration ("6m0s", "1h2m", "20ms", "1.5s"): one or more number+unit parts.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``1s``, ``6m0s``, ``20ms``, ``1m30.5s`` or a bare number; None if unreadable."""
    value = (text or "").strip().lower()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            return None
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _count(text: str | None) -> int | None:
    try:
        value = int((text or "").strip())
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """The quota an answer reported (any field may be missing)."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None

    @property
    def exhausted(self) -> bool:
        """A remaining count is 0: the next request would be refused."""
        return self.remaining_requests == 0 or self.remaining_tokens == 0

    def reset_s(self) -> float | None:
        """When the spent budget is back (the later of the spent ones); None if not stated."""
        resets = [
            reset
            for remaining, reset in (
                (self.remaining_requests, self.reset_requests_s),
                (self.remaining_tokens, self.reset_tokens_s),
            )
            if remaining == 0
        ]
        if not resets or any(r is None for r in resets):
            return None
        return max(r for r in resets if r is not None)


def ratelimit_from_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """The ``x-ratelimit-*`` values of a response (header names case-insensitive); None when it
    has none of them. httpx's Headers are read through their raw pairs (:func:`ratelimit_from_raw`):
    this runs on every answer, and six case-insensitive lookups into them cost ~9 µs."""
    raw = getattr(headers, "raw", None)  # httpx.Headers: (name, value) bytes pairs
    if raw is not None:
        return ratelimit_from_raw(raw)
    found: dict[str, str] = {}
    for name, text in headers.items():
        if name[:_PREFIX_LEN].lower() == HEADER_PREFIX:
            found[name[_PREFIX_LEN:].lower()] = text
    return _parsed(found)


def ratelimit_from_raw(raw: Iterable[tuple[bytes, bytes]]) -> RateLimitHeaders | None:
    """:func:`ratelimit_from_headers` from raw ``(name, value)`` byte pairs, in one pass (~1 µs;
    an answer without the headers costs a prefix compare per header)."""
    found: dict[str, str] = {}
    for key, value in raw:
        if key[:_PREFIX_LEN].lower() == _PREFIX_BYTES:
            found[key[_PREFIX_LEN:].decode("latin-1").lower()] = value.decode("latin-1")
    return _parsed(found)


def _parsed(found: dict[str, str]) -> RateLimitHeaders | None:
    if not found:
        return None
    parsed = RateLimitHeaders(
        remaining_requests=_count(found.get("remaining-requests")),
        remaining_tokens=_count(found.get("remaining-tokens")),
        reset_requests_s=parse_duration(found.get("reset-requests")),
        reset_tokens_s=parse_duration(found.get("reset-tokens")),
        limit_requests=_count(found.get("limit-requests")),
    )
    return None if parsed == RateLimitHeaders() else parsed


class DomainQuota:
    """One domain's quota state. ``seq`` numbers admissions (from :meth:`admitted`)."""

    def __init__(self) -> None:
        self._next_seq = 0
        # From the answer to the latest-admitted request that reported a remaining count:
        self._seen_seq = -1
        self._remaining: int | None = None  # None: no budget known (no headers, or refreshed)
        self.exhausted = False  # that answer said 0 left
        self._limit: int | None = None  # the full request budget, if an answer stated it
        self.last: RateLimitHeaders | None = None  # the latest headers seen, for statistics

    def admitted(self) -> int:
        """Numbers one admission; the permit carries it back to :meth:`observe`."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def budget(self) -> int | None:
        """Requests that may still go out before the budget is spent (None: unknown)."""
        if self._remaining is None:
            return None
        return self._remaining - (self._next_seq - 1 - self._seen_seq)

    def observe(self, seq: int, headers: RateLimitHeaders | None) -> bool:
        """Notes an answer's headers; True if it made the quota newly exhausted."""
        if headers is None:
            return False
        self.last = headers
        self._limit = headers.limit_requests or self._limit
        counted = headers.remaining_requests is not None or headers.remaining_tokens is not None
        if not counted or seq < self._seen_seq:
            return False  # nothing countable, or older news than we already have
        was_exhausted = self.exhausted
        self._seen_seq, self._remaining = seq, _smallest_remaining(headers)
        self.exhausted = headers.exhausted
        return self.exhausted and not was_exhausted

    def refreshed(self) -> None:
        """The stated reset passed: the budget is back in full — the stated limit, counted from
        the next admission (or unknown until the next answer if no limit was stated)."""
        self._remaining = self._limit
        self._seen_seq = self._next_seq - 1
        self.exhausted = False

    def refuses_as_quota(self, headers: RateLimitHeaders | None) -> bool:
        """Whether a 429 is quota exhaustion (spent budget), not saturation."""
        return self.exhausted or (headers is not None and headers.exhausted)


def _smallest_remaining(headers: RateLimitHeaders) -> int | None:
    """The request budget that bounds admissions: remaining requests, or 0 when the tokens are
    spent (a token count cannot be divided among requests of unknown size)."""
    if headers.remaining_tokens == 0:
        return 0
    return headers.remaining_requests
