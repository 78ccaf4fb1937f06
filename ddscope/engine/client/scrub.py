"""Scrubbing text a server sent back before it becomes an event.

An endpoint's error message is the one piece of text in a run that nobody chose to record:
content filters, validators and gateways quote the input they refused, so a run with text
recording off would otherwise carry the prompt — and, for chained columns, earlier columns'
completions inside it — into ``run.jsonl``, OTLP spans, Perfetto, Chrome JSON, health and the
progress line. Every failed attempt's text passes through :func:`scrub_error_text` before it
becomes an event, so every view inherits the result (so does the model name an answer states).

API (the engine's worker and model client use it; the DataDesigner adapter should too)::

    scrub_error_text(text, *, sent=(), secrets=(), limit=ERROR_TEXT_LIMIT) -> str
    sent_texts(messages, values=None) -> list[SentText]      # SentText = (label, text)
    secret_forms(*values) -> tuple[str, ...]                  # what to pass as ``secrets``

``scrub_error_text`` does, in this order:

1. **secrets** (the API key, proxy credentials: :func:`secret_forms`) → ``[redacted]``, in any
   letter case;
2. whitespace runs → one space (the text becomes one line);
3. **what was sent** → a marker: every stretch of at least ``MIN_QUOTE_CHARS`` (15) characters
   that also occurs in one of ``sent`` becomes ``<prompt:1834 chars>`` when it is the whole text
   or ``<prompt:120 of 1834 chars>`` when it is part of it (the label is the sent text's). A sent
   text shorter than that is masked where it occurs whole, if it has at least
   ``MIN_WHOLE_CHARS`` (6) characters: shorter values ("a", "yes", "42") cannot be told apart
   from ordinary words and carry next to nothing. Letter case does not matter (a validator that
   upper-cases the input it quotes is still caught). Quotes JSON-escaped by the server (a raw
   body that is not valid JSON, or JSON wrapped in a gateway's message) are matched too: with
   non-ASCII as ``\\u`` escapes in either hex case, and HTML-safe as Go (``\\u003c``) and .NET
   (``\\u0027``, ``\\u0022``) write them. This is done whether or not text recording is on:
   with it on the prompt is in the record already (``attempt_started.prompt``), while error text
   also reaches views that never carry text (Perfetto, Chrome JSON, health, progress);
4. **terminal control characters** (C0 and C1 controls, DEL, bidirectional overrides) →
   visible escapes such as ``\\x1b``, so nothing a server sent can drive a terminal;
5. text longer than ``limit`` (``ERROR_TEXT_LIMIT`` = 200 characters) is cut and ends with
   ``… (cut; N chars in all)``; a text that already ends with such a notice (the model client
   reads at most 64 KiB of an error body and says ``… (cut; 52,428,882 bytes in all)``) keeps it.

Letter case is ignored by matching ``str.lower`` forms of both sides, which keep every character
one character (U+0130 İ, the one exception, is taken as i): positions found in the lowered text
are positions in the text. Full case folding would also equate ß with SS but shift positions, so
a quote re-cased across an ß is masked only up to the ß.

Matching is exact and never quadratic. Every common stretch of 15 characters or more holds a
``GRAM_CHARS``-gram (12) at a multiple of ``GRAM_STEP`` (4): every such gram of the error text is
looked up in the sent texts (``str.find``) — or, for an error text over 2 KiB
(``FIND_TEXT_MAX``), every such gram of the sent texts goes into a dict of their positions that
the error text is walked against — and each hit is grown to the longest common stretch from
each of the gram's first ``MAX_TRIES_PER_GRAM`` (8) places in the sent text (by slice compares
that double in length, so a long quote costs little). A gram found in more places than that (a
sent text that repeats a phrase) also has the 15-character windows through it looked up whole
(``str.find``; in the dict case a dict of the windows around that gram's places, made on first
use), so a stretch that only a later place explains is not missed: every window of every common
stretch is found, which ``tests/test_scrub.py`` checks against a brute-force search. Text without
a space (a model name) is first checked against the sent texts as they are, sparing their
whitespace collapse on every answer. A rate-limit message against a 2 KB prompt costs ≈ 0.05 ms
of CPU, against 20 KB ≈ 0.3 ms, against 100 KB ≈ 1.7 ms (``benchmarks/bench_error_body.py``); a
64 KiB error text against a 100 KB prompt stays well under a second (``tests/test_scrub.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from ddscope.credentials import basic_forms
from ddscope.safe_text import escape_controls

__all__ = [
    "ERROR_TEXT_LIMIT",
    "MIN_QUOTE_CHARS",
    "MIN_WHOLE_CHARS",
    "SentText",
    "cut_notice_text",
    "escape_controls",
    "scrub_error_text",
    "secret_forms",
    "sent_texts",
]

SentText = tuple[str, str]  # (label for the marker, the text that was sent)

ERROR_TEXT_LIMIT = 200  # characters of error text kept in an event, the cut notice included
GRAM_CHARS = 12  # length of the indexed grams
GRAM_STEP = 4  # every GRAM_STEP-th gram of a sent text is indexed
MIN_QUOTE_CHARS = GRAM_CHARS + GRAM_STEP - 1  # a common stretch this long always contains one
MIN_WHOLE_CHARS = 6
FIND_TEXT_MAX = 2048  # error texts up to this long look their grams up in the sent texts
MAX_TRIES_PER_GRAM = 8  # places of one gram grown from; beyond, its windows are looked up

_MARKER_LABELS = ("prompt:", "system prompt:", "message ", "column ")
_EARLIER_NOTICE = re.compile(r"… \(cut; [^()]{1,40} in all\)\Z")
_REDACTED = "[redacted]"
# Characters Go (HTML-safe) and .NET (JavaScriptEncoder.Default) write as \u escapes in JSON
# strings where Python and orjson write them as they are (or as \").
_GO_ESCAPED = str.maketrans({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})
_DOTNET_ESCAPED = str.maketrans({c: f"\\u{ord(c):04x}" for c in "<>&'+`"})


def scrub_error_text(
    text: str,
    *,
    sent: Iterable[SentText] = (),
    secrets: Iterable[str] = (),
    limit: int | None = ERROR_TEXT_LIMIT,
) -> str:
    """``text`` made safe for an event: secrets redacted, sent text masked, one line, control
    characters escaped, at most ``limit`` characters (None: not cut)."""
    text = _redacted(text, secrets)
    text = _one_spaced(text)
    needles = _needles(_could_be_quoted(text, sent), escaped="\\" in text)
    if needles:
        text = _mask(text, needles)
    text = escape_controls(text)
    return text if limit is None else _cut(text, limit)


def secret_forms(*values: str) -> tuple[str, ...]:
    """What to redact for these secret values: each as given and stripped of surrounding
    whitespace (a server echoes a header value stripped), as a JSON string holds it, and — for a
    ``user:password`` pair — in base64 as ``Basic`` credentials carry it (UTF-8 as httpx encodes
    it, Latin-1 as aiohttp does). Empty values are skipped; no form twice."""
    out: dict[str, None] = {}  # ordered, unique
    for value in values:
        for form in (value, value.strip()):
            if not form:
                continue
            out[form] = None
            out[json.dumps(form)[1:-1]] = None  # non-ASCII as \u escapes
            out[orjson.dumps(form).decode()[1:-1]] = None
            if ":" in form:
                out.update(dict.fromkeys(sorted(basic_forms(form))))
    return tuple(out)


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


# -- secrets ---------------------------------------------------------------------------------


def _redacted(text: str, secrets: Iterable[str]) -> str:
    """Every secret in ``text``, in any letter case, as ``[redacted]`` (a server may echo a key
    upper- or lower-cased; a base64 form matched in another case is redacted needlessly but
    harmlessly)."""
    folded: str | None = None
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        if not secret:
            continue
        if folded is None:
            folded = _fold(text)
        needle = _fold(secret)
        start = folded.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle)))
            start = folded.find(needle, start + 1)  # overlapping ones too: merged below
    if not spans:
        return text
    spans.sort()
    pieces: list[str] = []
    end_of_last = 0
    for start, end in spans:
        if start < end_of_last:  # overlaps the last one: widen it
            end_of_last = max(end_of_last, end)
            continue
        pieces.append(text[end_of_last:start])
        pieces.append(_REDACTED)
        end_of_last = end
    pieces.append(text[end_of_last:])
    return "".join(pieces)


def _fold(text: str) -> str:
    """``text`` for case-insensitive matching, one character for one character (see the module
    docstring): ``str.lower``, with U+0130 — the one character it makes two — taken as i."""
    folded = text.lower()
    if len(folded) != len(text):
        folded = text.replace("\u0130", "i").lower()
    return folded


# -- matching ------------------------------------------------------------------------------


class _Needle:
    """One form of one sent text (as sent or JSON-escaped; whitespace-collapsed, lowered)."""

    __slots__ = ("full_chars", "label", "text")

    def __init__(self, label: str, text: str, full_chars: int) -> None:
        self.label = label
        self.text = text
        self.full_chars = full_chars  # the length of the text as sent, for the marker


def _one_spaced(text: str) -> str:
    """Whitespace runs as one space, trimmed (``str.split`` is several times faster than a
    regular expression on long text)."""
    return " ".join(text.split())


def _could_be_quoted(text: str, sent: Iterable[SentText]) -> Iterable[SentText]:
    """The sent texts that ``text`` (one-spaced) may quote. Only a text without a space or a
    backslash is judged here — a model name, on every answer: a stretch it shares with a sent
    text has no whitespace either, so it is found in the sent text as it is (lowered), without
    the cost of collapsing the sent text's whitespace. Other texts: all of them."""
    if " " in text or "\\" in text:
        return sent
    folded = _fold(text)
    grams = [folded[i : i + GRAM_CHARS] for i in range(0, len(folded) - GRAM_CHARS + 1, GRAM_STEP)]
    out: list[SentText] = []
    for label, original in sent:
        if len(original) < MIN_WHOLE_CHARS:
            continue
        body = _fold(original)
        whole = body.strip()  # a short sent text can only be in it whole if it has no space
        if (len(whole) < MIN_QUOTE_CHARS and whole in folded) or any(g in body for g in grams):
            out.append((label, original))
    return out


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
            as_utf8 = orjson.dumps(original).decode()[1:-1]  # as a JSON body holds it
            as_ascii = json.dumps(original)[1:-1]  # the same, non-ASCII as \\u escapes
            forms += (
                as_utf8,
                as_ascii,
                as_utf8.translate(_GO_ESCAPED),
                as_ascii.translate(_DOTNET_ESCAPED).replace('\\"', "\\u0022"),
            )
        # Collapsed like the error text is, so re-flowed whitespace still matches; lowered as
        # the error text is for matching (which also equates \\u00FC with \\u00fc).
        for form in forms:
            form = _fold(_one_spaced(form))
            if len(form) >= MIN_WHOLE_CHARS and form not in seen:
                seen.add(form)
                out.append(_Needle(label, form, len(original)))
    return out


