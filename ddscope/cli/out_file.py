"""The output file of ``export`` and ``report`` (``-o``), checked before any record is read: it
must not be a record being read (or one of its segments) — a report or trace written over it
would destroy the run — nor a directory, and it must be writable where it would go. Otherwise
one line naming ``-o`` and the reason, exit 2. A write that fails later (disk full) is one line
too (exit 1)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ddscope.errors import ConfigError, DdscopeError
from ddscope.record.jsonl import record_parts


def check_target(records: Sequence[Path], target: Path, *, make_parents: bool = False) -> Path:
    """``target`` if it can be written. ``make_parents``: its missing directories will be made
    (``report``), so the nearest one that exists is what must be a writable directory."""
    for record in records:
        for part in record_parts(record) if record.exists() else []:
            if target.exists() and os.path.samefile(part, target):
                raise ConfigError(f"-o {target}: is a record being read; choose another file")
    if target.is_dir():
        raise ConfigError(f"-o {target}: is a directory; give a file name")
    parent = target.parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError(f"-o {target}: cannot write: {parent} {why}")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"-o {target}: cannot write in {parent}")
    return target


@contextlib.contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """An OS error while writing ``target`` becomes one line naming it (exit 1)."""
    try:
        yield
    except OSError as exc:
        raise DdscopeError(f"-o {target}: cannot write: {exc.strerror or exc}") from exc
