"""A command that failed on a value in a record: which line, and which field.

The readers' fast path (``RunReader.iter_dicts``) checks a line's kind, ``t_ns`` and required
fields, not the type of every field: checking them all would cost ≈ 1.5 µs an event on
millions of events. So a field of the wrong type (``"message": null``) surfaces where a
consumer uses it — in the health analyzer, the Perfetto timeline, a report's plots, a
renderer — as a TypeError or a ValueError. When that happens, the record is read again with
every event validated against the contract, and the first line that is not valid is the error,
one line naming ``file:line`` and the field, exit 2. A record whose every event is valid means
the failure is ddscope's own bug: the original exception goes on, traceback and all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ddscope.record.detect import detect_format
from ddscope.record.jsonl import RunReader


def record_arguments(arguments: Mapping[str, Any]) -> list[Path]:
    """The existing files among a command's arguments (a record, two to compare, -o ...):
    any of them may be the record that failed; the others are not ddscope records."""
    found: list[Path] = []
    for value in arguments.values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, Path) and item.is_file():
                found.append(item)
    return found


def check_record_values(paths: Iterable[Path]) -> None:
    """Raises RecordError at the first event not valid by the contract in any of ``paths``
    that is a ddscope record (a DataDesigner file's reader checks its own lines)."""
    for path in paths:
        if detect_format(path) == "ddscope":
            reader = RunReader(path)
            try:
                reader.check_values()
            finally:
                reader.close()
