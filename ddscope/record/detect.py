"""Which kind of record a file is, by its content, and one call that opens either.

``health``, ``export`` and the OTLP replay call :func:`open_record`; it returns a ddscope
:class:`~ddscope.record.jsonl.RunReader` for a ``run.jsonl`` and a DataDesigner reader (which
translates as it streams) for DataDesigner's ``scheduler_events.jsonl``, plain or gzipped. Both
have the same surface (:class:`RecordSource`). The decision reads the first line only: a ddscope
record starts with its header (``"kind": "header"``), a DataDesigner file with an object that has
``event_kind`` and ``captured_at_monotonic``. Anything else goes to the ddscope reader, whose
error names the file and line.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from ddscope.events import Event, RunHeader
from ddscope.record.jsonl import ReadStats, RunReader

Format = Literal["ddscope", "datadesigner", "unknown"]
GZIP_MAGIC = b"\x1f\x8b"
FIRST_LINE_LIMIT = 1 << 20  # a DataDesigner line with a big snapshot is a few KB; 1 MiB is ample


class RecordSource(Protocol):
    """What the exporters read: a header, then events (as dicts or validated)."""

    path: Path
    header: RunHeader
    stats: ReadStats

    def iter_dicts(self) -> Iterator[tuple[int, dict[str, Any]]]: ...

    def __iter__(self) -> Iterator[Event]: ...

    def finish_warnings(self) -> list[str]: ...

    def close(self) -> None: ...


def detect_format(path: str | Path) -> Format:
    """Looks at the first line (gunzipped if the file is gzip). Unreadable files are
    ``unknown``: the reader that opens them next reports why."""
    try:
        with Path(path).open("rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    first = unzipped.readline(FIRST_LINE_LIMIT)
            else:
                first = raw.readline(FIRST_LINE_LIMIT)
    except (OSError, EOFError, zlib.error):
        return "unknown"
    try:
        data = orjson.loads(first)
    except orjson.JSONDecodeError:
        return "unknown"
    if not isinstance(data, dict):
        return "unknown"
    if data.get("kind") == "header":
        return "ddscope"
    if "event_kind" in data and "captured_at_monotonic" in data:
        return "datadesigner"
    return "unknown"


def open_record(path: str | Path, *, lenient: bool = False) -> RecordSource:
    """A reader for ``path``, whichever format it is (raises RecordError like RunReader)."""
    if detect_format(path) == "datadesigner":
        # Imported here: reading a ddscope record never loads the integration.
        from ddscope.integrations.datadesigner.reader import DataDesignerReader

        return DataDesignerReader(path, lenient=lenient)
    return RunReader(path, lenient=lenient)
