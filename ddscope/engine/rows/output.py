"""Where checkpointed rows go: ``data.jsonl``, one row per line, in row order.

The scheduler hands over one row group at a time, once all its rows are done or dropped; dropped
rows are not written (their drop is in ``run.jsonl``). Each line starts with ``"_row"``, the
row's global index, so a dataset with drops can still be joined back to the run record.

**Whole groups or nothing.** A group's lines are written with unbuffered ``os.write`` calls
straight after each other; if one fails (disk full, I/O error), the file is cut back to where the
group began, so ``data.jsonl`` never ends in a cut-off line or half a group, and the error is
raised as :class:`OutputWriteError`, naming the file and the OS error, for the engine to stop
the run with. A killed process can still leave a partial last group: ``--resume`` cuts it off
(``engine.resume``).

**Journal.** Rows are written a whole group at a time and in order, so a finished row can sit
in memory while an earlier group still waits. So that a killed run does not have to ask the
model again for those rows, :meth:`JsonlRowWriter.note_row` appends each finished row at once
to ``data.pending.jsonl`` beside the dataset (the engine calls it when a row's last model cell
completes). ``--resume`` reads it back, each line checked (``rows.resume``). The journal
holds only rows not yet in ``data.jsonl``: past ``JOURNAL_COMPACT_BYTES`` it is rewritten with
just those (a bounded set: the groups in memory), and it is removed on close when nothing in it
is still unwritten.

**Opened late.** The file is created (and an old one replaced) by :meth:`JsonlRowWriter.open`,
which the engine calls once the run has really started (pipeline, keys and endpoint checked), or
by the first write; so a run refused at start leaves the previous dataset untouched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Protocol

import orjson

from ddscope.errors import DdscopeError

ROW_INDEX_KEY = "_row"
JOURNAL_SUFFIX = ".pending.jsonl"  # data.jsonl -> data.pending.jsonl
JOURNAL_COMPACT_BYTES = 8 * 1024 * 1024


def journal_path(data: str | Path) -> Path:
    data = Path(data)
    return data.with_name(data.stem + JOURNAL_SUFFIX)


class OutputWriteError(DdscopeError):
    """Rows could not be written; the message names the file and the OS error."""


class RowWriter(Protocol):
    def write_rows(self, rows: list[dict[str, object]]) -> None:
        """Writes one checkpointed row group, rows in row order, whole or not at all."""
        ...

    def close(self) -> None: ...


def open_output(output: RowWriter) -> None:
    """Calls the writer's optional ``open()`` (the moment the run has really started)."""
    opener = getattr(output, "open", None)
    if callable(opener):
        opener()


class DiscardingRowWriter:
    """Counts rows and keeps none: for runs where only the record matters (benchmarks)."""

    def __init__(self) -> None:
        self.rows_written = 0

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        self.rows_written += len(rows)

    def close(self) -> None:
        pass


def encode_rows(rows: list[dict[str, object]], next_row: int) -> tuple[bytes, int]:
    """The JSON Lines of ``rows`` with ``"_row"`` first; returns (bytes, next row index).
    Rows without ``"_row"`` are numbered after the previous one."""
    lines: list[bytes] = []
    for row in rows:
        index = row.get(ROW_INDEX_KEY, next_row)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"{ROW_INDEX_KEY} must be an int, got {type(index).__name__}")
        record: dict[str, object] = {ROW_INDEX_KEY: index}
        record.update((k, v) for k, v in row.items() if k != ROW_INDEX_KEY)
        # default=str: sampler values such as UUIDs or decimals still serialise.
        lines.append(orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))
        next_row = index + 1
    return b"".join(lines), next_row


class JsonlRowWriter:
    """Writes rows as JSON Lines. Rows that carry ``"_row"`` keep it (the scheduler knows the
    index of rows after a drop); rows without it are numbered after the last row written.

    ``keep_bytes``: resume: keep the first ``keep_bytes`` of an existing file (the groups a
    killed run already wrote) and append after them, instead of replacing the file;
    ``carried`` (row -> values): the finished rows resume carries over, journaled again until
    they are written."""

    def __init__(
        self,
        path: str | Path,
        *,
        keep_bytes: int | None = None,
        carried: dict[int, dict[str, object]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self._keep = keep_bytes
        self._carried = carried or {}
        self._fd: int | None = None
        self._journal_fd: int | None = None
        self._journal_bytes = 0
        self._pending: dict[int, bytes] = {}  # journaled rows not yet in data.jsonl
        self._closed = False
        self._offset = 0  # end of the last whole group written
        self._next_row = 0
        self.rows_written = 0

    def open(self) -> None:
        """Creates (or, on resume, cuts back and reopens) the file. Idempotent."""
        if self._fd is not None or self._closed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._keep is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            else:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                os.ftruncate(self._fd, self._keep)
                self._offset = self._keep
                os.lseek(self._fd, self._keep, os.SEEK_SET)
                self._pending = {
                    row: encode_rows([{ROW_INDEX_KEY: row, **values}], row)[0]
                    for row, values in self._carried.items()
                }
        except OSError as exc:
            raise OutputWriteError(f"{self.path}: cannot open for writing: {_why(exc)}") from exc
        self._rewrite_journal()

    def note_row(self, row: int, values: dict[str, object]) -> None:
        """Journals one finished row (see the module docstring). Raises OutputWriteError."""
        line, _ = encode_rows([{ROW_INDEX_KEY: row, **values}], row)
        self.open()
        assert self._journal_fd is not None
        try:
            _write_all(self._journal_fd, line)
        except OSError as exc:
            raise OutputWriteError(f"{self.journal}: cannot write: {_why(exc)}") from exc
        self._pending[row] = line
        self._journal_bytes += len(line)
        if self._journal_bytes > JOURNAL_COMPACT_BYTES:
            self._rewrite_journal()

    def _rewrite_journal(self) -> None:
        """Replaces the journal by one holding only the rows not yet written (atomically)."""
        staging = self.journal.with_name(self.journal.name + ".tmp")
        payload = b"".join(self._pending[row] for row in sorted(self._pending))
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
            os.replace(staging, self.journal)
            if self._journal_fd is not None:
                os.close(self._journal_fd)
            self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise OutputWriteError(f"{self.journal}: cannot write: {_why(exc)}") from exc
        self._journal_bytes = len(payload)

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        payload, next_row = encode_rows(rows, self._next_row)
        self.open()
        assert self._fd is not None
        try:
            _write_all(self._fd, payload)
        except OSError as exc:
            self._cut_back()
            raise OutputWriteError(f"{self.path}: cannot write rows: {_why(exc)}") from exc
        self._offset += len(payload)
        self._next_row = next_row
        self.rows_written += len(rows)
        for row in rows:
            index = row.get(ROW_INDEX_KEY)
            if isinstance(index, int):
                self._pending.pop(index, None)

    def _cut_back(self) -> None:
        """Removes a partly written group (best effort: the disk may be gone)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._offset)
            os.lseek(self._fd, self._offset, os.SEEK_SET)
        except OSError:
            pass

    def close(self) -> None:
        """Closes the file; removes the journal when every row in it is in data.jsonl."""
        self._closed = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._journal_fd is not None:
            fd, self._journal_fd = self._journal_fd, None
            os.close(fd)
            if not self._pending:
                with contextlib.suppress(OSError):
                    self.journal.unlink()

    def __enter__(self) -> JsonlRowWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def read_rows(path: str | Path) -> list[dict[str, object]]:
    """Reads a ``data.jsonl`` back (tests and small tools)."""
    with Path(path).open("rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]
