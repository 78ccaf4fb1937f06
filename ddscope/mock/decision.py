"""The mock endpoint's per-request vocabulary: outcomes, the decision for one request, the
counters, and the exact "evenly spread" rate (kept apart from ``behavior.py``, which holds the
knobs and the state that decides)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from ddscope.mock.quota import Headers

Outcome = Literal[
    "ok",
    "rate_limited_pattern",
    "rate_limited_capacity",
    "rate_limited_outage",
    "rate_limited_quota",
    "server_error",
    "client_error",
    "unauthorized",
    "hang",
    "bad_response",
    "quoted_error",
]


class _EvenSpread:
    """Exact integer form of ``floor((i+1)·r + φ) > floor(i·r + φ)`` (no float drift)."""

    __slots__ = ("den", "num", "phase")

    def __init__(self, rate: float, phase: Fraction) -> None:
        ratio = Fraction(rate).limit_denominator(1_000_000)
        # Scaled by both denominators: i·r + φ == (i·num + phase) / den, all integers.
        self.num = ratio.numerator * phase.denominator
        self.den = ratio.denominator * phase.denominator
        self.phase = phase.numerator * ratio.denominator

    def hit(self, index: int) -> bool:
        after = ((index + 1) * self.num + self.phase) // self.den
        return after > (index * self.num + self.phase) // self.den


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer to one request."""

    outcome: Outcome
    status: int
    index: int  # arrival index
    admitted: bool = False  # occupies capacity until it departs
    delay_s: float = 0.0  # wait before answering (latency, or the hang)
    retry_after: str | None = None
    generation: int = 0  # in-flight bookkeeping survives a reset (see MockState.reset)
    headers: Headers = ()  # extra response headers (the quota's x-ratelimit-*)


@dataclass(frozen=True, slots=True)
class MockStats:
    """A snapshot of the counters. Outcomes are counted when decided, at arrival."""

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    rate_limited_pattern: int = 0
    rate_limited_capacity: int = 0
    rate_limited_outage: int = 0
    rate_limited_quota: int = 0
    server_errors: int = 0
    client_errors: int = 0
    unauthorized: int = 0
    bad_responses: int = 0
    hangs: int = 0
    invalid_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    first_request_at: float | None = None  # the state's clock (time.monotonic by default)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_OUTCOME_COUNTER: dict[str, str] = {
    "ok": "ok",
    "rate_limited_pattern": "rate_limited_pattern",
    "rate_limited_capacity": "rate_limited_capacity",
    "rate_limited_outage": "rate_limited_outage",
    "rate_limited_quota": "rate_limited_quota",
    "server_error": "server_errors",
    "client_error": "client_errors",
    "unauthorized": "unauthorized",
    "hang": "hangs",
    "bad_response": "bad_responses",
    "quoted_error": "server_errors",
}
