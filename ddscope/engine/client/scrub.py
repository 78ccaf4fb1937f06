"""Scrubbing text a server sent back before it becomes an event.

An endpoint's error message is the one piece of text in a run that nobody chose to record:
content filters, validators and gateways quote the input they refused, so a run with text
recording off would otherwise carry the prompt — and, for chained columns, earlier columns'
completions inside it — into ``run.jsonl``, OTLP spans, Perfetto, Chrome JSON, health and the
progress line. Every failed attempt's text passes through :func:`scrub_error_text` before it
becomes an event, so every view inherits the result.

API (the engine's worker and model client use it; the DataDesigner adapter should too)::

    scrub_error_text(text, *, sent=(), secrets=(), limit=ERROR_TEXT_LIMIT) -> str
    sent_texts(messages, values=None) -> list[SentText]      # SentText = (label, text)

``scrub_error_text`` does, in this order:

1. **secrets** (the API key) → ``[redacted]``;
2. whitespace runs → one space (the text becomes one line);
3. **what was sent** → a marker: every stretch of at least ``MIN_QUOTE_CHARS`` (15) characters
   that also occurs in one of ``sent`` becomes ``<prompt:1834 chars>`` when it is the whole text
   or ``<prompt:120 of 1834 chars>`` when it is part of it (the label is the sent text's). A sent
   text shorter than that is masked where it occurs whole, if it has at least
   ``MIN_WHOLE_CHARS`` (6) characters: shorter values ("a", "yes", "42") cannot be told apart
   from ordinary words and carry next to nothing. Quotes JSON-escaped by the server (a raw body
   that is not valid JSON) are matched too. This is done whether or not text recording is on:
   with it on the prompt is in the record already (``attempt_started.prompt``), while error text
   also reaches views that never carry text (Perfetto, Chrome JSON, health, progress);
4. **terminal control characters** (C0 and C1 controls, DEL, bidirectional overrides) →
   visible escapes such as ``\\x1b``, so nothing a server sent can drive a terminal;
5. text longer than ``limit`` (``ERROR_TEXT_LIMIT`` = 200 characters) is cut and ends with
   ``… (cut; N chars in all)``; a text that already ends with such a notice (the model client
   reads at most 64 KiB of an error body and says ``… (cut; 52,428,882 bytes in all)``) keeps it.

Matching is never quadratic: every ``GRAM_STEP``-th ``GRAM_CHARS``-gram of the error text is
looked up in the sent texts (``str.find``) — or, for an error text over 2 KiB, every
``GRAM_STEP``-th gram of the sent texts goes into a dict that the error text is walked against —
and each hit is grown to the longest common stretch. A rate-limit message against a 2 KB
prompt costs ≈ 0.05 ms of CPU, against 20 KB ≈ 0.3 ms, against 100 KB ≈ 1.7 ms
(``benchmarks/bench_error_body.py``); a 64 KiB error text against a 100 KB prompt stays well
under a second (``tests/test_scrub.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ddscope.safe_text import escape_controls

__all__ = [
    "ERROR_TEXT_LIMIT",
    "MIN_QUOTE_CHARS",
    "MIN_WHOLE_CHARS",
    "SentText",
    "cut_notice_text",
    "escape_controls",
    "scrub_error_text",
    "sent_texts",
]

SentText = tuple[str, str]  # (label for the marker, the text that was sent)

ERROR_TEXT_LIMIT = 200  # characters of error text kept in an event, the cut notice included
GRAM_CHARS = 12  # length of the indexed grams
GRAM_STEP = 4  # every GRAM_STEP-th gram of a sent text is indexed
MIN_QUOTE_CHARS = GRAM_CHARS + GRAM_STEP - 1  # a common stretch this long always contains one
MIN_WHOLE_CHARS = 6
FIND_TEXT_MAX = 2048  # error texts up to this long look their grams up in the sent texts
MAX_TRIES_PER_GRAM = 8

_MARKER_LABELS = ("prompt:", "system prompt:", "message ", "column ")
_EARLIER_NOTICE = re.compile(r"… \(cut; [^()]{1,40} in all\)\Z")


def scrub_error_text(
    text: str,
    *,
    sent: Iterable[SentText] = (),
    secrets: Iterable[str] = (),
    limit: int | None = ERROR_TEXT_LIMIT,
) -> str:
    """``text`` made safe for an event: secrets redacted, sent text masked, one line, control
    characters escaped, at most ``limit`` characters (None: not cut)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _one_spaced(text)
    needles = _needles(sent, escaped="\\" in text)
    if needles:
        text = _mask(text, needles)
    text = escape_controls(text)
    return text if limit is None else _cut(text, limit)


