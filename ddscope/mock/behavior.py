"""How the mock endpoint behaves: the knobs (:class:`MockBehavior`) and the decision per request
(:class:`MockState`), kept free of HTTP and asyncio so the logic is tested with an injected clock.

Every decision is keyed by the **arrival index** ``i``: 0-based, counting each well-formed
``POST /v1/chat/completions`` since start (or the last reset). Knobs are checked in this order,
the first that applies answers:

=====  ==============================  =====================================================
order  knob                            answer
=====  ==============================  =====================================================
1      ``api_key``                     401 when the Authorization header does not match
2      ``fail_marker`` / ``fail_every``  ``fail_status`` (400) when a message contains the
                                       marker, or for the every-k-th request (``(i+1) % k == 0``)
3      ``error_burst``                 503 for the first N arrivals (``i < N``); those with an
                                       even ``i`` carry ``error_burst_retry_after`` if set
3b     ``outage_from_s/_until_s``      429 (``outage_retry_after``) for every request between
                                       those times (seconds after the first request)
4      ``rate_limit_k/_n``             429 when ``i % n < k``, only during the first
                                       ``rate_limit_for_s`` seconds after the first request
5      ``capacity`` (+ ``ramp_s``)     429 when in-flight requests already fill the capacity
6      ``error_rate``                  ``error_status`` (500), evenly spread (see below)
6b     ``quote_prompt_every``          500 whose message quotes the prompt, every k-th request
                                       (``(i+1) % k == 0``), as content filters and gateways do:
                                       ``\x1b[31mupstream failed on: <prompt>\x1b[0m``
7      ``hang_rate``                   no answer for ``hang_s`` seconds, evenly spread
8      ``bad_response_every``          a 200 whose body is not a chat completion
9      —                               200 with a chat completion
=====  ==============================  =====================================================

Hosted-API quotas (``quota.py``), checked after answers 1–5: ``quota_rate`` (+ ``quota_burst``)
is a token bucket, ``window_requests`` (+ ``window_s``) a budget per calendar window. Every
answer then carries the ``x-ratelimit-*`` headers; a request over the quota gets a 429.

``error_body_bytes`` pads the message of every error answer to that many bytes (oversized
error bodies). Answers 1–5 are immediate rejections. Answers 6–9 are *admitted*: they occupy
capacity and wait ``latency_ms ± jitter_ms`` (uniform, from a RNG seeded with ``seed``) before
answering.

"Evenly spread" rates are exact and repeatable, not random: request ``i`` is hit when
``floor((i+1)·r + φ) > floor(i·r + φ)``, so any ``N`` consecutive arrivals from the start contain
``floor(N·r + φ) − floor(φ)`` hits. Errors use φ = 0 (``error_rate=0.1`` hits i = 9, 19, …),
hangs use φ = ½ (i = 4, 14, …) so that equal rates pick different requests.

Cold start: with ``ramp_s > 0`` capacity climbs linearly from 1 at the first request to
``capacity`` after ``ramp_s`` seconds (``1 + floor((capacity−1)·elapsed/ramp_s)``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from fractions import Fraction
from typing import Any, Literal

from ddscope.errors import ConfigError
from ddscope.mock.decision import _OUTCOME_COUNTER, _EvenSpread
from ddscope.mock.decision import Decision as Decision  # re-exported: the server and tests
from ddscope.mock.decision import MockStats as MockStats
from ddscope.mock.decision import Outcome as Outcome
from ddscope.mock.quota import CalendarWindow, QuotaAnswer, TokenBucket

BadResponseKind = Literal["not_json", "not_completion"]


def _knob(default: Any, help: str, **kwargs: Any) -> Any:
    # The help text is the single description of a knob: the CLI builds its options from it.
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class MockBehavior:
    """The mock endpoint's knobs. The defaults describe a healthy endpoint with no latency."""

    latency_ms: float = _knob(0.0, "mean answer latency of admitted requests (ms)")
    jitter_ms: float = _knob(0.0, "uniform ± jitter on the latency (ms), seeded")
    seed: int = _knob(0, "seed of the latency jitter RNG")
    rate_limit_k: int = _knob(0, "answer 429 to k of every n requests (i % n < k)")
    rate_limit_n: int = _knob(10, "the n of the 429 pattern")
    retry_after: str | None = _knob(None, "Retry-After of pattern 429s: seconds or HTTP date")
    rate_limit_for_s: float | None = _knob(
        None, "the 429 pattern applies only this long after the first request (s)"
    )
    capacity: int | None = _knob(None, "max concurrent admitted requests; beyond it 429")
    capacity_retry_after: str | None = _knob(None, "Retry-After of capacity 429s")
    ramp_s: float = _knob(0.0, "cold start: capacity ramps from 1 to --capacity over this (s)")
    error_rate: float = _knob(0.0, "share of requests answered with --error-status, evenly spread")
    error_status: int = _knob(500, "status of --error-rate answers (5xx)")
    error_burst: int = _knob(0, "the first N requests answer 503")
    error_burst_retry_after: str | None = _knob(
        None, "Retry-After on the burst's 503s with an even arrival index"
    )
    outage_from_s: float | None = _knob(None, "timed outage: every request 429 from this (s)")
    outage_until_s: float | None = _knob(None, "... until this, after the first request (s)")
    outage_retry_after: str | None = _knob(None, "Retry-After of outage 429s")
    quota_rate: float = _knob(0.0, "token-bucket quota: requests/s (0 = off), x-ratelimit-*")
    quota_burst: int = _knob(0, "token-bucket size (0 = ceil(quota_rate))")
    window_requests: int = _knob(0, "request budget per calendar window (0 = off)")
    window_s: float = _knob(60.0, "the calendar window of --window-requests (s)")
    hang_rate: float = _knob(0.0, "share of requests that never answer (until --hang-s)")
    hang_s: float = _knob(300.0, "how long a hanging request hangs (s)")
    fail_every: int = _knob(0, "every k-th request answers --fail-status ((i+1) % k == 0)")
    fail_marker: str | None = _knob(
        None, "requests whose messages contain this answer --fail-status"
    )
    fail_status: int = _knob(400, "status of --fail-every / --fail-marker answers (4xx)")
    bad_response_every: int = _knob(0, "every k-th request gets a 200 that is no chat completion")
    quote_prompt_every: int = _knob(0, "every k-th request answers 500 quoting the prompt")
    error_body_bytes: int = _knob(0, "pad every error message to this many bytes (oversized)")
    # _knob returns a dataclasses.Field, so RUF009 (a call as default) does not apply.
    bad_response_kind: BadResponseKind = _knob(  # noqa: RUF009
        "not_json", "body of those: not_json|not_completion"
    )
    models: tuple[str, ...] = _knob(("mock-model",), "model ids listed by GET /v1/models")
    # Secret: never on a command line or in a repr (the CLI reads it from an env var).
    api_key: str | None = _knob(None, "require 'Authorization: Bearer <key>'", repr=False)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(f"mock behavior: {'; '.join(problems)}")

    def replace(self, **knobs: Any) -> MockBehavior:
        """A copy with ``knobs`` changed; an unknown knob name is a ConfigError naming it."""
        unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"mock behavior: unknown knob {', '.join(unknown)}")
        return dataclasses.replace(self, **knobs)

    def to_cli_args(self) -> list[str]:
        """The ``ddtrace mock-server`` options that reproduce this behaviour (``api_key`` aside:
        it travels in an environment variable, see :mod:`ddscope.mock.process`)."""
        args: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key" or value == f.default:
                continue
            option = "--" + f.name.replace("_", "-")
            values = value if isinstance(value, tuple) else (value,)
            for item in values:
                args += [option, str(item)]
        return args


