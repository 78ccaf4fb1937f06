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
2xx that is not JSON / not a chat completion   BadResponse (its shape, never its text)
2xx body over ``max_response_bytes``           BadResponse ("response body larger than …")
timeouts (httpx, aiohttp, overall deadline)    RequestTimeout
refused, reset, disconnected, protocol error   ConnectionFailed
undecodable Content-Encoding                   BadResponse
an invalid request or URL (ours)               ClientError
=============================================  ================================================

A chat completion's ``content`` is a string or — as several OpenAI-compatible providers send
it — a list of content parts, whose text parts are joined.

Secrets: the API key lives in a pydantic ``SecretStr`` and travels only in the Authorization
header. Error messages go through :func:`ddscope.engine.client.scrub.scrub_error_text`: one
line, the key (and proxy credentials) redacted should a server echo them back, the request's own
messages masked where the server quotes them, control characters escaped, cut to
``ERROR_TEXT_LIMIT``. So does the model name an answer states (cut to ``MODEL_NAME_LIMIT``).
A 2xx that is not a usable chat completion is described by its shape (``not JSON (text/html,
1,234 bytes)``, ``a JSON object with keys choices, id (choices is an empty list)``) and never
quoted: its body may be the completion itself, which is recorded only with ``--record-text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    "MODEL_NAME_LIMIT",
    "STATUS_CLASSES",
    "ChatResult",
    "classify",
    "completion_from_body",
    "error_class_for_exception",
    "error_class_for_status",
    "parse_chat_completion",
]

MAX_DETAIL_CHARS = ERROR_TEXT_LIMIT
MODEL_NAME_LIMIT = 100  # characters of an answer's model name kept (real ones are under 64)

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
    result = completion_from_body(
        status, response.content, response.headers.raw, secrets=secrets, sent=sent
    )
    if result is not None:
        return result
    message = f"HTTP {status}: {_not_a_completion(response)}"
    raise BadResponse(_one_line(message, secrets, sent), status_code=status)


def completion_from_body(
    status: int,
    content: bytes,
    raw_headers: Sequence[tuple[bytes, bytes]],
    *,
    secrets: Sequence[str] = (),
    sent: Sequence[SentText] | Callable[[], Sequence[SentText]] = (),
    requested_model: str | None = None,
) -> ChatResult | None:
    """The short path for a 2xx: the ChatResult, or None when the body is not a chat completion
    (the caller then builds the error with the full scrubbing). ``secrets`` and ``sent`` are
    scrubbed from the model name the answer states, as from error text — unless it is the
    ``requested_model`` itself (the usual answer: nothing a server added), which costs no
    scrub on the hot path; ``sent`` may be a callable, made only when a scrub is needed."""
    try:
        body = orjson.loads(content)
        text = body["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        text = _text_of_parts(text)
        if text is None:
            return None
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    model = body.get("model")
    if isinstance(model, str) and model != requested_model:
        texts = sent() if callable(sent) else sent
        model = scrub_error_text(model, sent=texts, secrets=secrets, limit=MODEL_NAME_LIMIT)
    return ChatResult(
        text=text,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        # Server-sent text bound for the record and spans: a server may put anything here (the
        # key it was sent, the prompt), so it was scrubbed like error text above.
        response_model=model if isinstance(model, str) else None,
        status_code=status,
        ratelimit=ratelimit_from_raw(raw_headers),
    )


def _text_of_parts(content: object) -> str | None:
    """The text of ``content`` given as a list of content parts (``{"type": "text", "text":
    …}``), its text parts joined; None if it is not such a list or has no text part."""
    if not isinstance(content, list):
        return None
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type", "text") == "text"
        and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else None


# -- what a 2xx that is not a chat completion looks like ---------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,39}\Z")  # a key name, not text
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}\Z")
_MAX_NAMES = 10


def _not_a_completion(response: httpx.Response) -> str:
    """What a 2xx body that is not a usable chat completion is, told by its shape only: its
    text may be the completion (a streamed reply, content in a form not understood), which
    must not reach the record unless text recording is on."""
    content = response.content
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not _MEDIA_TYPE.match(media):
            media = "an unusual content type" if media else "no content type"
        if not content:
            return f"an empty body ({media})"
        streamed = "; a streamed reply" if media == "text/event-stream" else ""
        return f"not JSON ({media}, {len(content):,} bytes{streamed})"
    if not isinstance(body, dict):
        return f"not a chat completion: {_kind(body)}"
    return f"not a chat completion: {_kind(body)} ({_completion_problem(body)})"


def _completion_problem(body: dict[str, Any]) -> str:
    """Where ``body["choices"][0]["message"]["content"]`` breaks down, in names and kinds."""
    if "choices" not in body:
        error = body.get("error")
        return "no choices" if error is None else f"no choices; error is {_kind(error)}"
    choices = body["choices"]
    if not isinstance(choices, list):
        return f"choices is {_kind(choices)}, not a list"
    if not choices:
        return "choices is an empty list"
    choice = choices[0]
    if not isinstance(choice, dict):
        return f"choices[0] is {_kind(choice)}, not an object"
    if not isinstance(choice.get("message"), dict):
        if "message" in choice:
            return f"choices[0].message is {_kind(choice['message'])}, not an object"
        return f"choices[0] has no message; its keys: {_names(choice)}"
    message = choice["message"]
    if "content" not in message:
        return f"choices[0].message has no content; its keys: {_names(message)}"
    content = message["content"]
    if content is None:
        return f"choices[0].message.content is null; message keys: {_names(message)}"
    if isinstance(content, list):
        kinds = sorted({_part_type(part) for part in content})
        of = f"; part types: {', '.join(kinds)}" if kinds else ""
        return f"choices[0].message.content is a list with no text in its parts{of}"
    return f"choices[0].message.content is {_kind(content)}, not a string"


def _kind(value: object) -> str:
    """A JSON value's kind and size, never its content."""
    if isinstance(value, dict):
        return f"a JSON object with keys {_names(value)}" if value else "an empty JSON object"
    if isinstance(value, list):
        return f"a JSON array of {len(value):,} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, str):
        return f"a JSON string of {len(value):,} chars"
    if isinstance(value, bool):
        return "JSON true" if value else "JSON false"
    if value is None:
        return "JSON null"
    return "a JSON number"


def _names(mapping: dict[str, Any]) -> str:
    """An object's key names, sorted — those that look like names: a key could be any text."""
    names = sorted(k for k in mapping if _NAME.match(k))
    others = len(mapping) - min(len(names), _MAX_NAMES)
    if not names:
        return f"({others} not shown)"
    shown = ", ".join(names[:_MAX_NAMES])
    return f"{shown} and {others} more" if others else shown


def _part_type(part: object) -> str:
    if not isinstance(part, dict):
        return "not an object"
    kind = part.get("type")
    return kind if isinstance(kind, str) and _NAME.match(kind) else "untyped"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