def cut_notice_text(full_length: str) -> str:
    """The notice that ends a cut text, e.g. ``… (cut; 52,428,800 bytes in all)``. A text that
    already ends with one (a body read only in part) keeps it when cut again."""
    return f"… (cut; {full_length} in all)"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    earlier = _EARLIER_NOTICE.search(text)
    if earlier is not None:
        notice, text = earlier.group(), text[: earlier.start()]
    else:
        notice = cut_notice_text(f"{len(text):,} chars")
    head = text[: max(0, limit - len(notice))]
    opened = head.rfind("<")
    if opened > head.rfind(">") and text.startswith(_MARKER_LABELS, opened + 1):
        head = head[:opened]  # not half a marker
    return head + notice


def sent_texts(
    messages: Sequence[Mapping[str, Any]], values: Mapping[str, object] | None = None
) -> list[SentText]:
    """What a chat request carried, labelled for the markers: the system prompt, the prompt
    (the last user message), other messages by position, and ``values`` (earlier columns'
    values that went into it) as ``column NAME``. Non-text values are skipped."""
    out: list[SentText] = []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, message in enumerate(messages):
        role = message.get("role")
        if i == last_user:
            label = "prompt"
        elif role == "system":
            label = "system prompt"
        else:
            label = f"message {i + 1}"
        out.append((label, _message_text(message)))
    for name, value in (values or {}).items():
        if isinstance(value, str):
            out.append((f"column {name}", value))
    return out


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # the OpenAI content-parts form
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


# -- matching ------------------------------------------------------------------------------


class _Needle:
    """One form of one sent text (as sent, whitespace-collapsed, or JSON-escaped)."""

    __slots__ = ("full_chars", "label", "text")

    def __init__(self, label: str, text: str, full_chars: int) -> None:
        self.label = label
        self.text = text
        self.full_chars = full_chars  # the length of the text as sent, for the marker


def _one_spaced(text: str) -> str:
    """Whitespace runs as one space, trimmed (``str.split`` is several times faster than a
    regular expression on long text)."""
    return " ".join(text.split())


def _needles(sent: Iterable[SentText], *, escaped: bool) -> list[_Needle]:
    """The forms of the sent texts to look for; JSON-escaped ones only if the error text has
    a backslash (without one, an escaped quote cannot be in it)."""
    out: list[_Needle] = []
    seen: set[str] = set()
    for label, original in sent:
        if len(original) < MIN_WHOLE_CHARS:
            continue
        forms = [original]
        if escaped:
            forms.append(orjson.dumps(original).decode()[1:-1])  # as a JSON body holds it
            forms.append(json.dumps(original)[1:-1])  # the same, non-ASCII as \\u escapes
        # Collapsed like the error text is, so re-flowed whitespace still matches.
        for form in map(_one_spaced, forms):
            if len(form) >= MIN_WHOLE_CHARS and form not in seen:
                seen.add(form)
                out.append(_Needle(label, form, len(original)))
    return out


def _mask(text: str, needles: list[_Needle]) -> str:
    spans = _whole_occurrences(text, needles) + _common_stretches(text, needles)
    if not spans:
        return text
    spans.sort(key=lambda s: (s[0], -s[1]))
    pieces: list[str] = []
    end_of_last = 0
    for start, end, needle in _merged(spans):
        pieces.append(text[end_of_last:start])
        pieces.append(_marker(end - start, needle))
        end_of_last = end
    pieces.append(text[end_of_last:])
    return "".join(pieces)


def _marker(chars: int, needle: _Needle) -> str:
    if chars >= len(needle.text):
        return f"<{needle.label}:{needle.full_chars} chars>"
    return f"<{needle.label}:{chars} of {needle.full_chars} chars>"


