"""What an answer from the model endpoint means: a 2xx chat completion becomes a
:class:`ChatResult`, and every way a call can fail becomes exactly one
:class:`~ddscope.errors.ModelError` (:func:`classify`), its text scrubbed.

Failure map (first match wins; the tests enumerate every httpx and aiohttp exception class):

=============================================  ================================================
failure                                        error
=============================================  ================================================
HTTP 429                                       RateLimited, ``retry_after_s`` from
                                               Retry-After-Ms or Retry-After (seconds or date)
HTTP 5xx                                       ServerError (``retry_after_s`` likewise: a 503
                                               that says when to come back is pushback)
HTTP 408                                       RequestTimeout (the server gave up waiting)
other HTTP 4xx; 3xx (redirects not followed)   ClientError (not retryable)
2xx that is not JSON / not a chat completion   BadResponse
2xx body over ``max_response_bytes``           BadResponse ("response body larger than …")
timeouts (httpx, aiohttp, overall deadline)    RequestTimeout
refused, reset, disconnected, protocol error   ConnectionFailed
undecodable Content-Encoding                   BadResponse
an invalid request or URL (ours)               ClientError
=============================================  ================================================

Secrets: the API key lives in a pydantic ``SecretStr`` and travels only in the Authorization
header. Error messages go through :func:`ddscope.engine.client.scrub.scrub_error_text`: one
line, the key redacted should a server echo it back, the request's own messages masked where the
server quotes them, control characters escaped, cut to ``ERROR_TEXT_LIMIT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson

from ddscope.engine.admission.quota import (
    RateLimitHeaders,
    ratelimit_from_headers,
    ratelimit_from_raw,
)
from ddscope.engine.admission.retry_after import retry_after_from_headers
from ddscope.engine.client.aiohttp_post import BODY_CUT
from ddscope.engine.client.scrub import (
    ERROR_TEXT_LIMIT,
    MIN_QUOTE_CHARS,
    SentText,
    cut_notice_text,
    scrub_error_text,
)
from ddscope.errors import (
    BadResponse,
    ClientError,
    ConnectionFailed,
    ModelError,
    RateLimited,
    RequestTimeout,
    ServerError,
)

__all__ = [
    "CLASSIFIED_EXCEPTIONS",
    "EXCEPTION_CLASSES",
    "MAX_DETAIL_CHARS",
    "STATUS_CLASSES",
    "ChatResult",
    "classify",
    "completion_from_body",
    "error_class_for_exception",
    "error_class_for_status",
    "parse_chat_completion",
]

MAX_DETAIL_CHARS = ERROR_TEXT_LIMIT

# Exception class → error class. First match wins, so subclasses precede their bases.
EXCEPTION_CLASSES: tuple[tuple[type[BaseException], type[ModelError]], ...] = (
    (httpx.TimeoutException, RequestTimeout),  # connect / read / write / pool
    (TimeoutError, RequestTimeout),  # the overall deadline; aiohttp's ServerTimeoutError family
    (httpx.NetworkError, ConnectionFailed),  # ConnectError, ReadError, WriteError, CloseError
    (httpx.RemoteProtocolError, ConnectionFailed),  # the server broke HTTP or closed early
    (httpx.ProxyError, ConnectionFailed),
    (aiohttp.InvalidURL, ClientError),
    (aiohttp.NonHttpUrlClientError, ClientError),
    (aiohttp.ClientError, ConnectionFailed),  # refused, reset, disconnected, cut short, garbled
    (OSError, ConnectionFailed),
    (httpx.DecodingError, BadResponse),  # a body whose Content-Encoding cannot be decoded
    (httpx.LocalProtocolError, ClientError),  # our request is not valid HTTP
    (httpx.UnsupportedProtocol, ClientError),
    (httpx.TooManyRedirects, ClientError),
    (httpx.InvalidURL, ClientError),
    (httpx.CookieConflict, ClientError),
    (httpx.StreamError, ClientError),
    (httpx.HTTPError, ConnectionFailed),  # any other request that failed in transit
)
CLASSIFIED_EXCEPTIONS: tuple[type[BaseException], ...] = tuple(c for c, _ in EXCEPTION_CLASSES)

# HTTP status → error class, for answers that are not a chat completion.
STATUS_CLASSES: tuple[tuple[range, type[ModelError]], ...] = (
    (range(408, 409), RequestTimeout),
    (range(429, 430), RateLimited),
    (range(400, 500), ClientError),
    (range(500, 600), ServerError),
    (range(300, 400), ClientError),  # redirects are not followed: the base URL is likely wrong
    (range(100, 300), BadResponse),  # a 1xx/2xx that reaches classify is not a completion
)

_SUMMARY: dict[type[ModelError], str] = {
    RequestTimeout: "no answer in time",
    ConnectionFailed: "connection failed",
    ClientError: "request not sent",
    BadResponse: "unreadable response",
}


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One chat completion: the reply text, token usage as reported, and the answering model."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    response_model: str | None
    status_code: int
    ratelimit: RateLimitHeaders | None = None  # the answer's x-ratelimit-* quota headers


def classify(
    failure: BaseException | httpx.Response,
    *,
    secrets: Sequence[str] = (),
    timeout_s: float | None = None,
    sent: Sequence[SentText] = (),
) -> ModelError:
    """The one error for a failed call: an exception raised while calling, or a response that
    is not a chat completion. ``secrets`` are redacted from the message and ``sent`` (what the
    request carried, see :func:`~ddscope.engine.client.scrub.sent_texts`) masked; ``timeout_s`` only
    words a timeout's message. An exception outside :data:`EXCEPTION_CLASSES` is a bug, not an
    endpoint failure: TypeError."""
    if isinstance(failure, httpx.Response):
        return _classify_response(failure, secrets, sent)
    if isinstance(failure, httpx.HTTPStatusError):
        return _classify_response(failure.response, secrets, sent)
    original = _original_exception(failure)
    error_class = error_class_for_exception(type(original))
    if error_class is None:
        raise TypeError(f"not a model endpoint failure: {type(failure).__name__}")
    summary = _SUMMARY[error_class]
    if error_class is RequestTimeout and timeout_s is not None:
        summary = f"no answer within {timeout_s:g} s"
    detail = str(original) or str(failure)
    name = type(original).__name__
    return error_class(
        _one_line(f"{summary}: {name}: {detail}" if detail else f"{summary}: {name}", secrets)
    )


def error_class_for_exception(exc_type: type[BaseException]) -> type[ModelError] | None:
    """The error class for an exception type, by :data:`EXCEPTION_CLASSES` (None: unmapped)."""
    for exc_class, error_class in EXCEPTION_CLASSES:
        if issubclass(exc_type, exc_class):
            return error_class
    return None


def _original_exception(exc: BaseException) -> BaseException:
    # A transport that re-raises aiohttp errors as httpx ones (httpx-aiohttp, which the client
    # used before issue 17) is not always faithful (connection refused and server disconnects
    # both arrive as ConnectTimeout): the original, kept as __cause__, is the more specific.
    cause = exc.__cause__
    if isinstance(exc, httpx.HTTPError) and isinstance(cause, aiohttp.ClientError | TimeoutError):
        return cause
    return exc


def error_class_for_status(status: int) -> type[ModelError]:
    for statuses, error_class in STATUS_CLASSES:
        if status in statuses:
            return error_class
    return BadResponse


def _classify_response(
    response: httpx.Response, secrets: Sequence[str], sent: Sequence[SentText] = ()
) -> ModelError:
    status = response.status_code
    error_class = error_class_for_status(status)
    detail = _error_detail(response)
    retry_after = retry_after_from_headers(response.headers)
    wait = "" if retry_after is None else f" (retry after {retry_after:g} s)"
    error: ModelError
    if error_class is RateLimited:
        message = _one_line(f"HTTP 429 rate limited{wait}: {detail}", secrets, sent)
        error = RateLimited(message, retry_after_s=retry_after)
    else:
        reason = response.reason_phrase or "error"
        message = _one_line(f"HTTP {status} {reason}{wait}: {detail}", secrets, sent)
        error = error_class(message, status_code=status)
        if error_class is ServerError:  # a 503 that says when to come back is pushback
            error.retry_after_s = retry_after
    error.ratelimit = ratelimit_from_headers(response.headers)
    return error


def _error_detail(response: httpx.Response) -> str:
    """The OpenAI error message if the body has one, else the body (as read: bounded). The
    whole of it, not a head: the scrub must see a quote whole to mask it, and cuts after."""
    body = response.content
    cut_notice = ""
    total = response.extensions.get(BODY_CUT)
    if isinstance(total, int):
        # The last few characters may begin a quote too short to recognise: dropped.
        body = body[:-MIN_QUOTE_CHARS]
        cut_notice = cut_notice_text(f"{total:,} bytes" if total >= 0 else "size unknown")
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        message = None
    if isinstance(message, str):
        return message + cut_notice
    return (body.decode("utf-8", "replace") or "(empty body)") + cut_notice


def _one_line(text: str, secrets: Sequence[str], sent: Sequence[SentText] = ()) -> str:
    return scrub_error_text(text, sent=sent, secrets=secrets, limit=MAX_DETAIL_CHARS)


def parse_chat_completion(
    response: httpx.Response, *, secrets: Sequence[str] = (), sent: Sequence[SentText] = ()
) -> ChatResult:
    """A 2xx response as a :class:`ChatResult`; BadResponse if it is not a chat completion."""
    status = response.status_code
    result = completion_from_body(status, response.content, response.headers.raw)
    if result is not None:
        return result
    detail = _error_detail(response)
    try:
        orjson.loads(response.content)
        what = "not a chat completion"
    except orjson.JSONDecodeError:
        what = "body is not JSON"
    raise BadResponse(
        _one_line(f"HTTP {status}: {what}: {detail}", secrets, sent), status_code=status
    )


def completion_from_body(
    status: int, content: bytes, raw_headers: Sequence[tuple[bytes, bytes]]
) -> ChatResult | None:
    """The short path for a 2xx: the ChatResult, or None when the body is not a chat completion
    (the caller then builds the error with the full scrubbing)."""
    try:
        body = orjson.loads(content)
        text = body["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    model = body.get("model")
    return ChatResult(
        text=text,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        # Server-sent text bound for the record and spans: one line, controls escaped, cut.
        response_model=scrub_error_text(model) if isinstance(model, str) else None,
        status_code=status,
        ratelimit=ratelimit_from_raw(raw_headers),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