def _mask(text: str, needles: list[_Needle]) -> str:
    folded = _fold(text)  # as long as text: spans found in it are spans of text
    spans = _whole_occurrences(folded, needles) + _common_stretches(folded, needles)
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
    texts (``str.find``, fast C), a long one against an index of the sent texts' grams.

    Both walks rest on one fact: every such stretch is the union of the MIN_QUOTE_CHARS-long
    windows in it, and each window holds a gram at a multiple of GRAM_STEP (of the error text
    when its grams are looked up, of the sent text when those are indexed) at most
    GRAM_STEP - 1 characters from its start. So every window of the result is found from the
    gram it holds, and a walk may skip a gram only if all the windows through it are covered."""
    long_needles = [n for n in needles if len(n.text) >= MIN_QUOTE_CHARS]
    if not long_needles:
        return []
    if len(text) <= FIND_TEXT_MAX:
        return _stretches_by_find(text, long_needles)
    return _stretches_by_index(text, long_needles)


def _stretches_by_find(text: str, needles: list[_Needle]) -> list[_Span]:
    spans: list[_Span] = []
    last_span: _Span | None = None
    i, last = 0, len(text) - GRAM_CHARS
    while i <= last:
        found = _stretches_through(text, i, needles, last_span)
        if not found:
            i += GRAM_STEP
            continue
        spans += found
        last_span = max(found, key=lambda s: s[1])
        # All found stretches hold this gram, so they cover one run from their first start
        # (<= i) to the last end: later grams whose windows all end inside it add nothing.
        resume = last_span[1] - MIN_QUOTE_CHARS + 1
        i = max(i + GRAM_STEP, resume + (-resume) % GRAM_STEP)
    return spans


def _stretches_through(
    text: str, at: int, needles: list[_Needle], last_span: _Span | None
) -> list[_Span]:
    """The common stretches through the gram at ``text[at:]``: grown from the gram's first
    places in each sent text, and from its windows where the gram has more places."""
    gram = text[at : at + GRAM_CHARS]
    found: list[_Span] = []
    for needle in needles:
        body = needle.text
        pos = body.find(gram)
        for _ in range(MAX_TRIES_PER_GRAM):
            if pos < 0:
                break
            start, end = _grow(text, at, body, pos, GRAM_CHARS)
            if end - start >= MIN_QUOTE_CHARS:
                found.append((start, end, needle))
            pos = body.find(gram, pos + 1)
        if pos < 0:
            continue
        # Repetitive sent text: the place that explains a window may be one not tried.
        for j in _windows_through(at, len(text)):
            if _covered(j, found, last_span):
                continue
            place = body.find(text[j : j + MIN_QUOTE_CHARS])
            if place >= 0:
                found.append((*_grow(text, j, body, place, MIN_QUOTE_CHARS), needle))
    return found


_Place = tuple[_Needle, int]


def _stretches_by_index(text: str, needles: list[_Needle]) -> list[_Span]:
    # Each gram's first place, and the further places of a gram that has more (two dicts: a
    # list for every gram would make the index, most of the cost here, ~1.5 times as slow).
    first_place: dict[str, _Place] = {}
    more_places: dict[str, list[_Place]] = {}
    for needle in needles:
        body = needle.text
        for pos in range(0, len(body) - GRAM_CHARS + 1, GRAM_STEP):
            gram = body[pos : pos + GRAM_CHARS]
            place = (needle, pos)
            if first_place.setdefault(gram, place) is not place:
                more_places.setdefault(gram, []).append(place)
    windows_of: dict[str, dict[str, _Place]] = {}  # for repeated grams, made on first use
    spans: list[_Span] = []
    last_span: _Span | None = None
    i, last = 0, len(text) - GRAM_CHARS
    while i <= last:
        gram = text[i : i + GRAM_CHARS]
        first = first_place.get(gram)
        if first is None:
            i += 1
            continue
        places = [first, *more_places.get(gram, ())]
        found: list[_Span] = []
        for needle, pos in places[:MAX_TRIES_PER_GRAM]:
            start, end = _grow(text, i, needle.text, pos, GRAM_CHARS)
            if end - start >= MIN_QUOTE_CHARS:
                found.append((start, end, needle))
        if len(places) > MAX_TRIES_PER_GRAM:
            windows = windows_of.get(gram)
            if windows is None:
                windows = windows_of[gram] = _windows_around(places)
            for j in _windows_through(i, len(text)):
                if _covered(j, found, last_span):
                    continue
                hit = windows.get(text[j : j + MIN_QUOTE_CHARS])
                if hit is not None:
                    needle, window_pos = hit
                    grown = _grow(text, j, needle.text, window_pos, MIN_QUOTE_CHARS)
                    found.append((*grown, needle))
        if not found:
            i += 1
            continue
        spans += found
        first_start = min(s[0] for s in found)
        last_span = max(found, key=lambda s: s[1])
        # A window that starts before the run found may hold its indexed gram up to
        # GRAM_STEP - 1 characters into the run, so those positions are still walked; after
        # them, the walk resumes where windows start to reach past the run.
        if i + 1 < first_start + GRAM_STEP - 1:
            i += 1
        else:
            i = max(i + 1, last_span[1] - MIN_QUOTE_CHARS + 1)
    return spans


def _windows_through(at: int, text_chars: int) -> range:
    """Starts of the MIN_QUOTE_CHARS-long windows of the text that hold the gram at ``at``."""
    first = max(0, at - (MIN_QUOTE_CHARS - GRAM_CHARS))
    return range(first, min(at, text_chars - MIN_QUOTE_CHARS) + 1)


def _windows_around(places: list[_Place]) -> dict[str, _Place]:
    """The sent texts' MIN_QUOTE_CHARS-long windows that hold a gram at one of ``places``."""
    windows: dict[str, _Place] = {}
    for needle, pos in places:
        body = needle.text
        for start in _windows_through(pos, len(body)):
            windows.setdefault(body[start : start + MIN_QUOTE_CHARS], (needle, start))
    return windows


