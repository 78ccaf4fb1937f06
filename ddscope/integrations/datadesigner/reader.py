"""A DataDesigner ``scheduler_events.jsonl`` (plain or gzipped) read as a ddscope run record.

Same interface as :class:`ddscope.record.jsonl.RunReader` (``header``, ``iter_dicts()``,
iteration over validated events, ``stats``, ``finish_warnings()``, ``close()``), so health,
Perfetto, Chrome JSON and the OTLP replay read it unchanged.

*Segments.* DataDesigner appends to the file, and a resumed run starts a new segment (a new
``scheduler_job_started``; ``sequence`` starts again). Each segment is a run: the reader shows
one, by default the last, and says so when there are several (``segment=`` picks another;
``ddtrace convert`` writes each as its own run.jsonl).

*Wall clock.* The file has monotonic times only; a run's start is estimated from the file's
modification time (the last event's moment) and is marked ``settings.wall_clock: "estimated"``.

*What the file does not have* is said once, in the warnings, with the figures the health
snapshots do carry: no per-request events (waits, attempts, 429s, AIMD steps) — limit changes
and cooldowns are rebuilt from snapshots as of the snapshot; deferrals get their error kind from
the snapshots' outcome counts.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from ddscope import __version__
from ddscope.engine.client.scrub import scrub_error_text
from ddscope.errors import RecordError
from ddscope.events import Event, event_adapter
from ddscope.integrations.datadesigner.checks import TIME, check_event
from ddscope.integrations.datadesigner.layout import RunLayout, dependencies_from_config
from ddscope.integrations.datadesigner.notes import closing_notes
from ddscope.integrations.datadesigner.translate import RunTranslator
from ddscope.record.jsonl import ReadStats

GZIP_MAGIC = b"\x1f\x8b"
BUILDER_CONFIG = "builder_config.json"  # DataDesigner writes it beside scheduler_events.jsonl
HOLD_LIMIT = 50_000  # events held back waiting for a snapshot, at most (memory bound)
# A real line is ~1.7 KB (a big health snapshot a few tens); a longer one is not read whole, so
# a file without newlines cannot make the reader hold gigabytes.
MAX_LINE_BYTES = 16 << 20
TOO_LONG = f"line longer than {MAX_LINE_BYTES >> 20} MiB"


def open_bytes(path: Path) -> IO[bytes]:
    """The file's lines as bytes, gunzipped when it starts with the gzip magic."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise RecordError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def bounded_lines(file: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines; ``None`` for a line longer than MAX_LINE_BYTES (read past, not kept)."""
    while raw := file.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield raw


@dataclass
class Segment:
    first_line: int  # 1-based line of its scheduler_job_started
    job_started: dict[str, Any]


@dataclass
class Scan:
    segments: list[Segment] = field(default_factory=list)
    last_t: float | None = None  # the last event's monotonic time
    bad_starts: list[tuple[int, str]] = field(default_factory=list)  # (line, "field: why")

    def refuse_bad_start(self, path: Path) -> None:
        """Strict reading: a job start that cannot be read is the file's first error (without
        it, its segment's lines would silently join the one before)."""
        if self.bad_starts:
            line_no, why = self.bad_starts[0]
            raise RecordError(f"{path}:{line_no}: {why}")


def scan_segments(path: Path) -> Scan:
    """The segments of the file (each starts with a readable ``scheduler_job_started``), the
    last event's time and the job starts that fail :func:`check_event`, in one quick pass."""
    scan = Scan()
    with open_bytes(path) as file:
        try:
            for line_no, raw in enumerate(bounded_lines(file), 1):
                try:
                    data = orjson.loads(raw) if raw is not None else None
                except orjson.JSONDecodeError:
                    continue  # the main pass reports it with its line number
                if not isinstance(data, dict):
                    continue
                if data.get("event_kind") == "scheduler_job_started":
                    why = check_event(data, 0)
                    if why is None:
                        scan.segments.append(Segment(line_no, data))
                    else:
                        scan.bad_starts.append((line_no, why))
                t = data.get("captured_at_monotonic")
                if isinstance(t, int | float) and TIME(t) is None:
                    scan.last_t = float(t)
        except (OSError, EOFError) as exc:  # a cut gzip stream: keep what was read
            if not scan.segments:
                raise RecordError(f"{path}: cannot read: {exc}") from exc
    return scan


