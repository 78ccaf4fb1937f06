"""Where checkpointed rows go: ``data.jsonl``, one row per line, in row order.

The scheduler hands over one row group at a time, once all its rows are done or dropped; dropped
rows are not written (their drop is in ``run.jsonl``). Each line starts with ``"_row"``, the
row's global index, so a dataset with drops can still be joined back to the run record. The file
is flushed after every row group, so a killed run keeps every checkpointed row.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol

import orjson

ROW_INDEX_KEY = "_row"


class RowWriter(Protocol):
    def write_rows(self, rows: list[dict[str, object]]) -> None:
        """Writes one checkpointed row group, rows in row order."""
        ...

    def close(self) -> None: ...


class DiscardingRowWriter:
    """Counts rows and keeps none: for runs where only the record matters (benchmarks)."""

    def __init__(self) -> None:
        self.rows_written = 0

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        self.rows_written += len(rows)

    def close(self) -> None:
        pass


class JsonlRowWriter:
    """Writes rows as JSON Lines. Rows that carry ``"_row"`` keep it (the scheduler knows the
    index of rows after a drop); rows without it are numbered after the last row written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = self.path.open("wb")
        self._next_row = 0
        self.rows_written = 0

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: write after close")
        lines: list[bytes] = []
        for row in rows:
            index = row.get(ROW_INDEX_KEY, self._next_row)
            if not isinstance(index, int):
                raise ValueError(f"{ROW_INDEX_KEY} must be an int, got {type(index).__name__}")
            record: dict[str, object] = {ROW_INDEX_KEY: index}
            record.update((k, v) for k, v in row.items() if k != ROW_INDEX_KEY)
            # default=str: sampler values such as UUIDs or decimals still serialise.
            lines.append(orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))
            self._next_row = index + 1
        self._file.write(b"".join(lines))
        self._file.flush()
        self.rows_written += len(rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlRowWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_rows(path: str | Path) -> list[dict[str, object]]:
    """Reads a ``data.jsonl`` back (tests and small tools)."""
    with Path(path).open("rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]