def _problems(b: MockBehavior) -> list[str]:
    """Every invalid knob, each named."""
    # nan fails every comparison below with a misleading reason, and inf passes most of them
    # (a latency of inf hangs each request forever): say what is wrong with them first.
    not_finite = [
        f.name
        for f in dataclasses.fields(b)
        if isinstance(getattr(b, f.name), float) and not math.isfinite(getattr(b, f.name))
    ]
    if not_finite:
        return [f"{name} is not a finite number" for name in not_finite]
    checks = [
        (b.latency_ms >= 0, "latency_ms must be >= 0"),
        (b.jitter_ms >= 0, "jitter_ms must be >= 0"),
        (b.rate_limit_n >= 1, "rate_limit_n must be >= 1"),
        (0 <= b.rate_limit_k <= b.rate_limit_n, "rate_limit_k must be between 0 and rate_limit_n"),
        (b.rate_limit_for_s is None or b.rate_limit_for_s >= 0, "rate_limit_for_s must be >= 0"),
        (b.capacity is None or b.capacity >= 1, "capacity must be >= 1"),
        (b.ramp_s >= 0, "ramp_s must be >= 0"),
        (b.ramp_s == 0 or b.capacity is not None, "ramp_s needs capacity"),
        (0 <= b.error_rate <= 1, "error_rate must be between 0 and 1"),
        (500 <= b.error_status <= 599, "error_status must be a 5xx status"),
        (b.error_burst >= 0, "error_burst must be >= 0"),
        (b.quota_rate >= 0 and b.quota_burst >= 0, "quota_rate and quota_burst must be >= 0"),
        (b.window_requests >= 0 and b.window_s > 0, "window_requests >= 0, window_s > 0"),
        (
            (b.outage_from_s is None) == (b.outage_until_s is None),
            "outage_from_s and outage_until_s go together",
        ),
        (
            b.outage_from_s is None
            or b.outage_until_s is None
            or b.outage_until_s > b.outage_from_s,
            "outage_until_s must be after outage_from_s",
        ),
        (0 <= b.hang_rate <= 1, "hang_rate must be between 0 and 1"),
        (0 < b.hang_s <= 3600, "hang_s must be in (0, 3600]"),
        (b.fail_every >= 0, "fail_every must be >= 0"),
        (b.fail_marker != "", "fail_marker must not be empty"),
        (400 <= b.fail_status <= 499, "fail_status must be a 4xx status"),
        (b.bad_response_every >= 0, "bad_response_every must be >= 0"),
        (b.quote_prompt_every >= 0, "quote_prompt_every must be >= 0"),
        (0 <= b.error_body_bytes <= 1 << 30, "error_body_bytes must be between 0 and 1 GiB"),
        (b.bad_response_kind in ("not_json", "not_completion"), "bad_response_kind is unknown"),
        (len(b.models) >= 1, "models must list at least one model"),
        (
            _valid_retry_after(b.retry_after),
            f"retry_after {b.retry_after!r} is not seconds or an HTTP date",
        ),
        (
            _valid_retry_after(b.capacity_retry_after),
            f"capacity_retry_after {b.capacity_retry_after!r} is not seconds or an HTTP date",
        ),
        *[
            (_valid_retry_after(value), f"{name} {value!r} is not seconds or an HTTP date")
            for name, value in (
                ("outage_retry_after", b.outage_retry_after),
                ("error_burst_retry_after", b.error_burst_retry_after),
            )
        ],
    ]
    return [message for ok, message in checks if not ok]


