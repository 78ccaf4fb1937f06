"""One progress view for a job of several workers, read from their records as they grow.

Each worker writes its own record (flushed at least every 100 ms); :class:`JobProgress` reads
what was appended since the last look — only whole lines, and only the few kinds it counts — and
shows one line for the whole job: workers running, rows done and dropped out of the job's
total, requests and 429s, cooldowns seen. On a terminal the line updates in place; otherwise a
plain line is printed every ``PLAIN_EVERY_S`` (so a log shows a stalled job as lines without
progress, never as silence). Text from the records is numbers only, never server text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import orjson

PLAIN_EVERY_S = 2.0
_COUNTED = (b'"row_group_finished"', b'"attempt_finished"', b'"cooldown_started"')


@dataclass
class _Tail:
    path: Path
    offset: int = 0


@dataclass
class JobTally:
    rows_done: int = 0
    rows_dropped: int = 0
    requests: int = 0
    rate_limited: int = 0
    cooldowns: int = 0


@dataclass
class JobProgress:
    out: TextIO
    total_rows: int
    workers: int
    quiet: bool = False
    tally: JobTally = field(default_factory=JobTally)
    _tails: dict[Path, _Tail] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _last_plain: float = 0.0

    def update(self, part_dirs: list[Path], running: int) -> None:
        """Reads what the workers appended and redraws (or prints, see the module)."""
        for part in part_dirs:
            for path in sorted(part.glob("run*.jsonl")):
                self._read(self._tails.setdefault(path, _Tail(path)))
        if self.quiet:
            return
        now = time.monotonic()
        line = self.line(running)
        if self.out.isatty():
            self.out.write("\r" + line + "\x1b[K")
            self.out.flush()
        elif now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            self.out.write(line + "\n")
            self.out.flush()

    def line(self, running: int) -> str:
        t = self.tally
        elapsed = time.monotonic() - self._started
        return (
            f"[{elapsed:6.1f} s] {running}/{self.workers} workers running · rows "
            f"{t.rows_done:,}/{self.total_rows:,} done, {t.rows_dropped:,} dropped · "
            f"{t.requests:,} requests, {t.rate_limited:,} × 429, {t.cooldowns:,} cooldowns"
        )

    def finish(self) -> None:
        if not self.quiet and self.out.isatty():
            self.out.write("\n")
            self.out.flush()

    def _read(self, tail: _Tail) -> None:
        try:
            with tail.path.open("rb") as handle:
                handle.seek(tail.offset)
                chunk = handle.read()
        except OSError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        tail.offset += end + 1
        for line in chunk[: end + 1].splitlines():
            if any(kind in line for kind in _COUNTED):
                self._count(line)

    def _count(self, line: bytes) -> None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        kind, t = event.get("kind"), self.tally
        if kind == "row_group_finished":
            t.rows_done += int(event.get("rows_completed", 0))
            t.rows_dropped += int(event.get("rows_dropped", 0))
        elif kind == "attempt_finished":
            t.requests += 1
            t.rate_limited += event.get("outcome") == "rate_limited"
        elif kind == "cooldown_started":
            t.cooldowns += 1
