"""A domain's circuit breaker: the evidence it keeps and when it trips. Pure; time passed in.

The stall this project was born from: a domain sits at concurrency 1 and keeps getting 429 for
minutes, and nothing says so. The breaker turns that into an event and a policy decision.

It trips only when the AIMD limit is at the floor (1) **and** either

* ``consecutive_429`` (429s since the last success, at any limit) reached ``threshold_429``, or
* no success for ``no_success_s`` since ``max(last success, time the floor was reached)``, with
  a 429 since that success (counted from the first such 429, so a domain that merely had nothing
  to do does not trip on its first refusal).

Why both conditions need the floor: a cold endpoint (SCENARIOS S3) answers a burst of 429s while
AIMD is still coming down from the maximum; those waves interleave with successes and never reach
the floor, so they are a transient, not saturation. A saturated endpoint (S1) drives the limit
down wave by wave to 1 and keeps refusing, which is exactly what the two triggers catch.

The gate (request_admission) decides when to transition, owns the timers and emits the events;
this object keeps the evidence and the state, answers "should it trip", and builds the event.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ddscope.events import AttemptOutcome, BreakerChanged, BreakerState

BreakerPolicy = Literal["fail_fast", "wait"]
RECENT_WINDOW = 50  # attempts kept for the recent 429 share


class Breaker:
    def __init__(self, *, threshold_429: int, no_success_s: float, policy: BreakerPolicy) -> None:
        self.threshold_429 = threshold_429
        self.no_success_s = no_success_s
        self.policy = policy
        self.state: BreakerState = "closed"
        self.consecutive_429 = 0  # 429s since the last success; any success resets it
        self.streak_started_at: float | None = None  # the first of those 429s
        self.last_success_at: float | None = None
        self.last_retry_after_s: float | None = None
        self.floor_since: float | None = None  # when the limit last reached 1 (None: above 1)
        self._recent: deque[bool] = deque(maxlen=RECENT_WINDOW)  # True = that attempt was a 429

    # -- evidence ---------------------------------------------------------------------------

    def record(self, outcome: AttemptOutcome, now: float, retry_after_s: float | None) -> None:
        """Notes one finished attempt. Cancelled attempts say nothing about the endpoint."""
        if outcome == "cancelled":
            return
        self._recent.append(outcome == "rate_limited")
        if outcome == "ok":
            self.consecutive_429 = 0
            self.last_success_at = now
        elif outcome == "rate_limited":
            if self.consecutive_429 == 0:
                self.streak_started_at = now
            self.consecutive_429 += 1
            self.last_retry_after_s = retry_after_s

    def note_limit(self, limit: int, now: float) -> None:
        """Tracks when the limit reached the floor (call after every limit change)."""
        if limit > 1:
            self.floor_since = None
        elif self.floor_since is None:
            self.floor_since = now

    @property
    def share_429(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    def time_at_floor(self, now: float) -> float:
        return 0.0 if self.floor_since is None else max(0.0, now - self.floor_since)

    def transition(
        self, state: BreakerState, reason: str, domain: str, *, now: float, t_ns: int
    ) -> BreakerChanged:
        """Moves to ``state`` and returns the event that says so, with the evidence."""
        self.state = state
        return BreakerChanged(
            t_ns=t_ns,
            domain=domain,
            state=state,
            reason=reason,
            consecutive_429=self.consecutive_429,
            share_429=self.share_429,
            time_at_floor_s=self.time_at_floor(now),
            last_retry_after_s=self.last_retry_after_s,
            policy=self.policy,
        )

    # -- the decision -----------------------------------------------------------------------

    def no_success_deadline(self) -> float | None:
        """When the time trigger would fire if nothing changes; None while it cannot fire."""
        if self.state != "closed" or self.floor_since is None or self.consecutive_429 == 0:
            return None
        # The streak's first 429 came after the last success, so this is "no success since
        # max(last success, floor reached)" without counting idle time before the 429s began.
        assert self.streak_started_at is not None
        return max(self.floor_since, self.streak_started_at) + self.no_success_s

    def trip_reason(self, now: float) -> str | None:
        """Why a closed breaker should open now, or None."""
        if self.state != "closed" or self.floor_since is None:
            return None
        if self.consecutive_429 >= self.threshold_429:
            return "consecutive_429"
        deadline = self.no_success_deadline()
        if deadline is not None and now >= deadline:
            return "no_success_at_floor"
        return None
