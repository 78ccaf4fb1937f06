"""The model client: OpenAI-compatible ``POST {base_url}/chat/completions``; whatever goes wrong
reaches the caller as exactly one :class:`~ddscope.errors.ModelError` (``answers.classify``).

By default it sends with aiohttp directly (:mod:`~ddscope.engine.client.aiohttp_post`): httpx's
own async pool costs several times more CPU per request under concurrency (DESIGN §3,
``benchmarks/bench_client.py``), and httpx in front of aiohttp still ~200 µs per request more
than aiohttp alone (issue 17). ``transport="httpx"`` keeps the plain httpx transport. Either way
a failed answer is judged as an ``httpx.Response`` by the one ``answers.classify``; only a 2xx
chat completion takes the short path (``answers.completion_from_body``). The default transport
keeps no cookies (an API key authenticates every request; httpx's cookie jar cost ~25 µs an
answer).

How a failure becomes one error (the failure map) and how a 2xx becomes a :class:`ChatResult`:
:mod:`~ddscope.engine.client.answers`.

Bodies are read with a bound, so a huge answer cannot exhaust memory: a success body over
``max_response_bytes`` (default 8 MiB) is a BadResponse; of an error body only the first
``aiohttp_post.ERROR_BODY_BYTES`` (64 KiB) are read — the message says how large the body was.

Secrets redacted from whatever a server sends back (``scrub.secret_forms``): the API key — as
given and stripped of surrounding whitespace, the form sent (a server echoes a header value
stripped) — and the credentials in the proxy variables both transports honour
(``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, either case; a proxy's 407 may quote its
``Proxy-Authorization``): the password, ``user:password`` and their ``Basic`` base64 form.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import orjson
from pydantic import SecretStr

from ddscope.credentials import proxy_credentials
from ddscope.engine.client.aiohttp_post import BODY_CUT, AiohttpPoster, RawAnswer
from ddscope.engine.client.answers import (
    CLASSIFIED_EXCEPTIONS,
    ChatResult,
    classify,
    completion_from_body,
    parse_chat_completion,
)
from ddscope.engine.client.httpx_post import HttpxPoster
from ddscope.engine.client.scrub import secret_forms, sent_texts
from ddscope.engine.pipeline.parts import ModelAlias
from ddscope.errors import BadResponse, ConfigError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "ModelClient",
    "checked_api_key",
    "proxy_secrets",
]

TransportName = Literal["aiohttp", "httpx"]
# The model alias's default is the one source (RunSettings / ModelAlias hold every default).
DEFAULT_TIMEOUT_S: float = ModelAlias.model_fields["timeout_s"].default
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a chat completion is rarely above a few hundred KB


class ModelClient:
    """An async client for one OpenAI-compatible endpoint. Use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: TransportName = "aiohttp",
        max_connections: int = 256,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._base_url = _checked_base_url(base_url)
        if not (isinstance(max_response_bytes, int) and max_response_bytes >= 1):
            raise ConfigError(f"max_response_bytes must be >= 1, got {max_response_bytes!r}")
        self._max_response_bytes = max_response_bytes
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ConfigError(f"max_connections must be >= 1, got {max_connections!r}")
        if transport not in ("aiohttp", "httpx"):
            raise ConfigError(f"transport must be 'aiohttp' or 'httpx', got {transport!r}")
        raw_key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key or ""
        # Stripped: a key pasted with a newline or a space around it would make a header
        # aiohttp refuses (a crash), or one servers strip before quoting it back.
        key = checked_api_key(raw_key)
        self._api_key = SecretStr(key) if key else None
        # What a server could quote back: the key as sent and as given, and proxy credentials.
        self._secrets = secret_forms(key, raw_key) + proxy_secrets()
        self._timeout_s = float(timeout_s)
        self._transport_name = transport
        headers = {"content-type": "application/json"}
        if key:  # the key travels in this header and nowhere else
            headers["authorization"] = f"Bearer {key}"
        # Built once: a relative URL costs a parse and a merge per request (~45 µs in httpx).
        self._chat_url = self._base_url.join("chat/completions")
        self._poster: AiohttpPoster | HttpxPoster
        if transport == "aiohttp":
            self._poster = AiohttpPoster(
                str(self._chat_url),
                headers,
                max_connections=max_connections,
                max_response_bytes=max_response_bytes,
            )
        else:
            self._poster = HttpxPoster(
                self._chat_url,
                headers,
                timeout_s=self._timeout_s,
                max_connections=max_connections,
                max_response_bytes=max_response_bytes,
            )

    @classmethod
    def from_env(
        cls, base_url: str, api_key_env: str = "OPENAI_API_KEY", **kwargs: Any
    ) -> ModelClient:
        """A client whose API key is read from the environment variable ``api_key_env``
        (surrounding whitespace stripped; one that is blank is as good as unset)."""
        value = os.environ.get(api_key_env)
        if value is None:
            raise ConfigError(f"environment variable {api_key_env} is not set (the API key)")
        if not value.strip():
            raise ConfigError(f"environment variable {api_key_env} is blank (the API key)")
        checked_api_key(value, f"environment variable {api_key_env} (the API key)")
        return cls(base_url, api_key=SecretStr(value), **kwargs)

    async def chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult:
        """One chat completion. Raises exactly one ModelError subclass on failure."""
        payload: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        content = orjson.dumps(payload)
        try:
            # The overall deadline: a transport's timeouts bound each phase, not the whole call.
            async with asyncio.timeout(self._timeout_s):
                answer: RawAnswer | httpx.Response = await self._poster.post(content)
        except CLASSIFIED_EXCEPTIONS as exc:
            raise classify(exc, secrets=self._all_secrets, timeout_s=self._timeout_s) from exc
        if isinstance(answer, RawAnswer):
            if answer.is_success and answer.cut_total is None:
                result = completion_from_body(
                    answer.status,
                    answer.body,
                    answer.raw_headers,
                    secrets=self._all_secrets,
                    # what the stated model name must not quote, made only if it is not `model`
                    sent=lambda: sent_texts(messages),
                    requested_model=model,
                )
                if result is not None:
                    return result
            answer = answer.as_httpx()
        return self._judged(answer, messages)

    def _judged(self, response: httpx.Response, messages: list[dict[str, Any]]) -> ChatResult:
        """A whole answer judged: the ChatResult, or the one ModelError, its text scrubbed."""
        sent = sent_texts(messages)  # what the error text must not quote
        secrets = self._all_secrets
        if not response.is_success:
            raise classify(response, secrets=secrets, sent=sent)
        if response.extensions.get(BODY_CUT) is not None:
            raise BadResponse(
                f"HTTP {response.status_code}: response body larger than max_response_bytes "
                f"({self._max_response_bytes:,} bytes); not read",
                status_code=response.status_code,
            )
        return parse_chat_completion(response, secrets=secrets, sent=sent)

    @property
    def _all_secrets(self) -> tuple[str, ...]:
        # With the proxy credentials aiohttp found in .netrc once it resolved the proxy.
        return self._secrets + self._poster.proxy_secrets

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def base_url(self) -> str:
        return str(self._base_url).rstrip("/")

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"ModelClient(base_url={self.base_url!r}, transport={self._transport_name!r}, "
            f"timeout_s={self._timeout_s:g}, api_key={key})"
        )


