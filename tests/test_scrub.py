"""scrub_error_text: what a server's error text may still say once it becomes an event."""

from __future__ import annotations

import base64
import json
import random
import re
import time
from typing import Any

import orjson
import pytest

from ddscope.engine.client import scrub
from ddscope.engine.client.scrub import (
    ERROR_TEXT_LIMIT,
    MIN_QUOTE_CHARS,
    cut_notice_text,
    escape_controls,
    scrub_error_text,
    sent_texts,
)

PROMPT = (
    "Write a product description for the Zephyr kettle, mention its 1.7 litre capacity and "
    "the walnut handle. Marker PROMPT-7f3a9c."
)
SYSTEM = "You are a careful copywriter who never invents specifications."


def test_a_quoted_prompt_becomes_a_marker_with_its_length() -> None:
    text = f"upstream failed on: {PROMPT}"
    out = scrub_error_text(text, sent=[("prompt", PROMPT)], limit=None)
    assert out == f"upstream failed on: <prompt:{len(PROMPT)} chars>"


def test_part_of_a_prompt_is_masked_and_says_how_much() -> None:
    excerpt = PROMPT[10:70]
    out = scrub_error_text(f"content filter hit in '{excerpt}'", sent=[("prompt", PROMPT)])
    assert excerpt not in out
    assert f"<prompt:{len(excerpt)} of {len(PROMPT)} chars>" in out
    assert out.startswith("content filter hit in '") and out.endswith("'")


def test_every_quote_and_every_sent_text_is_masked() -> None:
    sent = sent_texts(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        {"summary": "A kettle that boils quietly and pours cleanly.", "topic": "a"},
    )
    text = f"system={SYSTEM} user={PROMPT} again {PROMPT} value=A kettle that boils quietly"
    out = scrub_error_text(text, sent=sent, limit=None)
    for secret_part in ("careful copywriter", "Zephyr", "PROMPT-7f3a9c", "boils quietly"):
        assert secret_part not in out
    assert out.count(f"<prompt:{len(PROMPT)} chars>") == 2
    assert f"<system prompt:{len(SYSTEM)} chars>" in out
    assert out.startswith("system=<system prompt") and " value=<" in out


def test_reflowed_whitespace_and_json_escaped_quotes_are_matched() -> None:
    prompt = 'Line one of the "prompt" here\n\nline two — café ünïcode SECRET-42x'
    reflowed = f"bad input: {' '.join(prompt.split())}"
    escaped_utf8 = '{"error": {"message": "bad input: ' + orjson.dumps(prompt).decode()[1:-1]
    escaped_ascii = '{"error": {"message": "bad input: ' + json.dumps(prompt)[1:-1]
    for text in (reflowed, escaped_utf8, escaped_ascii):
        out = scrub_error_text(text, sent=[("prompt", prompt)], limit=None)
        assert "SECRET-42x" not in out and "Line one" not in out, out
        assert f"<prompt:{len(prompt)} chars>" in out, out


def test_short_values_are_masked_only_whole_and_tiny_ones_not_at_all() -> None:
    sent = [("column city", "Lisbon"), ("column flag", "yes")]
    out = scrub_error_text("no route to Lisbon, says yes", sent=sent)
    assert out == "no route to <column city:6 chars>, says yes"


def test_common_words_shorter_than_a_quote_are_left_alone() -> None:
    prompt = "Please summarise the request body for the team."
    text = "a request body was too large for the model"
    assert scrub_error_text(text, sent=[("prompt", prompt)]) == text
    assert len(" request body ") < MIN_QUOTE_CHARS  # the shared stretch is below the bound


def test_secrets_are_redacted_before_anything_else() -> None:
    key = "sk-test-" + "k" * 32
    out = scrub_error_text(f"bad key {key} for {PROMPT}", sent=[("prompt", PROMPT)], secrets=[key])
    assert key not in out and "[redacted]" in out and "<prompt:" in out


