"""Segments: a run's record may span several files read as one run.

``run.jsonl`` is segment 0; a resumed run writes ``run.1.jsonl``, ``run.2.jsonl`` … beside it,
each with its own header (same ``run_id``, its ``segment`` number). See ``record.jsonl``.

An *empty* last segment is not part of the run: a resume killed after creating its file but
before writing the header leaves one (the header is the first write). It holds nothing, so
:func:`record_parts` leaves it out (:func:`empty_last_segment` names it, for a warning) and the
rest of the run stays readable; the next resume writes that segment again.
"""

from __future__ import annotations

import errno
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
    ``run.1.jsonl``, ``run.2.jsonl`` … as long as they follow on without a gap; an empty last
    segment is left out (see the module)."""
    parts = _following(Path(base))
    if _is_empty_segment(parts):
        parts.pop()
    return parts


def empty_last_segment(base: str | Path) -> Path | None:
    """The empty last segment :func:`record_parts` leaves out, if there is one."""
    parts = _following(Path(base))
    return parts[-1] if _is_empty_segment(parts) else None


def _following(base: Path) -> list[Path]:
    parts = [base]
    while (nxt := segment_path(base, len(parts))).exists():
        parts.append(nxt)
    return parts


def _is_empty_segment(parts: list[Path]) -> bool:
    # Segment 0 is never left out: an empty run.jsonl is a broken record, not a stopped resume.
    last = parts[-1]
    return len(parts) > 1 and last.is_file() and last.stat().st_size == 0


def stale_segments(base: Path) -> list[Path]:
    """The files named like later segments of ``base`` (``run.N.jsonl``), for a new run to
    remove. One that is a directory is no segment a run wrote: an OSError naming it, rather
    than the unlink's bare "Is a directory" that the caller reports against ``base``."""
    found = segments_named_after(base)
    for path in found:
        if path.is_dir():
            raise IsADirectoryError(
                errno.EISDIR, f"{path} is a directory, not a record segment; move it away"
            )
    return found


def segments_named_after(base: Path) -> list[Path]:
    """Every ``run.N.jsonl`` beside ``base`` (N ≥ 1), whatever it is, sorted by N."""
    pattern = re.compile(re.escape(base.stem) + r"\.(\d+)" + re.escape(base.suffix) + r"\Z")
    if not base.parent.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in base.parent.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]
