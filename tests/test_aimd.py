"""The pure AIMD limit: call it, assert numbers (in the style of Netflix's AIMDLimitTest)."""

from __future__ import annotations

import pytest

from ddscope.engine.admission.aimd import AimdLimit, LimitChange
from ddscope.engine.admission.types import AdmissionSettings
from ddscope.engine.pipeline.parts import RunSettings
from ddscope.errors import ConfigError


def limit_of(
    max_limit: int,
    ramp_s: float = 0.0,
    successes_per_increase: int | None = None,
    increase_step: int | None = None,
) -> AimdLimit:
    """An AIMD limit with RunSettings' defaults for everything not given (their one source)."""
    run: dict[str, int] = {}
    if successes_per_increase is not None:
        run["aimd_successes_per_increase"] = successes_per_increase
    if increase_step is not None:
        run["aimd_increase_step"] = increase_step
    settings = AdmissionSettings.of(max_parallel=max_limit, ramp_s=ramp_s, **run)
    return AimdLimit(settings.aimd_settings())


def test_starts_at_max_without_a_ramp() -> None:
    aimd = limit_of(max_limit=10)
    assert aimd.limit == 10
    assert not aimd.ramping


def test_rate_limited_decreases_by_factor_rounding_down() -> None:
    aimd = limit_of(max_limit=10)
    assert aimd.on_rate_limited(0.0, admitted_epoch=0) == LimitChange(10, 7, "decrease")
    assert aimd.limit == 7
    assert aimd.on_rate_limited(0.0, admitted_epoch=1) == LimitChange(7, 5, "decrease")


def test_decrease_applies_once_per_wave() -> None:
    aimd = limit_of(max_limit=20)
    wave = aimd.epoch  # every request of the first wave was admitted in this epoch
    assert aimd.on_rate_limited(1.0, wave) == LimitChange(20, 15, "decrease")
    for _ in range(10):  # the rest of the wave's 429s: same signal, no further decrease
        assert aimd.on_rate_limited(1.1, wave) is None
    assert aimd.limit == 15
    # A request admitted after the decrease belongs to the next wave.
    assert aimd.on_rate_limited(2.0, aimd.epoch) == LimitChange(15, 11, "decrease")


def test_decrease_floors_at_one() -> None:
    aimd = limit_of(max_limit=4)
    limits = []
    for _ in range(6):
        aimd.on_rate_limited(0.0, aimd.epoch)
        limits.append(aimd.limit)
    assert limits == [3, 2, 1, 1, 1, 1]
    assert aimd.on_rate_limited(0.0, aimd.epoch) is None  # 1 → 1 is no change


def test_increase_after_n_successes() -> None:
    aimd = limit_of(max_limit=10, successes_per_increase=3)
    aimd.on_rate_limited(0.0, 0)  # 10 → 7
    assert aimd.on_success(1.0) is None
    assert aimd.on_success(1.0) is None
    assert aimd.on_success(1.0) == LimitChange(7, 8, "increase")
    assert [aimd.on_success(2.0) for _ in range(3)][-1] == LimitChange(8, 9, "increase")


def test_increase_step_and_clamp_to_max() -> None:
    aimd = limit_of(max_limit=10, successes_per_increase=1, increase_step=4)
    aimd.on_rate_limited(0.0, 0)  # 7
    assert aimd.on_success(1.0) == LimitChange(7, 10, "increase")
    assert aimd.on_success(1.0) is None  # at max: nothing to raise
    assert aimd.limit == 10


def test_no_increase_during_cooldown() -> None:
    aimd = limit_of(max_limit=10, successes_per_increase=2)
    aimd.on_rate_limited(0.0, 0)  # 7
    for _ in range(10):
        assert aimd.on_success(0.5, cooling_down=True) is None
    assert aimd.limit == 7
    aimd.on_success(3.0)
    assert aimd.on_success(3.0) == LimitChange(7, 8, "increase")


def test_a_429_resets_the_success_streak() -> None:
    aimd = limit_of(max_limit=10, successes_per_increase=3)
    aimd.on_rate_limited(0.0, 0)  # 7
    aimd.on_success(1.0)
    aimd.on_success(1.0)
    aimd.on_rate_limited(1.0, admitted_epoch=0)  # old wave: no decrease, but the streak is gone
    assert aimd.limit == 7
    assert aimd.on_success(2.0) is None
    assert aimd.on_success(2.0) is None
    assert aimd.on_success(2.0) == LimitChange(7, 8, "increase")