def checked_api_key(raw_key: str, name: str = "api_key") -> str:
    """The API key as sent: stripped of surrounding whitespace; ConfigError if nothing is left
    of a non-empty one, or if it holds a character a header cannot carry (aiohttp would raise
    on a line break, httpx on non-ASCII). The error names ``name``, never the key."""
    key = raw_key.strip()
    if raw_key and not key:
        raise ConfigError(f"{name} is blank")
    if not (key.isascii() and key.isprintable()):
        raise ConfigError(
            f"{name} holds a control or non-ASCII character, which an HTTP header cannot carry"
        )
    return key


def proxy_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The credentials in the proxy variables (``ddscope.credentials.proxy_credentials``: the
    password, ``user:password``, its ``Basic`` form, or a lone user name as a token), as
    :func:`~ddscope.engine.client.scrub.secret_forms`."""
    env = os.environ if environ is None else environ
    return secret_forms(*sorted(proxy_credentials(env)))


def _checked_base_url(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"base_url is not a URL: {exc}") from None
    if url.userinfo:  # checked first: the messages below quote the URL
        raise ConfigError("base_url must not carry credentials; use api_key / api_key_env")
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"base_url {base_url!r} must be an http(s) URL with a host")
    # A trailing slash makes "chat/completions" resolve *under* the base path (…/v1/…).
    return url.copy_with(path=url.path.rstrip("/") + "/")