def _covered(start: int, found: list[_Span], last_span: _Span | None) -> bool:
    """The window at ``start`` lies inside a stretch found already (a cheap, partial check:
    a window it misses is only looked up needlessly)."""
    end = start + MIN_QUOTE_CHARS
    if last_span is not None and last_span[0] <= start and end <= last_span[1]:
        return True
    return any(s <= start and end <= e for s, e, _ in found)


def _grow(text: str, at: int, body: str, pos: int, matched: int) -> tuple[int, int]:
    """The longest common stretch around ``text[at:at + matched]``, which is
    ``body[pos:pos + matched]``."""
    back = _common_run(text, at, body, pos, backwards=True)
    ahead = _common_run(text, at + matched, body, pos + matched, backwards=False)
    return at - back, at + matched + ahead


def _common_run(a: str, i: int, b: str, j: int, *, backwards: bool) -> int:
    """How many characters ``a`` and ``b`` share going on from ``a[i]``/``b[j]`` (or back from
    just before them). Compared in slices that double while they match and halve when not: a
    quote of a whole prompt costs a few dozen slice compares in C, not a Python loop over it."""
    limit = min(i, j) if backwards else min(len(a) - i, len(b) - j)
    n, step = 0, 8
    while n < limit and step:
        k = min(step, limit - n)
        if backwards:
            same = a[i - n - k : i - n] == b[j - n - k : j - n]
        else:
            same = a[i + n : i + n + k] == b[j + n : j + n + k]
        if same:
            n += k
            step *= 2
        else:
            step = k // 2
    return n
