"""Provider quota headers: parsing, the domain's budget, and a gate paced by a hosted-API quota
(the mock's own token bucket and calendar window, driven on a FakeClock)."""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import pytest

from ddscope.engine.admission.gate import AdmissionSettings, Permit, RequestGate
from ddscope.engine.admission.quota import (
    DomainQuota,
    RateLimitHeaders,
    parse_duration,
    ratelimit_from_headers,
)
from ddscope.engine.clock import FakeClock
from ddscope.engine.emitter import Emitter
from ddscope.events import EventBus, ListSink
from ddscope.mock.quota import CalendarWindow, QuotaAnswer, TokenBucket, format_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("2h", 7200.0),
        ("0.75", 0.75),
        (" 3S ", 3.0),
    ],
)
def test_reset_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "1x", "-1", "1s2", "nan", "inf"])
def test_unreadable_durations_are_none(text: str | None) -> None:
    assert parse_duration(text) is None


def test_the_mock_formats_what_the_client_parses() -> None:
    for seconds in (0.02, 0.25, 1.0, 59.5, 61.5, 360.0):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.001)


def test_headers_are_read_and_missing_ones_are_none() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "250ms",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    found = ratelimit_from_headers(headers)
    assert found == RateLimitHeaders(0, 9000, 0.25, 360.0)
    assert found.exhausted and found.reset_s() == 0.25  # only the spent budget's reset counts
    assert ratelimit_from_headers({"content-type": "application/json"}) is None
    bad = ratelimit_from_headers({"x-ratelimit-remaining-requests": "-3"})
    assert bad is None  # nothing readable


def test_budget_counts_requests_admitted_after_the_answer() -> None:
    quota = DomainQuota()
    seqs = [quota.admitted() for _ in range(4)]  # 4 in flight, nothing known yet
    assert quota.budget() is None
    quota.observe(seqs[1], RateLimitHeaders(remaining_requests=5))
    assert quota.budget() == 3  # seqs 2 and 3 were sent after the server counted seq 1
    quota.observe(seqs[0], RateLimitHeaders(remaining_requests=9))  # older news: ignored
    assert quota.budget() == 3
    assert quota.observe(seqs[3], RateLimitHeaders(remaining_requests=0)) is True
    assert quota.exhausted and quota.budget() == 0
    quota.refreshed()
    assert not quota.exhausted and quota.budget() is None


def test_a_spent_token_budget_blocks_requests_too() -> None:
    quota = DomainQuota()
    seq = quota.admitted()
    quota.observe(seq, RateLimitHeaders(remaining_requests=50, remaining_tokens=0))
    assert quota.exhausted and quota.budget() == 0
    assert quota.refuses_as_quota(None)


# -- a gate against a hosted-API quota ----------------------------------------------------------


class QuotaEndpoint:
    """Answers every admitted request through ``take(now, wall)`` after ``latency_s``: a 429
    when the quota refuses (with its headers), else a success; unlimited demand."""

    def __init__(self, gate: RequestGate, clock: FakeClock, take: Any, latency_s: float) -> None:
        self.gate, self.clock, self.take, self.latency_s = gate, clock, take, latency_s
        self.pending: list[tuple[float, int, Permit, QuotaAnswer]] = []
        self.ids = itertools.count(1)
        self.served = self.refused = 0

    def step(self, dt: float) -> None:
        self.clock.advance(dt)
        while self.pending and self.pending[0][0] <= self.clock.now():
            _, _, permit, answer = heapq.heappop(self.pending)
            headers = ratelimit_from_headers(dict(answer.headers))
            if answer.allowed:
                self.served += 1
                self.gate.release(permit, outcome="ok", ratelimit=headers)
            else:
                self.refused += 1
                retry = float(answer.retry_after) if answer.retry_after else None
                self.gate.release(
                    permit, outcome="rate_limited", retry_after_s=retry, ratelimit=headers
                )
        while (permit := self.gate.try_acquire(next(self.ids), 1)) is not None:
            answer = self.take(self.clock.now())
            due = self.clock.now() + self.latency_s
            heapq.heappush(self.pending, (due, permit.request_id, permit, answer))