def test_control_characters_are_escaped_so_a_terminal_is_not_driven() -> None:
    text = "boom\x1b[2J\x1b]0;pwned\x07 \u202eevil\x9b31m\x00end\ttab\nnewline"
    out = scrub_error_text(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert "\u202e" not in out
    assert out == "boom\\x1b[2J\\x1b]0;pwned\\x07 \\u202eevil\\x9b31m\\x00end tab newline"
    assert escape_controls("plain text ü") == "plain text ü"


def test_long_text_is_cut_to_the_limit_stating_the_full_length() -> None:
    text = "x" * 5000
    out = scrub_error_text(text)
    assert len(out) == ERROR_TEXT_LIMIT
    assert out.endswith("… (cut; 5,000 chars in all)")
    assert scrub_error_text("short") == "short"


def test_the_cut_comes_after_masking_so_a_long_quote_is_masked_whole() -> None:
    prompt = "HEAD-991 " + "word " * 2000 + "TAIL-MARKER-991"
    out = scrub_error_text(f"failed on: {prompt}", sent=[("prompt", prompt)])
    assert out == f"failed on: <prompt:{len(prompt)} chars>"


def test_sent_texts_labels_messages_and_skips_non_text_values() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "text", "text": "parts"}]},
        {"role": "user", "content": "last"},
    ]
    labels = sent_texts(messages, {"n": 42, "name": "Ada"})
    assert labels == [
        ("system prompt", "sys"),
        ("message 2", "first"),
        ("message 3", "parts"),
        ("prompt", "last"),
        ("column name", "Ada"),
    ]