def _valid_retry_after(value: str | None) -> bool:
    if value is None or value.isdigit():
        return True
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


class MockState:
    """The endpoint's memory: arrival count, in-flight count, counters, RNG.

    Thread-safe (one lock): the server decides on its loop thread while tests and ``update()``
    read and change it from others. ``now`` is the time source (monotonic seconds).
    """

    def __init__(
        self,
        behavior: MockBehavior | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._now = now
        self._wall = wall  # unix seconds, for calendar quota windows
        self._lock = threading.Lock()
        self._generation = 0
        # Declared here (set by _clear) so their types are known before first use.
        self._arrivals = self._in_flight = self._max_in_flight = 0
        self._first_request_at: float | None = None
        self._counts: dict[str, int] = {}
        self._set_behavior(behavior or MockBehavior())
        self._clear()

    @property
    def behavior(self) -> MockBehavior:
        return self._behavior

    def update(self, **knobs: Any) -> MockBehavior:
        """Changes knobs at run time; counters and the arrival index carry on."""
        with self._lock:
            self._set_behavior(self._behavior.replace(**knobs))
            return self._behavior

    def reset(self, behavior: MockBehavior | None = None) -> None:
        """Zeroes counters, arrival index and RNG (and optionally swaps the behaviour).

        Requests still in flight belong to the old generation: their departure no longer counts.
        """
        with self._lock:
            if behavior is not None:
                self._set_behavior(behavior)
            self._generation += 1
            self._clear()

    def count_invalid(self) -> None:
        with self._lock:
            self._counts["invalid_requests"] += 1

    def arrive(self, prompt_text: str, authorization: str | None = None) -> Decision:
        """Decides the answer to the next request and counts it."""
        with self._lock:
            now = self._now()
            if self._first_request_at is None:
                self._first_request_at = now
            index = self._arrivals
            self._arrivals += 1
            decision = self._decide(index, now - self._first_request_at, prompt_text, authorization)
            self._counts[_OUTCOME_COUNTER[decision.outcome]] += 1
            if decision.admitted:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return decision

    def depart(self, decision: Decision) -> None:
        """The answer to an admitted request was sent (or the request was abandoned)."""
        with self._lock:
            if decision.admitted and decision.generation == self._generation:
                self._in_flight -= 1

    def capacity_at(self, elapsed_s: float) -> int | None:
        b = self._behavior
        if b.capacity is None or b.ramp_s <= 0:
            return b.capacity
        share = min(1.0, max(0.0, elapsed_s) / b.ramp_s)
        return 1 + int((b.capacity - 1) * share)

    def snapshot(self) -> MockStats:
        with self._lock:
            c = self._counts
            return MockStats(
                requests=self._arrivals,
                rate_limited=sum(v for k, v in c.items() if k.startswith("rate_limited_")),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                first_request_at=self._first_request_at,
                **c,
            )

    # -- internals (called with the lock held) ---------------------------------------------

    def _set_behavior(self, behavior: MockBehavior) -> None:
        self._behavior = behavior
        self._errors = _EvenSpread(behavior.error_rate, Fraction(0))
        self._hangs = _EvenSpread(behavior.hang_rate, Fraction(1, 2))
        burst = behavior.quota_burst or math.ceil(behavior.quota_rate)
        self._bucket = TokenBucket(behavior.quota_rate, burst) if behavior.quota_rate else None
        self._window = (
            CalendarWindow(behavior.window_requests, behavior.window_s)
            if behavior.window_requests
            else None
        )

    def _clear(self) -> None:
        self._arrivals = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._first_request_at = None
        self._rng = random.Random(self._behavior.seed)
        self._counts = dict.fromkeys([*_OUTCOME_COUNTER.values(), "invalid_requests"], 0)

    def _decide(self, i: int, elapsed: float, prompt: str, authorization: str | None) -> Decision:
        rejection = self._rejection(i, elapsed, prompt, authorization)
        if rejection is not None:
            return rejection
        quota = self._take_quota()
        if quota is not None and not quota.allowed:
            return Decision(
                "rate_limited_quota", 429, i, retry_after=quota.retry_after, headers=quota.headers
            )
        b = self._behavior
        gen, headers = self._generation, quota.headers if quota else ()
        if self._errors.hit(i):
            latency = self._latency_s()
            return Decision(
                "server_error", b.error_status, i, True, latency, generation=gen, headers=headers
            )
        if b.quote_prompt_every and (i + 1) % b.quote_prompt_every == 0:
            return Decision("quoted_error", 500, i, True, self._latency_s(), generation=gen)
        if self._hangs.hit(i):
            return Decision("hang", 504, i, True, b.hang_s, generation=gen)
        bad = b.bad_response_every > 0 and (i + 1) % b.bad_response_every == 0
        outcome: Outcome = "bad_response" if bad else "ok"
        latency = self._latency_s()
        return Decision(outcome, 200, i, True, latency, generation=gen, headers=headers)

    def _take_quota(self) -> QuotaAnswer | None:
        """The bucket's or the window's answer (None when no quota is configured)."""
        if self._bucket is not None:
            return self._bucket.take(self._now())
        if self._window is not None:
            return self._window.take(self._wall())
        return None

    def _rejection(
        self, i: int, elapsed: float, prompt: str, authorization: str | None
    ) -> Decision | None:
        b = self._behavior
        if b.api_key is not None and authorization != f"Bearer {b.api_key}":
            return Decision("unauthorized", 401, i)
        marked = b.fail_marker is not None and b.fail_marker in prompt
        if marked or (b.fail_every and (i + 1) % b.fail_every == 0):
            return Decision("client_error", b.fail_status, i)
        if i < b.error_burst:
            retry_after = b.error_burst_retry_after if i % 2 == 0 else None
            return Decision("server_error", 503, i, retry_after=retry_after)
        outage = (b.outage_from_s, b.outage_until_s)
        if outage[0] is not None and outage[1] is not None and outage[0] <= elapsed < outage[1]:
            return Decision("rate_limited_outage", 429, i, retry_after=b.outage_retry_after)
        in_window = b.rate_limit_for_s is None or elapsed < b.rate_limit_for_s
        if in_window and i % b.rate_limit_n < b.rate_limit_k:
            return Decision("rate_limited_pattern", 429, i, retry_after=b.retry_after)
        capacity = self.capacity_at(elapsed)
        if capacity is not None and self._in_flight >= capacity:
            return Decision("rate_limited_capacity", 429, i, retry_after=b.capacity_retry_after)
        return None

    def _latency_s(self) -> float:
        b = self._behavior
        jitter = self._rng.uniform(-b.jitter_ms, b.jitter_ms) if b.jitter_ms else 0.0
        return max(0.0, b.latency_ms + jitter) / 1000.0
