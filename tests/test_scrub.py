"""scrub_error_text: what a server's error text may still say once it becomes an event."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

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