def quota_gate(max_parallel: int, **settings: Any) -> tuple[RequestGate, FakeClock, ListSink]:
    sink, clock = ListSink(), FakeClock()
    settings = AdmissionSettings.of(max_parallel=max_parallel, **settings)
    gate = RequestGate("p/m", settings, Emitter(EventBus([sink]), clock))
    opened: list[Any] = []
    gate.on_breaker_open = opened.append
    return gate, clock, sink


def test_a_token_bucket_is_followed_at_its_rate_with_few_refusals() -> None:
    # The quota: 4 requests/s, burst 4; 120 requests need 30 s at the quota.
    gate, clock, sink = quota_gate(8)
    bucket = TokenBucket(rate=4.0, burst=4)
    endpoint = QuotaEndpoint(gate, clock, bucket.take, latency_s=0.05)
    while endpoint.served < 120 and clock.now() < 60.0:
        endpoint.step(0.01)
    assert endpoint.served >= 120
    assert clock.now() <= 1.25 * 30.0  # quota-bound, not discovered by hitting it
    assert endpoint.refused <= 0.1 * (endpoint.served + endpoint.refused)
    assert sink.of_kind("breaker") == []
    pauses = [c for c in sink.of_kind("cooldown_started") if c.cause == "quota"]
    assert pauses and all(p.duration_s <= 1.0 for p in pauses)
    assert [e for e in sink.of_kind("limit_changed") if e.reason == "decrease"] == []


def test_a_calendar_window_waits_for_the_rollover_probing_sparingly() -> None:
    # 30 requests per 10 s calendar window, counted down with no reset header; 75 wanted.
    wall_start = 1_000_003.0  # 3 s into a window
    gate, clock, sink = quota_gate(4)
    window = CalendarWindow(budget=30, window_s=10.0)
    endpoint = QuotaEndpoint(gate, clock, lambda now: window.take(wall_start + now), latency_s=0.05)
    while endpoint.served < 75 and clock.now() < 60.0:
        endpoint.step(0.01)
    assert endpoint.served >= 75
    # windows end at 7, 17 s: the third one lets it finish, soon after it opens at 17 s
    assert 17.0 <= clock.now() <= 17.0 + 3.0
    assert sink.of_kind("breaker") == []  # up to 10 s of nothing but 429s: not saturation
    assert endpoint.refused <= 2 * 10 / 2 + 4  # about one probe per default cooldown (2 s)
    assert all(c.cause == "quota" for c in sink.of_kind("cooldown_started"))


def test_quota_429s_are_no_evidence_for_the_breaker() -> None:
    gate, clock, sink = quota_gate(2, breaker_window_s=2.0, breaker_min_attempts=2)
    seq_headers = RateLimitHeaders(remaining_requests=0)
    for request_id in range(1, 40):
        permit = gate.try_acquire(request_id, 1)
        if permit is not None:
            gate.release(permit, outcome="rate_limited", ratelimit=seq_headers)
        clock.advance(1.0)
    assert sink.of_kind("breaker") == [] and gate.limit == 2
    assert gate.statistics().quota_exhausted


def test_a_quota_429_with_retry_after_0_still_pauses_at_the_floor() -> None:
    # Probing a spent per-minute window must not turn into back-to-back requests.
    gate, _, sink = quota_gate(2)
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    spent = RateLimitHeaders(remaining_requests=0)
    gate.release(permit, outcome="rate_limited", retry_after_s=0.0, ratelimit=spent)
    (pause,) = sink.of_kind("cooldown_started")
    assert (pause.cause, pause.duration_s) == ("quota", 0.25)
    assert gate.available() == 0


def test_a_stated_reset_is_waited_exactly_even_below_the_floor() -> None:
    gate, clock, sink = quota_gate(2)
    permit = gate.try_acquire(1, 1)
    assert permit is not None
    spent = RateLimitHeaders(remaining_requests=0, reset_requests_s=0.05, limit_requests=10)
    gate.release(permit, outcome="ok", ratelimit=spent)
    (pause,) = sink.of_kind("cooldown_started")
    assert (pause.cause, pause.duration_s) == ("quota", 0.05)
    clock.advance(0.05)
    assert gate.available() == 2 and gate.statistics().quota_budget == 10
