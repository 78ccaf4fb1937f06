"""The run record: ``run.jsonl`` writer (an event sink) and a tolerant streaming reader.

Writer: header first, then one event per line. Lines are buffered and flushed at least every
``flush_interval_s`` (100 ms) by a small background thread and on close, so a process killed
mid-run leaves a readable file that lost at most the last flush interval.

Reader: one pass, one line at a time, so memory stays flat however long the run. Each line is
validated against the contract. Forgiven, with a counted warning: kinds this version does not
know (a newer writer), and a truncated last line (a killed writer). Not forgiven unless
``lenient``: a corrupt line in the middle, reported as ``file:line: reason``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from ddscope.errors import RecordError
from ddscope.events import EVENT_KINDS, Event, RunHeader, event_adapter

FLUSH_INTERVAL_S = 0.1


class JsonlRecorder:
    """Event sink writing ``run.jsonl``. Thread-safe: the flusher thread shares the buffer."""

    def __init__(self, path: str | Path, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = Path(path)
        self._interval = flush_interval_s
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._file: IO[str] | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.events_written = 0

    def open(self, header: RunHeader) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._file.write(header.model_dump_json(by_alias=True, exclude_none=True) + "\n")
        self._file.flush()
        self._flusher = threading.Thread(target=self._flush_loop, name="ddscope-jsonl", daemon=True)
        self._flusher.start()

    def handle(self, event: Event) -> None:
        line = event.model_dump_json(exclude_none=True)
        with self._lock:
            self._buffer.append(line)
            self.events_written += 1

    def flush(self) -> None:
        with self._lock:
            if self._file is None or not self._buffer:
                return
            self._file.write("\n".join(self._buffer) + "\n")
            self._buffer.clear()
            self._file.flush()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()


@dataclass
class ReadStats:
    """What the reader forgave. ``warnings`` are one-line, ``file:line: reason`` messages."""

    events: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)
    truncated_last_line: bool = False
    corrupt_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def unknown_total(self) -> int:
        return sum(self.unknown_kinds.values())


class RunReader:
    """Streams a run record: ``reader.header`` after construction, then iterate for events.

    >>> reader = RunReader("run.jsonl")          # doctest: +SKIP
    >>> for event in reader: ...                  # doctest: +SKIP
    >>> reader.stats.warnings                     # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, lenient: bool = False) -> None:
        self.path = Path(path)
        self.lenient = lenient
        self.stats = ReadStats()
        try:
            self._file: IO[bytes] = self.path.open("rb")
        except OSError as exc:
            raise RecordError(f"{self.path}: cannot open: {exc.strerror or exc}") from exc
        self._line_no = 0
        self.header = self._read_header()

    def _read_header(self) -> RunHeader:
        raw = self._file.readline()
        self._line_no = 1
        if not raw:
            raise RecordError(f"{self.path}:1: empty file, expected a run header")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"{self.path}:1: header is not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("kind") != "header":
            raise RecordError(f"{self.path}:1: first line is not a ddscope run header")
        schema = str(data.get("schema", ""))
        if not schema.startswith("ddscope.run/"):
            raise RecordError(f"{self.path}:1: unknown schema {schema!r}")
        try:
            return RunHeader.model_validate(data)
        except ValidationError as exc:
            raise RecordError(f"{self.path}:1: bad header: {_first_error(exc)}") from exc

    def __iter__(self) -> Iterator[Event]:
        for line_no, data in self.iter_dicts():
            try:
                event = event_adapter.validate_python(data)
            except ValidationError as exc:
                self._bad_line(line_no, _first_error(exc), last=False)
                continue
            yield event

    def iter_dicts(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields ``(line_no, dict)`` of known kinds, JSON-parsed but not model-validated.

        For consumers that stream millions of events (health, Perfetto) and read fields by name;
        the line is still checked to be a JSON object with a known ``kind`` and a ``t_ns``.
        """
        # Hot path (S6: millions of lines): a well-formed line of a known kind is checked inline;
        # anything else goes through _parse, which decides exactly as before (skip or raise).
        loads, known, decode_error = orjson.loads, EVENT_KINDS, orjson.JSONDecodeError
        pending: bytes | None = None  # hold one line back: only the *last* may be truncated
        pending_no = line_no = self._line_no
        fast = 0  # events yielded by the fast path (added to stats even if the caller stops)
        try:
            for raw in self._file:
                line_no += 1
                if pending is not None:
                    try:
                        data = loads(pending)
                    except decode_error:
                        data = None
                    if (
                        type(data) is dict
                        and data.get("kind") in known
                        and type(data.get("t_ns")) is int
                    ):
                        fast += 1
                        yield pending_no, data
                    else:
                        data = self._parse(pending, pending_no, last=False)
                        if data is not None:
                            yield pending_no, data
                pending, pending_no = raw, line_no
            if pending is not None:
                data = self._parse(pending, pending_no, last=True)
                if data is not None:
                    yield pending_no, data
        finally:
            self._line_no = line_no
            self.stats.events += fast
            self._file.close()

    def _parse(self, raw: bytes, line_no: int, *, last: bool) -> dict[str, Any] | None:
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw)  # ~0.5 µs a line against ~3 µs for json.loads
        except orjson.JSONDecodeError as exc:
            self._bad_line(line_no, f"not JSON ({exc})", last=last and not raw.endswith(b"\n"))
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t_ns"), int):
            self._bad_line(line_no, "not an event object with an integer t_ns", last=False)
            return None
        kind = data.get("kind")
        if kind not in EVENT_KINDS:
            name = str(kind)
            self.stats.unknown_kinds[name] = self.stats.unknown_kinds.get(name, 0) + 1
            return None
        self.stats.events += 1
        return data

    def _bad_line(self, line_no: int, reason: str, *, last: bool) -> None:
        where = f"{self.path}:{line_no}"
        if last:
            self.stats.truncated_last_line = True
            self.stats.warnings.append(f"{where}: truncated last line skipped (writer stopped?)")
            return
        if not self.lenient:
            raise RecordError(f"{where}: {reason}")
        self.stats.corrupt_lines += 1
        self.stats.warnings.append(f"{where}: corrupt line skipped: {reason}")

    def finish_warnings(self) -> list[str]:
        """All warnings, including one line summarising skipped unknown kinds."""
        out = list(self.stats.warnings)
        if self.stats.unknown_kinds:
            kinds = ", ".join(f"{k}×{n}" for k, n in sorted(self.stats.unknown_kinds.items()))
            out.append(
                f"{self.path}: skipped {self.stats.unknown_total} events of unknown kinds "
                f"({kinds}); written by a newer ddscope?"
            )
        return out

    def close(self) -> None:
        self._file.close()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def read_events(path: str | Path, *, lenient: bool = False) -> tuple[RunHeader, list[Event]]:
    """Reads a whole record into memory. Convenience for tests and small records."""
    reader = RunReader(path, lenient=lenient)
    return reader.header, list(reader)
