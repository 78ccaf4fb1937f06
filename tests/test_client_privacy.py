"""What the model client lets through of secrets and text, against real HTTP servers on
127.0.0.1 that misbehave: echo the key, quote the prompt (re-cased, or in the model name), answer
a 200 that is not a usable chat completion, or stand in for a proxy that quotes its credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ddscope.engine.client.answers import ChatResult, classify, parse_chat_completion
from ddscope.engine.client.model_client import ModelClient
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.run_setup import default_client
from ddscope.errors import BadResponse, ClientError, ConfigError, ModelError

TRANSPORTS = ["aiohttp", "httpx"]
KEY = "sk-LEAKCHECK-123456"
PROMPT = "PROMPTLEAK-abc Write a summary about the lighthouse keeper please now."
SYSTEM = "SYSLEAK-def be terse please"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
COMPLETION = "COMPLETIONLEAK-xyz the generated answer"


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it (header values stripped, as servers do)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return str(self.body["messages"][-1]["content"])


Reply = tuple[int, str, bytes]  # status, content type, body


def json_reply(status: int, body: object) -> Reply:
    return status, "application/json", json.dumps(body).encode()


def completion(content: object, model: str = "m") -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"id": "c1", "model": model, "choices": [{"index": 0, "message": message}]}


@contextlib.contextmanager
def endpoint(answer: Callable[[Seen], Reply]) -> Iterator[tuple[str, list[Seen]]]:
    """An HTTP server on 127.0.0.1 answering every POST with ``answer``; yields its /v1 URL and
    the requests it saw."""
    seen: list[Seen] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v.strip() for k, v in self.headers.items()}
            request = Seen(self.path, headers, json.loads(raw or b"{}"))
            seen.append(request)
            status, media, content = answer(request)
            self.send_response(status)
            self.send_header("content-type", media)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def call(client: ModelClient, messages: list[dict[str, Any]] = MESSAGES) -> ChatResult | ModelError:
    """One chat call: its result, or the one ModelError it raised."""

    async def run() -> ChatResult | ModelError:
        async with client:
            try:
                return await client.chat("m", messages)
            except ModelError as exc:
                return exc

    return asyncio.run(run())


def failed(client: ModelClient) -> ModelError:
    outcome = call(client)
    assert isinstance(outcome, ModelError), outcome
    return outcome


def succeeded(client: ModelClient) -> ChatResult:
    outcome = call(client)
    assert isinstance(outcome, ChatResult), outcome
    return outcome


def echo_auth_401(request: Seen) -> Reply:
    """As many gateways do: the credentials refused, quoted back (stripped)."""
    auth = request.headers.get("authorization", "")
    return json_reply(401, {"error": {"message": f"invalid credentials for token [{auth}]"}})


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment (nor .netrc credentials for one) unless a test sets it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("NETRC", raising=False)


# -- 1. an API key with whitespace around it -------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("raw_key", [f"{KEY} ", f"{KEY}\n", f"\t{KEY}\r\n"])
def test_a_key_read_with_whitespace_is_sent_stripped_and_redacted_when_echoed(
    transport: str, raw_key: str, monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> None:
    monkeypatch.setenv("DDSCOPE_TEST_KEY", raw_key)
    with endpoint(echo_auth_401) as (url, seen):
        error = failed(ModelClient.from_env(url, "DDSCOPE_TEST_KEY", transport=transport))
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"  # a line break would inject
    assert isinstance(error, ClientError) and error.status_code == 401
    assert "LEAKCHECK" not in str(error) and "123456" not in str(error)
    assert str(error).endswith("invalid credentials for token [Bearer [redacted]]")


def test_the_run_setup_client_strips_the_key_too(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> None:
    monkeypatch.setenv("DDSCOPE_TEST_KEY", f"{KEY}\n")
    with endpoint(echo_auth_401) as (url, seen):
        pipeline = Pipeline.from_dict(
            {
                "providers": [{"name": "p", "endpoint": url, "api_key_env": "DDSCOPE_TEST_KEY"}],
                "models": [{"alias": "m", "provider": "p", "model": "mock-model"}],
                "columns": [{"name": "c", "type": "llm_text", "model": "m", "prompt": "hi"}],
            }
        )
        alias = pipeline.models[0]
        error = failed(default_client(pipeline.provider_for(alias), alias))
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "LEAKCHECK" not in str(error) and "[redacted]" in str(error)


@pytest.mark.parametrize("value", ["", "  ", "\n", " \t\r\n "])
def test_a_blank_key_is_refused_like_an_unset_one(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDSCOPE_TEST_KEY", value)
    with pytest.raises(
        ConfigError, match=r"environment variable DDSCOPE_TEST_KEY is (not set|blank)"
    ):
        ModelClient.from_env("http://127.0.0.1:1/v1", "DDSCOPE_TEST_KEY")
    monkeypatch.delenv("DDSCOPE_TEST_KEY")
    with pytest.raises(ConfigError, match=r"environment variable DDSCOPE_TEST_KEY is not set"):
        ModelClient.from_env("http://127.0.0.1:1/v1", "DDSCOPE_TEST_KEY")
    with pytest.raises(ConfigError, match="api_key is blank"):
        ModelClient("http://127.0.0.1:1/v1", api_key=" \n")


def test_a_key_a_header_cannot_carry_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DDSCOPE_TEST_KEY", f"{KEY}\r\nX-Injected: 1")
    with pytest.raises(ConfigError, match=r"DDSCOPE_TEST_KEY.*cannot carry") as info:
        ModelClient.from_env("http://127.0.0.1:1/v1", "DDSCOPE_TEST_KEY")
    assert "LEAKCHECK" not in str(info.value)


# -- 2. a 200 that is not a usable chat completion -------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_content_given_as_text_parts_is_a_completion(transport: str, no_proxy_env: None) -> None:
    parts = [
        {"type": "text", "text": "COMPLETIONLEAK-xyz the "},
        {"type": "thinking", "thinking": "not part of the answer"},
        {"type": "text", "text": "generated answer"},
    ]
    with endpoint(lambda _: json_reply(200, completion(parts))) as (url, _):
        result = succeeded(ModelClient(url, transport=transport))  # type: ignore[arg-type]
    assert result.text == COMPLETION and result.status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_streamed_reply_is_described_never_quoted(transport: str, no_proxy_env: None) -> None:
    events = "".join(
        "data: "
        + json.dumps({"object": "chat.completion.chunk", "choices": [{"delta": {"content": w}}]})
        + "\n\n"
        for w in ("COMPLETIONLEAK-xyz", " the generated", " answer")
    )
    sse = events.encode() + b"data: [DONE]\n\n"
    with endpoint(lambda _: (200, "text/event-stream", sse)) as (url, _):
        error = failed(ModelClient(url, transport=transport))  # type: ignore[arg-type]
    assert isinstance(error, BadResponse) and error.status_code == 200
    assert "COMPLETIONLEAK" not in str(error) and "generated" not in str(error)
    assert (
        str(error)
        == f"HTTP 200: not JSON (text/event-stream, {len(sse):,} bytes; a streamed reply)"
    )


_NOT_COMPLETIONS: dict[str, tuple[object, str]] = {
    "no text parts": (
        completion([{"type": "refusal", "refusal": COMPLETION}]),
        "a JSON object with keys choices, id, model (choices[0].message.content is a list with "
        "no text in its parts; part types: refusal)",
    ),
    "refusal": (
        {"choices": [{"message": {"role": "assistant", "content": None, "refusal": COMPLETION}}]},
        "a JSON object with keys choices (choices[0].message.content is null; message keys: "
        "content, refusal, role)",
    ),
    "tool call": (
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "tool_calls": [{"function": {"arguments": json.dumps([COMPLETION])}}],
                    }
                }
            ]
        },
        "a JSON object with keys choices (choices[0].message has no content; its keys: role, "
        "tool_calls)",
    ),
    "chunk": (
        {"object": "chat.completion.chunk", "choices": [{"delta": {"content": COMPLETION}}]},
        "a JSON object with keys choices, object (choices[0] has no message; its keys: delta)",
    ),
    "message text": (
        {"choices": [{"message": COMPLETION}]},
        "a JSON object with keys choices (choices[0].message is a JSON string of 39 chars, not "
        "an object)",
    ),
    "odd keys": (
        {COMPLETION: 1, "choices": []},
        "a JSON object with keys choices and 1 more (choices is an empty list)",
    ),
    "array": ([COMPLETION], "a JSON array of 1 item"),
    "error object": (
        {"error": {"message": COMPLETION, "type": "x"}},
        "a JSON object with keys error (no choices; error is a JSON object with keys message, "
        "type)",
    ),
}


@pytest.mark.parametrize("case", sorted(_NOT_COMPLETIONS))
def test_a_json_body_that_is_not_a_completion_is_described_by_its_shape(case: str) -> None:
    body, shape = _NOT_COMPLETIONS[case]
    response = httpx.Response(200, content=json.dumps(body).encode())
    with pytest.raises(BadResponse) as info:
        parse_chat_completion(response)
    assert "COMPLETIONLEAK" not in str(info.value)
    assert str(info.value) == f"HTTP 200: not a chat completion: {shape}"


def test_a_body_that_is_not_json_is_described_by_type_and_size() -> None:
    html = httpx.Response(
        200,
        content=f"<p>{COMPLETION}</p>".encode(),
        headers={"content-type": "text/html; charset=utf-8"},
    )
    with pytest.raises(BadResponse, match=r"^HTTP 200: not JSON \(text/html, 46 bytes\)$"):
        parse_chat_completion(html)
    with pytest.raises(BadResponse, match=r"^HTTP 200: an empty body \(no content type\)$"):
        parse_chat_completion(httpx.Response(200, content=b""))


def test_an_error_status_still_quotes_its_scrubbed_message() -> None:
    body = json.dumps({"error": {"message": f"model overloaded; {PROMPT}"}}).encode()
    error = classify(httpx.Response(503, content=body), sent=[("prompt", PROMPT)])
    assert (
        str(error)
        == f"HTTP 503 Service Unavailable: model overloaded; <prompt:{len(PROMPT)} chars>"
    )


# -- 3. the model name an answer states ------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_model_name_quoting_the_key_or_the_prompt_is_scrubbed(
    transport: str, no_proxy_env: None
) -> None:
    def answer(request: Seen) -> Reply:
        model = f"m {request.headers['authorization']} {request.prompt}"
        return json_reply(200, completion("ok", model=model))

    with endpoint(answer) as (url, _):
        result = succeeded(ModelClient(url, api_key=KEY, transport=transport))  # type: ignore[arg-type]
    assert result.response_model == f"m Bearer [redacted] <prompt:{len(PROMPT)} chars>"
    long_reply = json_reply(200, completion("ok", model=f"{KEY}-{'x' * 500}"))
    with endpoint(lambda _: long_reply) as (url, _):
        client = ModelClient(url, api_key=KEY, transport=transport)  # type: ignore[arg-type]
        long_name = succeeded(client).response_model
    assert long_name is not None and len(long_name) <= 100
    assert long_name.startswith("[redacted]-xxx") and long_name.endswith("(cut; 511 chars in all)")


def test_a_plain_model_name_is_kept_as_it_is() -> None:
    body = json.dumps(completion("ok", model="gpt-4o-2024-08-06")).encode()
    result = parse_chat_completion(
        httpx.Response(200, content=body), secrets=[KEY], sent=[("prompt", PROMPT)]
    )
    assert result.response_model == "gpt-4o-2024-08-06"


# -- 4. a quote in another letter case -------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_prompt_quoted_upper_cased_is_masked(transport: str, no_proxy_env: None) -> None:
    def answer(request: Seen) -> Reply:
        return json_reply(400, {"error": {"message": f"rejected input: {request.prompt.upper()}"}})

    with endpoint(answer) as (url, _):
        error = failed(ModelClient(url, transport=transport))  # type: ignore[arg-type]
    assert str(error) == f"HTTP 400 Bad Request: rejected input: <prompt:{len(PROMPT)} chars>"


# -- 6. proxy credentials --------------------------------------------------------------------


def echo_proxy_auth_407(request: Seen) -> Reply:
    """A proxy refusing the credentials it was sent, quoting them."""
    auth = request.headers.get("proxy-authorization", "(none)")
    return json_reply(407, {"error": {"message": f"proxy auth refused: {auth}"}})


@pytest.mark.parametrize(
    ("transport", "variable"),
    # aiohttp does not read ALL_PROXY: only httpx is asked to
    [(t, v) for t in TRANSPORTS for v in ("HTTP_PROXY", "http_proxy")] + [("httpx", "ALL_PROXY")],
)
def test_proxy_credentials_quoted_by_the_proxy_are_redacted(
    transport: str, variable: str, monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> None:
    with endpoint(echo_proxy_auth_407) as (proxy_url, seen):
        proxy = proxy_url.removesuffix("/v1").replace("//", "//puser:PROXYPASS@")
        monkeypatch.setenv(variable, proxy)
        error = failed(ModelClient("http://127.0.0.1:9/v1", transport=transport))  # type: ignore[arg-type]
    basic = base64.b64encode(b"puser:PROXYPASS").decode()
    assert seen[0].headers["proxy-authorization"] == f"Basic {basic}"  # it went via the proxy
    assert isinstance(error, ClientError) and error.status_code == 407
    for leak in ("PROXYPASS", basic, "puser:"):
        assert leak not in str(error)
    assert str(error).endswith("proxy auth refused: Basic [redacted]")


def test_proxy_credentials_from_netrc_are_redacted(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login nuser password NETRCPASS\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with endpoint(echo_proxy_auth_407) as (proxy_url, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        error = failed(ModelClient("http://127.0.0.1:9/v1"))
    basic = base64.b64encode(b"nuser:NETRCPASS").decode()
    assert seen[0].headers["proxy-authorization"] == f"Basic {basic}"  # aiohttp used .netrc
    assert basic not in str(error) and str(error).endswith("proxy auth refused: Basic [redacted]")


def test_proxy_secrets_cover_every_form_a_proxy_sees() -> None:
    from ddscope.engine.client.model_client import proxy_secrets

    env = {
        "HTTP_PROXY": "http://puser:P%40SS%3Aword@proxy:3128",
        "https_proxy": "tokenonly@proxy:3128",  # no scheme, a token as the user name
        "ALL_PROXY": "socks5://proxy:1080",  # no credentials
        "OTHER": "http://u:not-a-proxy@x",
    }
    secrets = proxy_secrets(env)
    for form in (
        "P@SS:word",  # the password as sent
        "P%40SS%3Aword",  # as the variable writes it
        "puser:P@SS:word",
        base64.b64encode(b"puser:P@SS:word").decode(),  # Basic, as sent
        "tokenonly",
        base64.b64encode(b"tokenonly:").decode(),
    ):
        assert form in secrets, form
    assert not any("not-a-proxy" in s for s in secrets)
    assert proxy_secrets({}) == ()
