"""Values for ``sampler`` columns: category, uniform int/float and uuid, all from a seeded RNG.

:func:`cell_rng` derives one RNG per (seed, column, row), so a row's sampled values do not depend
on the order in which the scheduler happens to run cells: the same seed gives the same dataset
whatever the concurrency.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pipeline imports this module's names indirectly; avoid a cycle at runtime
    from ddscope.engine.pipeline.model import SamplerColumn


def sample(column: SamplerColumn, rng: random.Random) -> object:
    """One value for ``column``. The column was validated when the pipeline loaded."""
    kind = column.sampler
    if kind == "category":
        values = column.values or []
        if column.weights:
            return rng.choices(values, weights=column.weights, k=1)[0]
        return rng.choice(values)
    if kind == "uniform_int":
        return rng.randint(int(column.low or 0), int(column.high or 0))
    if kind == "uniform_float":
        return rng.uniform(float(column.low or 0.0), float(column.high or 0.0))
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown sampler {kind!r}")  # unreachable: the model restricts the kinds


def cell_rng(seed: int, column: str, row: int) -> random.Random:
    """A deterministic RNG for one cell, independent of the order cells are sampled in."""
    digest = hashlib.blake2b(f"{seed}\x00{column}\x00{row}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def sample_cell(column: SamplerColumn, seed: int, row: int) -> object:
    """The value of ``column`` in ``row`` for a run with ``seed``: repeatable across runs."""
    return sample(column, cell_rng(seed, column.name, row))
