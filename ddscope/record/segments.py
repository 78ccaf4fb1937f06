"""Segments: a run's record may span several files read as one run.

``run.jsonl`` is segment 0; a resumed run writes ``run.1.jsonl``, ``run.2.jsonl`` … beside it,
each with its own header (same ``run_id``, its ``segment`` number). See ``record.jsonl``.
"""

from __future__ import annotations

import re
from pathlib import Path


def segment_path(base: str | Path, segment: int) -> Path:
    """``run.jsonl`` for segment 0, ``run.N.jsonl`` for segment N."""
    base = Path(base)
    if segment == 0:
        return base
    return base.with_name(f"{base.stem}.{segment}{base.suffix}")


def record_parts(base: str | Path) -> list[Path]:
    """The existing parts of the record at ``base`` (segment 0), in order: ``base``, then
    ``run.1.jsonl``, ``run.2.jsonl`` … as long as they follow on without a gap."""
    base = Path(base)
    parts = [base]
    while (nxt := segment_path(base, len(parts))).exists():
        parts.append(nxt)
    return parts


def stale_segments(base: Path) -> list[Path]:
    pattern = re.compile(re.escape(base.stem) + r"\.\d+" + re.escape(base.suffix) + r"\Z")
    if not base.parent.is_dir():
        return []
    return [p for p in base.parent.iterdir() if pattern.match(p.name)]
