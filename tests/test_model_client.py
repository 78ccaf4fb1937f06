"""The model client against the real mock endpoint on 127.0.0.1, and its failure map."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import aiohttp
import httpx
import pytest

from ddscope.engine.admission.retry_after import parse_retry_after, retry_after_from_headers
from ddscope.engine.client.answers import (
    MAX_DETAIL_CHARS,
    ChatResult,
    classify,
    error_class_for_exception,
    error_class_for_status,
)
from ddscope.engine.client.model_client import ModelClient
from ddscope.errors import (
    BadResponse,
    ClientError,
    ConfigError,
    ConnectionFailed,
    ModelError,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from ddscope.mock import MockBehavior, MockServer

TRANSPORTS = ["aiohttp", "httpx"]
USER = [{"role": "user", "content": "tell me about topic a"}]
FAKE_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"


def chat_error(url: str, transport: str, timeout_s: float = 5.0, **kwargs: object) -> ModelError:
    """The ModelError one chat call raises (fails the test if it succeeds)."""

    async def call() -> ModelError:
        async with ModelClient(url, transport=transport, timeout_s=timeout_s, **kwargs) as client:
            try:
                await client.chat("m", USER)
            except ModelError as exc:
                return exc
        raise AssertionError("the call succeeded")

    return asyncio.run(call())


def chat_ok(url: str, transport: str, **kwargs: object) -> ChatResult:
    async def call() -> ChatResult:
        async with ModelClient(url, transport=transport, **kwargs) as client:
            return await client.chat("m", USER, max_tokens=50, temperature=0.0)

    return asyncio.run(call())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def with_raw_server(handler: Handler, transport: str) -> ModelError:
    """The error a chat call gets from a raw TCP server running ``handler`` on 127.0.0.1."""

    async def run() -> ModelError:
        tcp = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        try:
            async with ModelClient(f"http://127.0.0.1:{port}/v1", transport=transport) as client:
                with pytest.raises(ModelError) as info:
                    await client.chat("m", USER)
                return info.value
        finally:
            tcp.close()
            await tcp.wait_closed()

    return asyncio.run(run())


# -- against the mock ------------------------------------------------------------------------


def test_both_transports_produce_the_same_result(srv: MockServer) -> None:
    results = [chat_ok(srv.base_url, t) for t in TRANSPORTS]
    assert results[0] == results[1]
    result = results[0]
    assert result.text.startswith("[m] reply to: tell me about topic a #")
    assert (result.input_tokens, result.output_tokens) == (5, len(result.text.split()))
    assert (result.response_model, result.status_code) == ("m", 200)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rate_limited_with_retry_after_seconds(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(rate_limit_k=1, rate_limit_n=1, retry_after="5"))
    error = chat_error(srv.base_url, transport)
    assert isinstance(error, RateLimited) and error.retryable
    assert (error.retry_after_s, error.status_code) == (5.0, 429)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rate_limited_with_retry_after_http_date(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(rate_limit_k=1, rate_limit_n=1))
    srv.update(retry_after=formatdate(time.time() + 30, usegmt=True))
    error = chat_error(srv.base_url, transport)
    assert isinstance(error, RateLimited)
    assert error.retry_after_s is not None and 25 < error.retry_after_s <= 30


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_capacity_429_without_retry_after(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(capacity=1, hang_rate=1.0))

    async def two_at_once() -> list[BaseException | ChatResult]:
        async with ModelClient(srv.base_url, transport=transport, timeout_s=1.0) as client:
            calls = (client.chat("m", USER) for _ in range(2))
            return await asyncio.gather(*calls, return_exceptions=True)

    kinds = sorted(type(r).__name__ for r in asyncio.run(two_at_once()))
    assert kinds == ["RateLimited", "RequestTimeout"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_error_and_client_errors_by_status(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(error_rate=1.0, error_status=502))
    server_error = chat_error(srv.base_url, transport)
    srv.reset(MockBehavior(fail_every=1))
    client_error = chat_error(srv.base_url, transport)
    srv.reset(MockBehavior(fail_every=1, fail_status=408))
    request_timeout = chat_error(srv.base_url, transport)
    assert isinstance(server_error, ServerError) and server_error.status_code == 502
    assert server_error.retryable
    assert isinstance(client_error, ClientError) and client_error.status_code == 400
    assert not client_error.retryable
    assert "mock: request rejected" in str(client_error)
    assert isinstance(request_timeout, RequestTimeout) and request_timeout.status_code == 408


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hang_becomes_request_timeout(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(hang_rate=1.0))
    error = chat_error(srv.base_url, transport, timeout_s=0.3)
    assert isinstance(error, RequestTimeout) and error.retryable
    assert "0.3 s" in str(error)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["not_json", "not_completion"])
def test_bad_response_from_a_200(srv: MockServer, transport: str, kind: str) -> None:
    srv.reset(MockBehavior(bad_response_every=1, bad_response_kind=kind))  # type: ignore[arg-type]
    error = chat_error(srv.base_url, transport)
    assert isinstance(error, BadResponse) and error.status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_refused_on_a_closed_port(transport: str) -> None:
    error = chat_error(f"http://127.0.0.1:{closed_port()}/v1", transport)
    assert isinstance(error, ConnectionFailed) and error.retryable


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_closing_without_answer_is_connection_failed(transport: str) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    assert isinstance(with_raw_server(close_at_once, transport), ConnectionFailed)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_garbage_instead_of_http_is_connection_failed(transport: str) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HELLO THIS IS NOT HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    assert isinstance(with_raw_server(garbage, transport), ConnectionFailed)


def test_default_transport_keeps_no_cookies_and_reads_quota_headers_as_sent() -> None:
    """Two calls to a server that sets a cookie and states its quota in mixed-case headers:
    the second request carries no cookie (an API client keeps none), and each answer's quota
    is read from the raw headers."""
    heads: list[bytes] = []
    completion = b'{"choices": [{"message": {"content": "hi"}}], "model": "m"}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(4):  # keep-alive: a few requests per connection at most
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            heads.append(head.lower())
            length = next(
                int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )  # fmt: skip
            await reader.readexactly(length)
            remaining = str(9 - len(heads)).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Set-Cookie: session=abc123; Path=/\r\n"
                b"X-RateLimit-Remaining-Requests: " + remaining + b"\r\n"
                b"Content-Length: " + str(len(completion)).encode() + b"\r\n\r\n" + completion
            )
            await writer.drain()
        writer.close()

    async def run() -> list[ChatResult]:
        tcp = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        try:
            async with ModelClient(f"http://127.0.0.1:{port}/v1") as client:
                return [await client.chat("m", USER) for _ in range(2)]
        finally:
            tcp.close()
            await tcp.wait_closed()

    results = asyncio.run(run())
    assert [r.text for r in results] == ["hi", "hi"]
    assert [r.ratelimit and r.ratelimit.remaining_requests for r in results] == [8, 7]
    assert len(heads) == 2 and heads[0].startswith(b"post /v1/chat/completions ")
    assert all(b"\r\ncookie:" not in head for head in heads)


# -- the API key -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_is_sent_as_bearer_token(srv: MockServer, transport: str) -> None:
    srv.reset(MockBehavior(api_key=FAKE_KEY))
    assert chat_ok(srv.base_url, transport, api_key=FAKE_KEY).status_code == 200
    error = chat_error(srv.base_url, transport, api_key="sk-wrong")
    assert isinstance(error, ClientError) and error.status_code == 401


def test_from_env_reads_the_named_variable(
    srv: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv.reset(MockBehavior(api_key=FAKE_KEY))
    monkeypatch.setenv("DDSCOPE_TEST_KEY", FAKE_KEY)
    monkeypatch.delenv("DDSCOPE_MISSING_KEY", raising=False)

    async def call() -> ChatResult:
        async with ModelClient.from_env(srv.base_url, "DDSCOPE_TEST_KEY") as client:
            return await client.chat("m", USER)

    assert asyncio.run(call()).status_code == 200
    with pytest.raises(ConfigError, match="DDSCOPE_MISSING_KEY"):
        ModelClient.from_env(srv.base_url, api_key_env="DDSCOPE_MISSING_KEY")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_key_never_appears_in_errors_reprs_or_logs(
    srv: MockServer, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    behaviors = [
        MockBehavior(rate_limit_k=1, rate_limit_n=1, retry_after="1"),
        MockBehavior(error_rate=1.0),
        MockBehavior(fail_every=1),
        MockBehavior(api_key="another-key"),
        MockBehavior(bad_response_every=1),
        MockBehavior(hang_rate=1.0),
    ]
    errors = []
    for behavior in behaviors:
        srv.reset(behavior)
        errors.append(chat_error(srv.base_url, transport, timeout_s=0.3, api_key=FAKE_KEY))
    errors.append(chat_error(f"http://127.0.0.1:{closed_port()}/v1", transport, api_key=FAKE_KEY))
    kinds = {e.kind for e in errors}
    assert kinds == {"rate_limited", "server_error", "client_error", "bad_response", "timeout",
                     "connection_error"}  # fmt: skip
    client = ModelClient(srv.base_url, api_key=FAKE_KEY, transport=transport)  # type: ignore[arg-type]
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(client), caplog.text]
    assert all(FAKE_KEY not in text for text in texts)
    assert "api_key=set" in repr(client)


def test_a_key_echoed_by_the_server_is_redacted() -> None:
    body = f'{{"error": {{"message": "Incorrect API key provided: {FAKE_KEY}"}}}}'.encode()
    error = classify(httpx.Response(401, content=body), secrets=[FAKE_KEY])
    assert isinstance(error, ClientError)
    assert FAKE_KEY not in str(error) and "[redacted]" in str(error)


# -- the failure map ------------------------------------------------------------------------------

EXPECTED_FOR_HTTPX: dict[type[Exception], type[ModelError]] = {
    httpx.ConnectTimeout: RequestTimeout,
    httpx.ReadTimeout: RequestTimeout,
    httpx.WriteTimeout: RequestTimeout,
    httpx.PoolTimeout: RequestTimeout,
    httpx.TimeoutException: RequestTimeout,
    httpx.ConnectError: ConnectionFailed,
    httpx.ReadError: ConnectionFailed,
    httpx.WriteError: ConnectionFailed,
    httpx.CloseError: ConnectionFailed,
    httpx.NetworkError: ConnectionFailed,
    httpx.RemoteProtocolError: ConnectionFailed,
    httpx.ProxyError: ConnectionFailed,
    httpx.ProtocolError: ConnectionFailed,
    httpx.TransportError: ConnectionFailed,
    httpx.RequestError: ConnectionFailed,
    httpx.HTTPError: ConnectionFailed,
    httpx.DecodingError: BadResponse,
    httpx.LocalProtocolError: ClientError,
    httpx.UnsupportedProtocol: ClientError,
    httpx.TooManyRedirects: ClientError,
    httpx.InvalidURL: ClientError,
    httpx.CookieConflict: ClientError,
    httpx.StreamError: ClientError,
    httpx.StreamConsumed: ClientError,
    httpx.StreamClosed: ClientError,
    httpx.ResponseNotRead: ClientError,
    httpx.RequestNotRead: ClientError,
}


def _exception_classes(module: object, base: type[BaseException]) -> set[type[BaseException]]:
    return {
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj.__module__.startswith(getattr(module, "__name__", ""))
    }


def test_every_httpx_exception_class_is_mapped() -> None:
    found = _exception_classes(httpx, Exception) - {httpx.HTTPStatusError}
    # A new httpx release adding an exception fails here, so its mapping gets decided.
    assert found == set(EXPECTED_FOR_HTTPX)
    for exc_class, expected in EXPECTED_FOR_HTTPX.items():
        assert error_class_for_exception(exc_class) is expected, exc_class.__name__


def test_every_aiohttp_client_error_is_mapped() -> None:
    found = _exception_classes(aiohttp, aiohttp.ClientError)
    assert aiohttp.ClientConnectorError in found and aiohttp.ServerDisconnectedError in found
    for exc_class in found:
        if issubclass(exc_class, TimeoutError):
            expected: type[ModelError] = RequestTimeout
        elif issubclass(exc_class, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            expected = ClientError
        else:
            expected = ConnectionFailed
        assert error_class_for_exception(exc_class) is expected, exc_class.__name__


def test_builtin_failures_are_mapped_and_bugs_are_not() -> None:
    assert error_class_for_exception(TimeoutError) is RequestTimeout
    assert error_class_for_exception(ConnectionResetError) is ConnectionFailed
    assert error_class_for_exception(ConnectionRefusedError) is ConnectionFailed
    assert error_class_for_exception(ValueError) is None
    with pytest.raises(TypeError, match="ValueError"):
        classify(ValueError("a bug"))


def test_the_original_aiohttp_error_beats_a_wrong_httpx_translation() -> None:
    # httpx-aiohttp turns a server disconnect into ConnectTimeout; it is not a timeout.
    try:
        raise httpx.ConnectTimeout("translated") from aiohttp.ServerDisconnectedError()
    except httpx.ConnectTimeout as exc:
        assert isinstance(classify(exc), ConnectionFailed)
    try:
        raise httpx.ReadTimeout("translated") from aiohttp.SocketTimeoutError("read")
    except httpx.ReadTimeout as exc:
        assert isinstance(classify(exc), RequestTimeout)


def test_every_status_class_is_mapped() -> None:
    for status in range(100, 600):
        if status == 408:
            expected: type[ModelError] = RequestTimeout
        elif status == 429:
            expected = RateLimited
        elif status >= 500:
            expected = ServerError
        elif status >= 300:
            expected = ClientError
        else:
            expected = BadResponse
        assert error_class_for_status(status) is expected, status
        error = classify(httpx.Response(status))
        assert type(error) is expected and error.status_code == status
    response = httpx.Response(503, content=b"")
    error = classify(
        httpx.HTTPStatusError("x", request=httpx.Request("POST", "http://h"), response=response)
    )
    assert isinstance(error, ServerError)


def test_error_messages_are_one_short_line() -> None:
    body = ("line one\n" + "x" * 5000 + "\r\nline three").encode()
    message = str(classify(httpx.Response(500, content=body)))
    assert "\n" not in message and "\r" not in message
    assert len(message) <= MAX_DETAIL_CHARS
    assert message.startswith("HTTP 500 Internal Server Error: line one x")


# -- Retry-After -----------------------------------------------------------------------------------


def test_parse_retry_after_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 -0000", now=now) == 30.0
    for unreadable in (None, "", "   ", "-1", "nan", "inf", "soon", "Mon, 99 Foo 2023"):
        assert parse_retry_after(unreadable, now=now) is None, unreadable


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = httpx.Headers({"retry-after": "5", "retry-after-ms": "1500"})
    assert retry_after_from_headers(headers) == 1.5
    assert retry_after_from_headers(httpx.Headers({"retry-after": "5"})) == 5.0
    assert retry_after_from_headers(httpx.Headers({})) is None


# -- configuration ---------------------------------------------------------------------------------


def test_bad_settings_are_config_errors_naming_the_field() -> None:
    cases = [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "ftp://host/v1"}, "base_url"),
        ({"base_url": "http://user:pw@host/v1"}, "credentials"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_connections": 0}, "max_connections"),
        ({"transport": "curl"}, "transport"),
    ]
    for kwargs, field in cases:
        settings = {"base_url": "http://127.0.0.1:1/v1", **kwargs}
        with pytest.raises(ConfigError, match=field) as info:
            ModelClient(**settings)  # type: ignore[arg-type]
        assert "pw" not in str(info.value)
