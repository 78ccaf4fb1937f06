"""A domain's circuit breaker: saturation judged on sustained evidence over time. Pure; time in.

The stall this project was born from: a domain keeps getting 429 for minutes and nothing says
so. The breaker turns that into an event and a policy decision — but only on evidence that the
endpoint *keeps* refusing, not on a burst (a cold start, a short outage, ``Retry-After: 0``).

Evidence is a **time-based sliding window** of ``window_s`` seconds (resilience4j's
``TIME_BASED`` window with ``minimumNumberOfCalls``; Envoy's outlier detection), held as a few
buckets so memory is bounded however fast requests go. Each finished attempt is

* ``refused`` — a 429 (or a 503 with Retry-After) outside a spent quota,
* ``served`` — any other answer (a success, a 5xx, a timeout: the endpoint is not pushing back),
* or no evidence at all — a 429 of a spent quota (``quota.py``: the provider said so in its
  headers, and waiting for the reset is the remedy), or a cancelled attempt.

The domain is **under pressure** while the refused share of the window is at least
``refused_share``; ``pressure_since`` is when that began, and any evaluation below the share
ends it. The breaker trips once pressure has lasted a whole window, the window then holds at
least ``min_attempts`` attempts with the share still at or above ``refused_share``, and the
latest answer was a refusal (a burst followed by a few successes is a recovery, even while the
window still remembers the burst).

Why this shape: a 15 s outage ends (the first successes pull the share down) before a 20 s
window of pressure is complete; a saturated endpoint (SCENARIOS S1: 90 % refused) trips one
window after its first refusal *whatever the client's parallelism* — the old rule waited for the
AIMD limit to descend to 1, which took longer the wider the client. A run of consecutive 429s
alone never trips it. The gate owns the timers and emits the events; this object keeps the
evidence and the state, answers "should it trip", and builds the event.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from ddscope.events import AttemptOutcome, BreakerChanged, BreakerState

BreakerPolicy = Literal["fail_fast", "wait"]
Evidence = Literal["refused", "served", "none"]
BUCKETS = 16  # per window: the window's edge is exact to window_s / BUCKETS
TRIP_REASON = "sustained_429"


def is_pushback(outcome: AttemptOutcome, retry_after_s: float | None) -> bool:
    """A 429, or a 503 that says when to come back: the endpoint is full, not broken."""
    return outcome == "rate_limited" or (outcome == "server_error" and retry_after_s is not None)


def evidence_of(outcome: AttemptOutcome, pushback: bool, quota_refusal: bool) -> Evidence:
    """What a finished attempt tells the breaker (see the module docstring)."""
    if outcome == "cancelled" or quota_refusal:
        return "none"
    return "refused" if pushback else "served"


class RefusalWindow:
    """Attempts and refusals over the last ``window_s``, in ``BUCKETS`` buckets per window, with
    running totals (every attempt is recorded and judged: O(1) each, not a sum per answer)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._width = window_s / BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket index, attempts, refused]
        self._attempts = self._refused = 0  # the sums over _buckets

    def add(self, now: float, refused: bool) -> None:
        index = int(now // self._width)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
            self._expire(now)
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += refused
        self._attempts += 1
        self._refused += refused

    def counts(self, now: float) -> tuple[int, int]:
        """(attempts, refused) within the window ending at ``now``."""
        self._expire(now)
        return self._attempts, self._refused

    def clear(self) -> None:
        self._buckets.clear()
        self._attempts = self._refused = 0

    def _expire(self, now: float) -> None:
        # A bucket stays while any part of it lies inside (now - window_s, now].
        oldest = int((now - self.window_s) // self._width)
        while self._buckets and self._buckets[0][0] < oldest:
            _, attempts, refused = self._buckets.popleft()
            self._attempts -= attempts
            self._refused -= refused


class Breaker:
    def __init__(
        self,
        *,
        window_s: float,
        min_attempts: int,
        refused_share: float,
        policy: BreakerPolicy,
    ) -> None:
        self.window_s = window_s
        self.min_attempts = min_attempts
        self.refused_share = refused_share
        self.policy = policy
        self.state: BreakerState = "closed"
        self.window = RefusalWindow(window_s)
        self.pressure_since: float | None = None  # share ≥ refused_share since then
        self.consecutive_429 = 0  # refusals since the last served answer (reported, not judged)
        self.last_retry_after_s: float | None = None
        self.floor_since: float | None = None  # when the AIMD limit last reached 1 (reported)

    # -- evidence ---------------------------------------------------------------------------

    def record(self, evidence: Evidence, now: float, retry_after_s: float | None = None) -> None:
        """Notes one finished attempt and re-judges the pressure."""
        if evidence == "none":
            return
        refused = evidence == "refused"
        self.window.add(now, refused)
        if refused:
            self.consecutive_429 += 1
            self.last_retry_after_s = retry_after_s
        else:
            self.consecutive_429 = 0
        self._judge(now)

    def note_limit(self, limit: int, now: float) -> None:
        """Tracks when the limit reached the floor (call after every limit change)."""
        if limit > 1:
            self.floor_since = None
        elif self.floor_since is None:
            self.floor_since = now

    def share(self, now: float) -> tuple[int, int, float]:
        """(attempts, refused, refused share) in the window ending at ``now``."""
        attempts, refused = self.window.counts(now)
        return attempts, refused, (refused / attempts if attempts else 0.0)

    def time_at_floor(self, now: float) -> float:
        return 0.0 if self.floor_since is None else max(0.0, now - self.floor_since)

    def forget(self) -> None:
        """A fresh start (the breaker closed again): old refusals are no evidence any more."""
        self.window.clear()
        self.pressure_since = None
        self.consecutive_429 = 0

    def transition(
        self, state: BreakerState, reason: str, domain: str, *, now: float, t_ns: int
    ) -> BreakerChanged:
        """Moves to ``state`` and returns the event that says so, with the evidence."""
        attempts, refused, share = self.share(now)
        self.state = state
        return BreakerChanged(
            t_ns=t_ns,
            domain=domain,
            state=state,
            reason=reason,
            consecutive_429=self.consecutive_429,
            share_429=share,
            time_at_floor_s=self.time_at_floor(now),
            last_retry_after_s=self.last_retry_after_s,
            policy=self.policy,
            window_s=self.window_s,
            window_attempts=attempts,
            window_refused=refused,
        )

    # -- the decision -----------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When a closed breaker would trip if the pressure holds; None while there is none."""
        if self.state != "closed" or self.pressure_since is None:
            return None
        return self.pressure_since + self.window_s

    def trip_reason(self, now: float) -> str | None:
        """Why a closed breaker should open now, or None."""
        self._judge(now)
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        attempts, _, share = self.share(now)
        # The latest answer must be a refusal too: an endpoint that has just served us is not
        # saturated *now*, whatever the window still remembers (a wide burst, then recovery).
        still_refusing = self.consecutive_429 > 0
        if still_refusing and attempts >= self.min_attempts and share >= self.refused_share:
            return TRIP_REASON
        return None

    def _judge(self, now: float) -> None:
        attempts, _, share = self.share(now)
        if attempts and share >= self.refused_share:
            if self.pressure_since is None:
                self.pressure_since = now
        else:
            self.pressure_since = None
