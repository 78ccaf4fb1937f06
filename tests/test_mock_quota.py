"""The mock's rate-limit modes (token-bucket quota, calendar window, timed outage, Retry-After on
burst 503s): the decisions with injected clocks, and the headers as the real model client reads
them over 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from ddscope.engine.client.model_client import ModelClient
from ddscope.errors import ConfigError, RateLimited, ServerError
from ddscope.mock import MockBehavior, MockServer
from ddscope.mock.behavior import MockState

MESSAGES = [{"role": "user", "content": "hi"}]


def outcomes_at(state: MockState, times: list[float], now: list[float]) -> list[str]:
    found = []
    for t in times:
        now[0] = t
        decision = state.arrive("x")
        state.depart(decision)
        found.append(decision.outcome)
    return found


def test_token_bucket_refuses_beyond_its_burst_and_refills_at_its_rate() -> None:
    now = [0.0]
    state = MockState(MockBehavior(quota_rate=2.0, quota_burst=3), now=lambda: now[0])
    assert outcomes_at(state, [0.0] * 4, now) == ["ok"] * 3 + ["rate_limited_quota"]
    # after 0.5 s one token is back (rate 2/s), after 1.5 s three
    assert outcomes_at(state, [0.5, 0.5], now) == ["ok", "rate_limited_quota"]
    refused = state.arrive("x")
    headers = dict(refused.headers)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.retry_after == "1" and headers["retry-after-ms"] == "500"
    assert state.snapshot().rate_limited_quota == 3


def test_calendar_window_counts_down_and_rolls_over_on_the_wall_clock() -> None:
    wall = [119.0]  # one second before a minute boundary
    state = MockState(
        MockBehavior(window_requests=2, window_s=60.0), now=lambda: 0.0, wall=lambda: wall[0]
    )
    answers = [state.arrive("x") for _ in range(3)]
    assert [a.outcome for a in answers] == ["ok", "ok", "rate_limited_quota"]
    assert [dict(a.headers)["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    assert answers[2].retry_after is None  # a gateway's window: no Retry-After, no reset header
    assert all("x-ratelimit-reset-requests" not in dict(a.headers) for a in answers)
    wall[0] = 120.0  # the minute rolled over
    assert state.arrive("x").outcome == "ok"


def test_timed_outage_refuses_everything_between_its_two_times() -> None:
    now = [10.0]
    state = MockState(
        MockBehavior(outage_from_s=2.0, outage_until_s=5.0, outage_retry_after="0"),
        now=lambda: now[0],
    )
    times = [10.0, 11.9, 12.0, 14.9, 15.0]  # the first request at 10 starts the clock
    outage = "rate_limited_outage"
    assert outcomes_at(state, times, now) == ["ok", "ok", outage, outage, "ok"]


def test_outage_knobs_go_together() -> None:
    with pytest.raises(ConfigError, match="outage_from_s and outage_until_s"):
        MockBehavior(outage_from_s=1.0)


def test_burst_503s_carry_retry_after_on_even_arrivals() -> None:
    state = MockState(MockBehavior(error_burst=4, error_burst_retry_after="1"))
    retry_afters = [state.arrive("x").retry_after for _ in range(5)]
    assert retry_afters == ["1", None, "1", None, None]


def test_the_client_reads_quota_headers_over_http(srv: MockServer) -> None:
    srv.reset(MockBehavior(quota_rate=1.0, quota_burst=2))

    async def calls() -> list[object]:
        async with ModelClient(srv.base_url) as client:
            results: list[object] = []
            for _ in range(3):
                try:
                    results.append(await client.chat("mock-model", MESSAGES))
                except RateLimited as exc:
                    results.append(exc)
            return results

    first, second, refused = asyncio.run(calls())
    assert first.ratelimit.remaining_requests == 1  # type: ignore[attr-defined]
    assert second.ratelimit.remaining_requests == 0  # type: ignore[attr-defined]
    assert isinstance(refused, RateLimited)
    assert refused.ratelimit is not None and refused.ratelimit.exhausted
    # retry-after-ms (exact) wins over Retry-After (whole seconds)
    assert refused.retry_after_s is not None and refused.retry_after_s < 1.0


def test_a_503_with_retry_after_reaches_the_client_as_pushback(srv: MockServer) -> None:
    srv.reset(MockBehavior(error_burst=2, error_burst_retry_after="3"))

    async def calls() -> list[ServerError]:
        async with ModelClient(srv.base_url) as client:
            errors = []
            for _ in range(2):
                with pytest.raises(ServerError) as caught:
                    await client.chat("mock-model", MESSAGES)
                errors.append(caught.value)
            return errors

    with_header, without = asyncio.run(calls())
    assert (with_header.retry_after_s, without.retry_after_s) == (3.0, None)
    assert with_header.status_code == 503 and "retry after 3 s" in with_header.message
