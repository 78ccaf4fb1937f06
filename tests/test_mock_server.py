"""The mock endpoint: decision logic with an injected clock, and real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from email.utils import formatdate

import httpx
import pytest
from click.testing import CliRunner

from ddscope.cli.mock_server import behavior_from_options, mock_server_command
from ddscope.errors import ConfigError
from ddscope.mock import MockBehavior, MockServer, MockServerProcess, MockState

USER = [{"role": "user", "content": "hello there"}]


def post(client: httpx.Client, messages: list[dict[str, str]] = USER, **extra: object):
    return client.post("chat/completions", json={"model": "m", "messages": messages, **extra})


def statuses(srv: MockServer, count: int) -> list[int]:
    with httpx.Client(base_url=srv.base_url + "/") as client:
        return [post(client).status_code for _ in range(count)]


async def concurrent_statuses(srv: MockServer, count: int, timeout_s: float) -> list[object]:
    """Status per request sent at once; a hang shows as "timeout"."""

    async def one(client: httpx.AsyncClient) -> object:
        try:
            return (
                await client.post("chat/completions", json={"model": "m", "messages": USER})
            ).status_code
        except httpx.ReadTimeout:
            return "timeout"

    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(
        base_url=srv.base_url + "/", timeout=timeout_s, limits=limits
    ) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(count))))


# -- 429s ---------------------------------------------------------------------------------


def test_pattern_answers_429_to_k_of_every_n_by_arrival(srv: MockServer) -> None:
    srv.reset(MockBehavior(rate_limit_k=3, rate_limit_n=5, retry_after="5"))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        answers = [post(client) for _ in range(20)]
    assert [a.status_code for a in answers] == ([429] * 3 + [200] * 2) * 4
    assert {a.headers.get("retry-after") for a in answers if a.status_code == 429} == {"5"}
    assert all("retry-after" not in a.headers for a in answers if a.status_code == 200)
    stats = srv.stats()
    assert (stats.requests, stats.ok, stats.rate_limited_pattern, stats.rate_limited) == (
        20,
        8,
        12,
        12,
    )


def test_retry_after_http_date_is_sent_verbatim(srv: MockServer) -> None:
    date = formatdate(time.time() + 30, usegmt=True)
    srv.reset(MockBehavior(rate_limit_k=1, rate_limit_n=1, retry_after=date))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        answer = post(client)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == date
    assert answer.json()["error"]["type"] == "rate_limit_error"


def test_pattern_stops_after_rate_limit_window() -> None:
    now = [100.0]
    state = MockState(
        MockBehavior(rate_limit_k=1, rate_limit_n=1, rate_limit_for_s=10), now=lambda: now[0]
    )
    outcomes = []
    for t in (100.0, 105.0, 109.9, 110.0, 200.0):
        now[0] = t
        decision = state.arrive("x")
        state.depart(decision)
        outcomes.append(decision.outcome)
    assert outcomes == ["rate_limited_pattern"] * 3 + ["ok"] * 2


def test_capacity_answers_429_beyond_concurrent_limit(srv: MockServer) -> None:
    # Hanging requests hold their slot for the whole test, so the count does not depend on timing.
    srv.reset(MockBehavior(capacity=2, capacity_retry_after="1", hang_rate=1.0))
    answers = asyncio.run(concurrent_statuses(srv, 5, timeout_s=1.0))
    assert sorted(answers, key=str) == [429, 429, 429, "timeout", "timeout"]
    stats = srv.stats()
    assert (stats.hangs, stats.rate_limited_capacity, stats.max_in_flight) == (2, 3, 2)


def test_cold_start_capacity_is_one_at_first_request(srv: MockServer) -> None:
    srv.reset(MockBehavior(capacity=8, ramp_s=60, hang_rate=1.0))
    answers = asyncio.run(concurrent_statuses(srv, 4, timeout_s=1.0))
    assert sorted(answers, key=str) == [429, 429, 429, "timeout"]


def test_ramp_climbs_linearly_from_one_to_capacity() -> None:
    state = MockState(MockBehavior(capacity=8, ramp_s=60))
    assert [state.capacity_at(t) for t in (0, 8.6, 30, 59.9, 60, 600)] == [1, 2, 4, 7, 8, 8]
    assert MockState(MockBehavior(capacity=8)).capacity_at(0) == 8


# -- errors, hangs, chosen failures --------------------------------------------------------


def test_error_rate_is_evenly_spread_by_arrival(srv: MockServer) -> None:
    srv.reset(MockBehavior(error_rate=0.25))
    got = statuses(srv, 20)
    assert [i for i, s in enumerate(got) if s == 500] == [3, 7, 11, 15, 19]
    assert srv.stats().server_errors == 5


def test_error_burst_answers_503_to_the_first_requests(srv: MockServer) -> None:
    srv.reset(MockBehavior(error_burst=3))
    assert statuses(srv, 5) == [503, 503, 503, 200, 200]


def test_hang_and_error_rates_pick_different_requests() -> None:
    state = MockState(MockBehavior(error_rate=0.1, hang_rate=0.1))
    outcomes = [state.arrive("x").outcome for _ in range(100)]
    errors = [i for i, o in enumerate(outcomes) if o == "server_error"]
    hangs = [i for i, o in enumerate(outcomes) if o == "hang"]
    assert errors == list(range(9, 100, 10))
    assert hangs == list(range(4, 100, 10))


def test_hang_outlasts_the_client_timeout(srv: MockServer) -> None:
    srv.reset(MockBehavior(hang_rate=1.0))
    with (
        httpx.Client(base_url=srv.base_url + "/", timeout=0.3) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(client)
    assert srv.stats().hangs == 1


def test_fail_marker_and_fail_every_choose_exact_requests(srv: MockServer) -> None:
    srv.reset(MockBehavior(fail_marker="FAIL400", fail_every=3, rate_limit_k=10))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        marked = post(client, [{"role": "user", "content": "please FAIL400 here"}])
        srv.reset(MockBehavior(fail_every=3))
        every = [post(client).status_code for _ in range(6)]
    # The marker wins over the 429 pattern, so the chosen row fails for good.
    assert marked.status_code == 400
    assert marked.json()["error"]["type"] == "invalid_request_error"
    assert every == [200, 200, 400, 200, 200, 400]


def test_bad_response_knob_sends_200_that_is_no_completion(srv: MockServer) -> None:
    srv.reset(MockBehavior(bad_response_every=2))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        first, second = post(client), post(client)
        srv.update(bad_response_kind="not_completion")
        third, fourth = post(client), post(client)
    assert first.json()["choices"]
    assert second.status_code == 200
    with pytest.raises(ValueError):
        second.json()
    assert third.json()["choices"]
    assert fourth.json()["choices"] == []
    assert srv.stats().bad_responses == 2


def test_invalid_request_body_is_400_and_takes_no_arrival_index(srv: MockServer) -> None:
    srv.reset(MockBehavior(rate_limit_k=1, rate_limit_n=2))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        not_json = client.post("chat/completions", content=b"{nope")
        no_messages = client.post("chat/completions", json={"model": "m", "messages": []})
        first_valid = post(client)
    assert (not_json.status_code, no_messages.status_code) == (400, 400)
    assert "messages" in no_messages.json()["error"]["message"]
    assert first_valid.status_code == 429  # arrival index 0
    assert (srv.stats().invalid_requests, srv.stats().requests) == (2, 1)


def test_api_key_knob_requires_bearer_token(srv: MockServer) -> None:
    srv.reset(MockBehavior(api_key="k-123"))
    with httpx.Client(base_url=srv.base_url + "/") as client:
        without = post(client)
        wrong = client.post(
            "chat/completions",
            json={"model": "m", "messages": USER},
            headers={"authorization": "Bearer nope"},
        )
        right = client.post(
            "chat/completions",
            json={"model": "m", "messages": USER},
            headers={"authorization": "Bearer k-123"},
        )
    assert (without.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "k-123" not in repr(srv.behavior)


# -- replies, routes, runtime control -------------------------------------------------------


def test_completion_is_deterministic_with_word_count_usage(srv: MockServer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three"},
    ]
    with httpx.Client(base_url=srv.base_url + "/") as client:
        a, b = post(client, messages).json(), post(client, messages).json()
        other = post(client, [{"role": "user", "content": "one two four"}]).json()
        short = post(client, messages, max_tokens=3).json()
    content = a["choices"][0]["message"]["content"]
    assert content == b["choices"][0]["message"]["content"]
    assert re.fullmatch(r"\[m\] reply to: one two three #[0-9a-f]{8}", content)
    assert other["choices"][0]["message"]["content"] != content
    assert a["object"] == "chat.completion" and a["choices"][0]["finish_reason"] == "stop"
    assert a["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert short["choices"][0]["message"]["content"] == "[m] reply to:"
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3


def test_models_stats_and_reset_routes(srv: MockServer) -> None:
    srv.reset(MockBehavior(models=("alpha", "beta"), rate_limit_k=1, rate_limit_n=2))
    statuses(srv, 4)
    with httpx.Client(base_url=srv.root_url) as client:
        models = client.get("/v1/models").json()
        stats = client.get("/stats").json()
        after_reset = client.post("/stats/reset").json()
    assert [m["id"] for m in models["data"]] == ["alpha", "beta"]
    assert stats["requests"] == 4 and stats["ok"] == 2 and stats["rate_limited_pattern"] == 2
    assert stats["first_request_at"] is not None
    assert after_reset["requests"] == 0 and after_reset["first_request_at"] is None


def test_update_changes_behavior_at_run_time(srv: MockServer) -> None:
    assert statuses(srv, 2) == [200, 200]
    srv.update(rate_limit_k=1, rate_limit_n=1)
    assert statuses(srv, 2) == [429, 429]
    assert srv.stats().requests == 4  # counters carry on
    with pytest.raises(ConfigError, match="unknown knob latency"):
        srv.update(latency=5)


def test_invalid_knob_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="error_rate"):
        MockBehavior(error_rate=2)
    with pytest.raises(ConfigError, match="retry_after"):
        MockBehavior(retry_after="soon")
    with pytest.raises(ConfigError, match="ramp_s needs capacity"):
        MockBehavior(ramp_s=5)


def test_latency_jitter_is_seeded_and_bounded() -> None:
    def delays(seed: int) -> list[float]:
        state = MockState(MockBehavior(latency_ms=50, jitter_ms=20, seed=seed))
        return [state.arrive("x").delay_s for _ in range(50)]

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    assert all(0.030 <= d <= 0.070 for d in delays(1))


def test_reset_forgets_requests_still_in_flight() -> None:
    state = MockState(MockBehavior(capacity=1))
    stale = state.arrive("x")
    state.reset()
    state.depart(stale)  # a request from before the reset finishes afterwards
    assert state.snapshot().in_flight == 0
    assert state.arrive("x").outcome == "ok"


def test_stop_is_bounded_while_a_request_hangs() -> None:
    srv = MockServer(hang_rate=1.0).start()
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            httpx.post(
                f"{srv.base_url}/chat/completions",
                json={"model": "m", "messages": USER},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=hang)
    caller.start()
    deadline = time.monotonic() + 5
    while srv.stats().in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.stats().hangs == 1
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 3.0
    caller.join(5)
    assert not caller.is_alive()


# -- CLI and subprocess ---------------------------------------------------------------------


def test_cli_options_mirror_every_knob() -> None:
    behavior = MockBehavior(
        latency_ms=20, jitter_ms=5, rate_limit_k=9, retry_after="5", rate_limit_for_s=30,
        capacity=16, ramp_s=5, error_rate=0.1, hang_rate=0.05, fail_marker="FAIL400",
        bad_response_kind="not_completion", models=("a", "b"),
    )  # fmt: skip
    ctx = mock_server_command.make_context("mock-server", behavior.to_cli_args())
    knobs = {
        k: v for k, v in ctx.params.items() if k not in ("host", "port", "api_key_env", "log_level")
    }
    assert behavior_from_options(knobs, None) == behavior


def test_cli_rejects_a_bad_knob_with_exit_2() -> None:
    result = CliRunner().invoke(mock_server_command, ["--port", "0", "--error-rate", "2"])
    assert result.exit_code == 2
    assert "error_rate" in result.output


def test_subprocess_server_prints_base_url_and_serves() -> None:
    with MockServerProcess(rate_limit_k=1, rate_limit_n=2, api_key="k-9") as proc:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", proc.base_url)
        headers = {"authorization": "Bearer k-9"}
        got = [
            httpx.post(
                f"{proc.base_url}/chat/completions",
                json={"model": "m", "messages": USER},
                headers=headers,
            ).status_code
            for _ in range(3)
        ]
        stats = proc.stats()
    assert got == [429, 200, 429]
    assert (stats.requests, stats.ok, stats.rate_limited) == (3, 1, 2)