@pytest.mark.parametrize("size", [65_536])
def test_a_large_error_text_against_a_large_prompt_is_scrubbed_in_bounded_time(size: int) -> None:
    prompt = " ".join(f"w{i}" for i in range(20_000))  # ≈ 130 KB of sent text
    text = ("garbage " * (size // 8))[: size - 200] + prompt[5000:5150]
    started = time.process_time()
    out = scrub_error_text(text, sent=[("prompt", prompt)])
    assert prompt[5000:5150] not in scrub_error_text(text, sent=[("prompt", prompt)], limit=None)
    assert len(out) == ERROR_TEXT_LIMIT
    assert time.process_time() - started < 10  # generous: it takes well under a second


def test_the_cut_never_leaves_half_a_marker() -> None:
    prompt = "A prompt that the server quoted back in full, SECRET-X1."
    text = "e" * (ERROR_TEXT_LIMIT - 40) + " " + prompt + " " + "t" * 300
    out = scrub_error_text(text, sent=[("prompt", prompt)])
    assert len(out) <= ERROR_TEXT_LIMIT
    assert "<prompt" not in out or f"<prompt:{len(prompt)} chars>" in out
    assert out.endswith("chars in all)")


def test_a_notice_from_an_earlier_cut_is_kept_when_cut_again() -> None:
    text = "y" * 1000 + cut_notice_text("52,428,882 bytes")
    out = scrub_error_text(text)
    assert len(out) == ERROR_TEXT_LIMIT
    assert out.endswith("y… (cut; 52,428,882 bytes in all)")
    short = "quota exceeded" + cut_notice_text("70,000 bytes")
    assert scrub_error_text(short) == short


# -- letter case and escapes -------------------------------------------------------------------


def test_a_quote_in_another_letter_case_is_masked_in_place() -> None:
    for quoted in (PROMPT.upper(), PROMPT.lower(), PROMPT.title()):
        out = scrub_error_text(f"rejected input: {quoted} (policy 7)", sent=[("prompt", PROMPT)])
        assert out == f"rejected input: <prompt:{len(PROMPT)} chars> (policy 7)", out
    # U+0130 lowers to two characters: the masked span still lands where the quote is.
    text = f"İİ rejected: {PROMPT.upper()} İ"
    out = scrub_error_text(text, sent=[("prompt", PROMPT)], limit=None)
    assert out == f"İİ rejected: <prompt:{len(PROMPT)} chars> İ"
    assert scrub_error_text("NO ROUTE TO LISBON", sent=[("column city", "Lisbon")]) == (
        "NO ROUTE TO <column city:6 chars>"
    )


GERMAN = (
    "Herr Jürgen Müller, geboren 1970 in Köln, wohnt in der Hauptstraße 5 und hat die "
    "Kontonummer DE89 3704."
)


def test_unicode_escapes_in_either_hex_case_are_matched() -> None:
    """A gateway that wraps the upstream's JSON error in its own message: .NET and Java write
    non-ASCII as upper-case \\u escapes."""
    inner = json.dumps({"error": {"message": "Invalid prompt: " + GERMAN}})
    upper_hex = inner.replace("\\u00fc", "\\u00FC").replace("\\u00f6", "\\u00F6")
    upper_hex = upper_hex.replace("\\u00df", "\\u00DF")
    assert "\\u00FC" in upper_hex
    for wrapped in (inner, upper_hex):
        out = scrub_error_text(f"gateway: upstream said {wrapped}", sent=[("prompt", GERMAN)])
        assert out.endswith(f'"Invalid prompt: <prompt:{len(GERMAN)} chars>"}}}}'), out
        assert "rgen" not in out and "Konto" not in out


def test_html_safe_escapes_as_go_and_dotnet_write_them_are_matched() -> None:
    prompt = 'Summarise <b>Ada\'s</b> notes & "quotes" + back`ticks` for ID-5531 please.'
    go = orjson.dumps(prompt).decode()[1:-1]
    for char in "<>&":
        go = go.replace(char, f"\\u{ord(char):04x}")
    dotnet = json.dumps(prompt)[1:-1].replace('\\"', "\\u0022")
    for char in "<>&'+`":
        dotnet = dotnet.replace(char, f"\\u{ord(char):04X}")
    for escaped in (go, dotnet):
        out = scrub_error_text(f'{{"message": "bad: {escaped}"}}', sent=[("prompt", prompt)])
        assert out == f'{{"message": "bad: <prompt:{len(prompt)} chars>"}}', out


def test_secrets_are_redacted_in_any_letter_case() -> None:
    key = "sk-Test-AbCdEf-123456"
    text = f"key {key.lower()} / {key.upper()} / {key} refused"
    assert scrub_error_text(text, secrets=[key]) == (
        "key [redacted] / [redacted] / [redacted] refused"
    )
    # Overlapping secrets become one redaction, not a half-redacted tail.
    assert scrub_error_text("token abcdef123", secrets=["abcdef", "def123"]) == ("token [redacted]")


def test_secret_forms_cover_what_a_server_may_echo() -> None:
    from ddscope.engine.client.scrub import secret_forms

    forms = secret_forms(" sk-key-1\n", "user:pässword", "")
    assert "sk-key-1" in forms and " sk-key-1\n" in forms
    assert "user:p\\u00e4ssword" in forms  # as a JSON string holds it
    for encoding in ("utf-8", "latin-1"):  # Basic credentials, as httpx / aiohttp send them
        assert base64.b64encode("user:pässword".encode(encoding)).decode() in forms
    assert "" not in forms and len(forms) == len(set(forms))
    assert base64.b64encode(b"sk-key-1").decode() not in forms  # not a user:password pair


# -- repeated phrases: every stretch of MIN_QUOTE_CHARS or more -------------------------------


def test_a_quote_of_a_repeated_phrase_is_masked_in_a_long_error_text() -> None:
    """The gram index kept only a gram's first place: a quote that only a later one explains
    escaped in texts over 2 KiB."""
    prompt = "patient id: A-1001; patient id: B-7734; "
    quote = " patient id: B-7"
    assert len(quote) >= MIN_QUOTE_CHARS
    for pad in (0, 3000):  # the find path and the index path
        text = f"refused:{quote} tail " + "x" * pad
        out = scrub_error_text(text, sent=[("prompt", prompt)], limit=None)
        assert out.startswith(f"refused:<prompt:{len(quote)} of {len(prompt)} chars> tail"), out


@pytest.mark.parametrize("pad", [0, 3000])
def test_a_quote_of_a_phrase_repeated_more_often_than_grams_are_tried_is_masked(pad: int) -> None:
    """A 15-character quote whose only whole gram is a label the prompt repeats 60 times, and
    whose rest follows the label only from its 22nd place on: beyond the places grown from."""
    prompt = "".join(f"patient id: {chr(65 + i % 26)}-{1000 + i}; " for i in range(60))
    quote = "patient id: V-1"
    assert len(quote) == MIN_QUOTE_CHARS and prompt.index(quote) == 21 * 20
    text = f"refused:{quote}| " + "y" * pad  # the quote starts on a gram boundary (8)
    out = scrub_error_text(text, sent=[("prompt", prompt)])
    assert out.startswith(f"refused:<prompt:{len(quote)} of {len(prompt)} chars>|"), out


def _brute_force_cover(text: str, body: str) -> set[int]:
    """The positions of ``text`` inside some MIN_QUOTE_CHARS-long window that ``body`` holds."""
    covered: set[int] = set()
    for start in range(len(text) - MIN_QUOTE_CHARS + 1):
        if text[start : start + MIN_QUOTE_CHARS] in body:
            covered.update(range(start, start + MIN_QUOTE_CHARS))
    return covered


@pytest.mark.parametrize("seed", range(4))
def test_every_common_stretch_is_masked_as_brute_force_finds_it(seed: int) -> None:
    """Repetitive sent texts (a few phrases in many orders) and error texts made of pieces of
    them: what is masked is exactly what a brute-force search of every window finds."""
    rng = random.Random(seed)
    for _ in range(150):
        phrases = ["".join(rng.choice("abcd-") for _ in range(rng.randint(3, 14))) for _ in "xyz"]
        body = "".join(rng.choice(phrases) + rng.choice(["", "x", "yz"]) for _ in range(60))
        pieces = []
        for _ in range(rng.randint(1, 8)):
            start = rng.randrange(len(body))
            pieces.append(body[start : start + rng.randint(5, 40)])
            pieces.append("".join(rng.choice("abxyz-") for _ in range(rng.randint(1, 6))))
        text = "".join(pieces) + rng.choice(["", "#" * 2100])  # the find path, the index path
        out = scrub_error_text(text, sent=[("prompt", body)], limit=None)
        covered = _brute_force_cover(text, body)
        expected = "".join("\0" if i in covered else c for i, c in enumerate(text))
        masked = re.sub(r"\0+", "<>", expected)
        assert re.sub(r"<prompt:[^>]*>", "<>", out) == masked, (text, body)


def test_text_without_spaces_is_judged_as_the_full_walk_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model name (no space) is first checked against the sent texts as they are: the result
    is the one the full walk gives."""
    rng = random.Random(7)
    url = "https://records.example/patients/A-1001/notes?token=PROMPT-7f3a9c-Zephyr-kettle"
    sent = [("prompt", f"Summarise {url} for\nthe team."), ("column city", "Lisbon")]
    names = ["gpt-4o-2024-08-06", "Lisbon", "LISBON-eu", "x" * 30]
    for _ in range(300):
        start = rng.randrange(len(url))
        piece = url[start : start + rng.randint(4, 40)]
        names.append(rng.choice(["m-", ""]) + rng.choice([piece, piece.upper()]))
    fast = [scrub_error_text(n, sent=sent, secrets=["sk-x"]) for n in names]
    monkeypatch.setattr(scrub, "_could_be_quoted", lambda text, sent: sent)
    assert fast == [scrub_error_text(n, sent=sent, secrets=["sk-x"]) for n in names]
    assert fast[:3] == ["gpt-4o-2024-08-06", "<column city:6 chars>", "<column city:6 chars>-eu"]
    assert sum("<prompt:" in f for f in fast) > 100


def test_a_long_text_of_repeated_fragments_is_scrubbed_in_bounded_time() -> None:
    """Adversarial: a 64 KiB text made of a 12-character label the prompt repeats 5,000 times,
    none of it a 15-character quote — every place of it is a hit that grows to nothing."""
    rng = random.Random(3)
    prompt = "".join(f"patient id: {rng.randrange(10**6):06d}; " for _ in range(5000))
    text = ("patient id: ZZZ" * 5000)[:65_536]
    started = time.process_time()
    out = scrub_error_text(text, sent=[("prompt", prompt)], limit=None)
    assert time.process_time() - started < 10  # generous: it takes a small part of a second
    assert "<prompt" not in out