class DataDesignerReader:
    """Streams one segment of a DataDesigner scheduler event file as ddscope events."""

    def __init__(
        self, path: str | Path, *, lenient: bool = False, segment: int | None = None
    ) -> None:
        self.path = Path(path)
        self.lenient = lenient
        self.stats = ReadStats()
        scan = scan_segments(self.path)
        if not lenient or not scan.segments:  # lenient, but nothing left to read: say why
            scan.refuse_bad_start(self.path)
        segments, last_t = scan.segments, scan.last_t
        if not segments:
            raise RecordError(
                f"{self.path}:1: a DataDesigner scheduler event file without "
                "scheduler_job_started (not a complete run?)"
            )
        index = len(segments) if segment is None else segment
        if not 1 <= index <= len(segments):
            raise RecordError(f"{self.path}: segment {index} of {len(segments)} does not exist")
        self.segments = len(segments)
        self._orphan_lines = segments[0].first_line - 1  # before any job start: no run to join
        self.segment = index
        chosen = segments[index - 1]
        self._first_line = chosen.first_line
        self._end_line = segments[index].first_line if index < len(segments) else None
        for line_no, why in scan.bad_starts:  # lenient; the main pass warns about its own lines
            if index == 1 and line_no < self._first_line:
                self._bad_line(line_no, why, cut=False)
        origin = float(chosen.job_started["captured_at_monotonic"])  # checked by the scan
        dependencies = _dependencies(self.path.parent / BUILDER_CONFIG)
        self.layout = RunLayout.from_job_started(chosen.job_started, dependencies)
        self.header = self.layout.header(
            _estimated_start_ns(self.path, origin, last_t),
            f"datadesigner:{self.path.parent.name or 'dataset'}",
            __version__,
            wall_clock="estimated from the file's modification time",
            segment=f"{index} of {len(segments)}",
        )
        self.translator = RunTranslator(
            self.layout, origin, request_events=False, scrub=lambda text: scrub_error_text(text)
        )
        self._file: IO[bytes] | None = None

    def __iter__(self) -> Iterator[Event]:
        for line_no, data in self.iter_dicts():
            try:
                yield event_adapter.validate_python(data)
            except ValidationError as exc:  # a translation bug, not the user's file
                raise RecordError(f"{self.path}:{line_no}: cannot translate: {exc}") from exc

    def iter_dicts(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line_no, ddscope event dict)`` in time order; ``line_no`` is the DataDesigner line
        that produced the event."""
        held: list[tuple[int, dict[str, Any]]] = []
        translator = self.translator
        for line_no, event in self._segment_events():
            out = translator.start() if line_no == self._first_line else []
            out += translator.scheduler(event)
            held.extend((line_no, d) for d in out)
            if not translator.holding or len(held) > HOLD_LIMIT:
                if translator.holding:
                    translator.flush_unresolved()
                self.stats.events += len(held)
                yield from held
                held = []
        translator.flush_unresolved()
        self.stats.events += len(held)
        yield from held

    def _segment_events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        self._file = open_bytes(self.path)
        pending: tuple[int, bytes | None] | None = None  # held back: only the last may be cut
        try:
            for line_no, raw in enumerate(bounded_lines(self._file), 1):
                if line_no < self._first_line:
                    continue
                if self._end_line is not None and line_no >= self._end_line:
                    break
                if pending is not None and (event := self._parse(*pending, last=False)):
                    yield pending[0], event
                pending = (line_no, raw)
        except (OSError, EOFError) as exc:  # a gzip stream cut short (a killed writer)
            self.stats.truncated_last_line = True
            self.stats.warnings.append(f"{self.path}: compressed stream ends early ({exc})")
        finally:
            self._file.close()
        if pending is not None and (event := self._parse(*pending, last=True)):
            yield pending[0], event

    def _parse(self, line_no: int, raw: bytes | None, *, last: bool) -> dict[str, Any] | None:
        if raw is None:
            self._bad_line(line_no, TOO_LONG, cut=False)
            return None
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._bad_line(line_no, f"not JSON ({exc})", cut=last and not raw.endswith(b"\n"))
            return None
        if not isinstance(data, dict) or not isinstance(data.get("event_kind"), str):
            self._bad_line(line_no, "not a DataDesigner scheduler event (no event_kind)", cut=False)
            return None
        # Types and sizes of what the translator reads, in one place (see checks.py).
        if (why := check_event(data, self.layout.num_records)) is not None:
            self._bad_line(line_no, why, cut=False)
            return None
        return data

    def _bad_line(self, line_no: int, reason: str, *, cut: bool) -> None:
        self.stats.bad_line(f"{self.path}:{line_no}", reason, last=cut, lenient=self.lenient)

    def finish_warnings(self) -> list[str]:
        out = list(self.stats.warnings)
        unknown = self.translator.stats.unknown_kinds
        if unknown:
            kinds = ", ".join(f"{k}×{n}" for k, n in sorted(unknown.items()))
            out.append(
                f"{self.path}: skipped {sum(unknown.values())} DataDesigner events of unknown "
                f"kinds ({kinds}); written by a newer DataDesigner?"
            )
        if self._orphan_lines and self.segment == 1:
            out.append(
                f"{self.path}: lines 1-{self._orphan_lines} come before the first "
                "scheduler_job_started (the start of the file is missing?) and were skipped"
            )
        if self.segments > 1:
            out.append(
                f"{self.path}: {self.segments} runs (segments) in this file; this is segment "
                f"{self.segment}. `ddtrace convert FILE` writes each as a run.jsonl"
            )
        return out + closing_notes(self.path, self.translator)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def open_datadesigner(
    path: str | Path, *, lenient: bool = False, segment: int | None = None
) -> DataDesignerReader:
    return DataDesignerReader(path, lenient=lenient, segment=segment)


def _dependencies(config: Path) -> dict[str, list[str]] | None:
    """Column inputs from DataDesigner's builder_config.json beside the file, if it is there."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        columns = data["data_designer"]["columns"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(columns, list):
        return None
    return dependencies_from_config(c for c in columns if isinstance(c, dict))


def _estimated_start_ns(path: Path, origin: float, last_t: float | None) -> int:
    """The file was last written at its last event: start = mtime − (last − origin)."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        mtime_ns = 0
    elapsed_ns = int(((last_t or origin) - origin) * 1e9)
    return max(0, mtime_ns - max(0, elapsed_ns))
