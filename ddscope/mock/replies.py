"""The mock endpoint's OpenAI shapes: reading a chat request, writing a deterministic completion.

The reply is a pure function of the request, so chained pipeline columns produce stable text::

    [mock-model] reply to: <first 12 words of the last user message> #<8 hex of sha256(request)>

Token usage is an approximation: whitespace-separated words of all message contents (prompt) and
of the reply (completion). ``max_tokens`` truncates the reply to that many words
(``finish_reason: "length"``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

REPLY_WORDS = 12


class InvalidRequest(ValueError):
    """The request body is not a chat completion request (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    prompt_text: str  # every message's text, newline-joined (for markers and token counts)
    last_user_text: str


def parse_chat_request(body: bytes) -> ChatRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    model, messages, max_tokens = data.get("model"), data.get("messages"), data.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise InvalidRequest("each message must be an object with a 'role'")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidRequest("'max_tokens' must be a positive integer")
    texts = [message_text(m) for m in messages]
    user_texts = [t for m, t in zip(messages, texts, strict=True) if m["role"] == "user"]
    last_user = user_texts[-1] if user_texts else texts[-1]
    return ChatRequest(model, messages, max_tokens, "\n".join(texts), last_user)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: a string content, or the text parts of a list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def reply_text(request: ChatRequest) -> str:
    digest = hashlib.sha256(
        orjson.dumps([request.model, request.messages], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:8]
    head = " ".join(request.last_user_text.split()[:REPLY_WORDS])
    return f"[{request.model}] reply to: {head} #{digest}"


def completion_body(request: ChatRequest, index: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object answering ``request`` (``index``: arrival index)."""
    words = reply_text(request).split()
    finish_reason = "stop"
    if request.max_tokens is not None and len(words) > request.max_tokens:
        words, finish_reason = words[: request.max_tokens], "length"
    prompt_tokens = len(request.prompt_text.split())
    return {
        "id": f"chatcmpl-mock-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        },
    }


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def models_body(models: tuple[str, ...]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "ddscope-mock"} for m in models
        ],
    }
