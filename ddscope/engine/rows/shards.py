"""Shards: how the row groups of a job are split over its workers, deterministically.

Shard ``I/N`` owns a contiguous slice of the row groups, ``[⌊I·G/N⌋, ⌊(I+1)·G/N⌋)`` for ``G`` row
groups: every group belongs to exactly one shard, the slices differ in size by at most one, and
the split depends only on ``(G, N)`` — so a re-run or ``--resume`` of one shard, on any host,
knows its rows. Contiguous slices (rather than round-robin) keep each worker's ``data.jsonl`` in
row order and make the job's ``data.jsonl`` the shards' files one after another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ddscope.engine.rows.row_groups import engine_group_rows, row_group_count
from ddscope.errors import ConfigError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 0-based
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"--shard: expected I/N with 0 <= I < N, got {self.index}/{self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` → Shard(1, 4); a ConfigError naming ``--shard`` otherwise."""
        match = _SHARD.match(text)
        if match is None:
            raise ConfigError(f"--shard: expected I/N (e.g. 0/4), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def row_groups(self, num_records: int, buffer_size: int) -> range:
        """The row groups this shard owns (as the engine slices them, see ``row_groups``)."""
        total = row_group_count(num_records, engine_group_rows(buffer_size))
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def dir_name(self) -> str:
        """The worker's part directory under the job's output: ``shard-1-of-4``."""
        return f"shard-{self.index}-of-{self.count}"