def test_ramp_climbs_linearly_from_one() -> None:
    aimd = limit_of(max_limit=11, ramp_s=10.0)
    assert aimd.limit == 1 and aimd.ramping
    assert aimd.observe(50.0) is None  # the ramp clock has not started: it stays at 1
    aimd.begin_ramp(100.0)
    assert aimd.observe(100.0) is None
    # limit = 1 + ⌊(max − 1) · elapsed / ramp_s⌋ = 1 + ⌊elapsed⌋ here
    assert aimd.observe(100.99) is None
    assert aimd.observe(101.0) == LimitChange(1, 2, "ramp")
    assert aimd.observe(104.5) == LimitChange(2, 5, "ramp")
    assert aimd.next_ramp_step_at() == pytest.approx(105.0)
    assert aimd.observe(110.0) == LimitChange(5, 11, "ramp")
    assert not aimd.ramping
    assert aimd.next_ramp_step_at() is None


def test_ramp_step_boundaries_are_exact_despite_float_error() -> None:
    aimd = limit_of(max_limit=16, ramp_s=5.0)
    aimd.begin_ramp(0.0)
    for expected in range(2, 17):
        step_at = aimd.next_ramp_step_at()
        assert step_at is not None
        change = aimd.observe(step_at)
        assert change is not None and change.new == expected
    assert not aimd.ramping


def test_ramp_ignores_success_streaks() -> None:
    aimd = limit_of(max_limit=5, ramp_s=4.0, successes_per_increase=1)
    aimd.begin_ramp(0.0)
    assert aimd.on_success(0.5) is None
    assert aimd.limit == 1
    assert aimd.on_success(1.0) == LimitChange(1, 2, "ramp")


def test_first_429_ends_the_ramp_and_decreases_from_its_value() -> None:
    aimd = limit_of(max_limit=17, ramp_s=4.0, successes_per_increase=2)
    aimd.begin_ramp(0.0)
    aimd.observe(2.0)  # 1 + ⌊16 · 2 / 4⌋ = 9
    assert aimd.limit == 9
    assert aimd.on_rate_limited(2.0, aimd.epoch) == LimitChange(9, 6, "ramp_end")
    assert not aimd.ramping
    assert aimd.observe(4.0) is None  # the ramp no longer climbs
    assert aimd.limit == 6
    aimd.on_success(5.0)
    assert aimd.on_success(5.0) == LimitChange(6, 7, "increase")  # plain AIMD from here


def test_429_at_ramp_start_reports_the_ramp_end_at_one() -> None:
    aimd = limit_of(max_limit=8, ramp_s=4.0)
    aimd.begin_ramp(0.0)
    assert aimd.on_rate_limited(0.1, 0) == LimitChange(1, 1, "ramp_end")
    assert not aimd.ramping


def test_no_ramp_when_max_is_one() -> None:
    aimd = limit_of(max_limit=1, ramp_s=5.0)
    assert not aimd.ramping
    aimd.begin_ramp(0.0)
    assert aimd.observe(10.0) is None and aimd.limit == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_parallel": 0}, "max_parallel_requests"),
        ({"aimd_decrease_factor": 1.0}, "run.aimd_decrease_factor"),
        ({"aimd_decrease_factor": 0}, "run.aimd_decrease_factor"),
        ({"aimd_successes_per_increase": 0}, "run.aimd_successes_per_increase"),
        ({"aimd_increase_step": 0}, "run.aimd_increase_step"),
        ({"ramp_s": -1.0}, "ramp_s"),
        ({"ramp_s": float("inf")}, "ramp_s"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        AdmissionSettings.of(**kwargs)  # type: ignore[arg-type]


def test_the_defaults_come_from_run_settings_alone() -> None:
    settings = AdmissionSettings.of(max_parallel=3).aimd_settings()
    run = RunSettings()
    assert (settings.decrease_factor, settings.successes_per_increase, settings.increase_step) == (
        run.aimd_decrease_factor,
        run.aimd_successes_per_increase,
        run.aimd_increase_step,
    )
