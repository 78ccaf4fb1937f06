"""Text from outside — what a server sent, what a record holds — made safe to print: its control
characters become visible escapes, so nothing it carries can drive a terminal (clear the screen,
set a window title, reorder what follows it).

Imports nothing from ddscope, so every layer can use it: the engine's error scrub, the
exporters' warnings and health lines, the CLI's output.
"""

from __future__ import annotations

import re

# C0/C1 controls, DEL, and the invisible direction marks/overrides ("Trojan Source").
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    r"""Control characters as visible escapes (``\x1b``, ``\u202e``); other text unchanged.
    Escaping twice changes nothing more (a backslash is not a control character)."""
    return _CONTROLS.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
