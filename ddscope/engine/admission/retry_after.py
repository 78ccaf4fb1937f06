"""Reading Retry-After: how long a rate-limited client should wait (RFC 9110 §10.2.3).

The value is either delay-seconds (``"5"``) or an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``),
which is taken relative to the current wall-clock time. OpenAI also sends ``retry-after-ms``.
"""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from a Retry-After value: delay-seconds, or an HTTP date taken relative
    to ``now`` (unix seconds; default the current time; a date in the past gives 0).
    None when the value is absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC with no zone information
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def retry_after_from_headers(headers: httpx.Headers, now: float | None = None) -> float | None:
    """``retry-after-ms`` (OpenAI's, more precise) if present, else ``retry-after``."""
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    return parse_retry_after(headers.get("retry-after"), now)
