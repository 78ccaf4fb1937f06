from __future__ import annotations

import random
import uuid
from collections import Counter

from ddscope.engine.pipeline.model import SamplerColumn
from ddscope.engine.pipeline.samplers import cell_rng, sample, sample_cell


def _column(**fields: object) -> SamplerColumn:
    return SamplerColumn.model_validate({"name": "c", "type": "sampler", **fields})


def _draws(column: SamplerColumn, seed: int, n: int = 20) -> list[object]:
    rng = random.Random(seed)
    return [sample(column, rng) for _ in range(n)]


def test_same_seed_same_values_and_another_seed_differs() -> None:
    column = _column(sampler="uniform_float", low=0, high=1)
    assert _draws(column, 7) == _draws(column, 7)
    assert _draws(column, 7) != _draws(column, 8)


def test_category_weights_are_respected() -> None:
    column = _column(sampler="category", values=["a", "b", "c"], weights=[0.8, 0.2, 0.0])
    rng = random.Random(1)
    counts = Counter(sample(column, rng) for _ in range(4000))
    assert counts["c"] == 0
    assert 0.76 < counts["a"] / 4000 < 0.84


def test_category_without_weights_uses_every_value() -> None:
    column = _column(sampler="category", values=["a", "b", "c"])
    rng = random.Random(2)
    counts = Counter(sample(column, rng) for _ in range(900))
    assert set(counts) == {"a", "b", "c"}
    assert min(counts.values()) > 200


def test_uniform_int_is_inclusive_and_uniform_float_in_range() -> None:
    ints = _column(sampler="uniform_int", low=1, high=3)
    floats = _column(sampler="uniform_float", low=-2.5, high=2.5)
    rng = random.Random(3)
    drawn = {sample(ints, rng) for _ in range(300)}
    assert drawn == {1, 2, 3}
    values = [sample(floats, rng) for _ in range(300)]
    assert all(isinstance(v, float) and -2.5 <= v <= 2.5 for v in values)


def test_uuid_is_a_version_4_uuid_and_repeatable_per_cell() -> None:
    column = _column(sampler="uuid")
    value = sample_cell(column, seed=5, row=0)
    assert isinstance(value, str)
    assert uuid.UUID(value).version == 4
    assert sample_cell(column, seed=5, row=0) == value
    assert len({sample_cell(column, seed=5, row=r) for r in range(100)}) == 100


def test_cell_values_do_not_depend_on_sampling_order() -> None:
    column = _column(sampler="uniform_int", low=0, high=10**9)
    forward = [sample_cell(column, 11, row) for row in range(50)]
    backward = [sample_cell(column, 11, row) for row in reversed(range(50))]
    assert forward == list(reversed(backward))
    assert cell_rng(11, "c", 3).random() != cell_rng(11, "d", 3).random()