_Span = tuple[int, int, _Needle]


def _merged(spans: list[_Span]) -> list[_Span]:
    """Overlapping or touching spans as one (labelled after the first)."""
    out: list[_Span] = []
    for start, end, needle in spans:
        if out and start <= out[-1][1]:
            first_start, first_end, first = out[-1]
            out[-1] = (first_start, max(first_end, end), first)
        else:
            out.append((start, end, needle))
    return out


def _whole_occurrences(text: str, needles: list[_Needle]) -> list[_Span]:
    """Sent texts too short for the gram index, where they occur whole."""
    spans: list[_Span] = []
    for needle in needles:
        if len(needle.text) >= MIN_QUOTE_CHARS:
            continue
        start = text.find(needle.text)
        while start >= 0:
            spans.append((start, start + len(needle.text), needle))
            start = text.find(needle.text, start + len(needle.text))
    return spans


def _common_stretches(text: str, needles: list[_Needle]) -> list[_Span]:
    """Every stretch of ``text`` of at least MIN_QUOTE_CHARS that also occurs in a needle.
    The smaller side is the one walked: a short error text looks its grams up in the sent
    texts (``str.find``, fast C), a long one against an index of the sent texts' grams."""
    if len(text) <= FIND_TEXT_MAX:
        return _stretches_by_find(text, needles)
    return _stretches_by_index(text, needles)


def _stretches_by_find(text: str, needles: list[_Needle]) -> list[_Span]:
    # A stretch of MIN_QUOTE_CHARS or more always holds a gram starting at a multiple of
    # GRAM_STEP, so only those grams are looked up.
    long_needles = [n for n in needles if len(n.text) >= MIN_QUOTE_CHARS]
    spans: list[_Span] = []
    i, last = 0, len(text) - GRAM_CHARS
    while i <= last:
        best = _longest_at(text, i, long_needles)
        if best is not None and best[1] - best[0] >= MIN_QUOTE_CHARS:
            spans.append(best)
            resume = best[1] - GRAM_CHARS + 1  # the stretch's own grams need no second look
            i = max(i + GRAM_STEP, resume + (-resume) % GRAM_STEP)
        else:
            i += GRAM_STEP
    return spans


def _longest_at(text: str, at: int, needles: list[_Needle]) -> _Span | None:
    """The longest common stretch through the gram at ``text[at:]`` (a few occurrences of the
    gram per sent text are tried: repetitive text need not grow from the first)."""
    gram = text[at : at + GRAM_CHARS]
    best: _Span | None = None
    for needle in needles:
        pos = needle.text.find(gram)
        for _ in range(MAX_TRIES_PER_GRAM):
            if pos < 0:
                break
            start, end = _grow(text, at, needle.text, pos)
            if best is None or end - start > best[1] - best[0]:
                best = (start, end, needle)
            pos = needle.text.find(gram, pos + 1)
    return best


def _stretches_by_index(text: str, needles: list[_Needle]) -> list[_Span]:
    index: dict[str, tuple[_Needle, int]] = {}
    for needle in needles:
        body = needle.text
        for pos in range(0, len(body) - GRAM_CHARS + 1, GRAM_STEP):
            index.setdefault(body[pos : pos + GRAM_CHARS], (needle, pos))
    spans: list[_Span] = []
    i, last = 0, len(text) - GRAM_CHARS
    while i <= last:
        hit = index.get(text[i : i + GRAM_CHARS])
        if hit is None:
            i += 1
            continue
        start, end = _grow(text, i, hit[0].text, hit[1])
        if end - start >= MIN_QUOTE_CHARS:
            spans.append((start, end, hit[0]))
            i = end
        else:
            i += 1
    return spans


def _grow(text: str, at: int, body: str, pos: int) -> tuple[int, int]:
    """The longest common stretch around a gram that matched ``body[pos:]`` at ``text[at:]``."""
    start, left = at, pos
    while start > 0 and left > 0 and text[start - 1] == body[left - 1]:
        start, left = start - 1, left - 1
    end, right = at + GRAM_CHARS, pos + GRAM_CHARS
    while end < len(text) and right < len(body) and text[end] == body[right]:
        end, right = end + 1, right + 1
    return start, end
