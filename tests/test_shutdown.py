"""Tests of the error-rate window that triggers an early shutdown (pure)."""

from __future__ import annotations

import pytest

from ddscope.engine.scheduling.shutdown import ErrorRateWindow
from ddscope.errors import ConfigError


def test_decides_only_once_the_window_is_full():
    window = ErrorRateWindow(size=4, threshold=0.5)
    assert not window.record("server_error")  # 1 of 1 is not a "100 % error rate"
    assert not window.record("server_error")
    assert not window.record("ok")
    assert window.record("ok")  # 2 of 4 = 50 %: at the threshold
    assert window.share == 0.5


def test_rate_limits_cancellations_and_admission_timeouts_do_not_count():
    window = ErrorRateWindow(size=3, threshold=0.5)
    for outcome in ["rate_limited", "rate_limited", "cancelled", "admission_timeout"]:
        window.record(outcome)
    assert window.share == 0.0
    assert not window.record("timeout")  # 1 of 3 counted (the two 429s are not failures)


def test_old_failures_slide_out():
    window = ErrorRateWindow(size=3, threshold=0.6)
    for outcome in ["server_error", "server_error", "ok"]:
        window.record(outcome)
    assert window.tripped
    window.record("ok")  # the first failure slides out: 1 of 3
    assert not window.tripped and window.share == pytest.approx(1 / 3)
    window.record("ok")
    assert window.share == 0.0


def test_the_stop_reason_names_the_failures():
    window = ErrorRateWindow(size=4, threshold=0.5)
    for outcome in ["server_error", "timeout", "server_error", "ok"]:
        window.record(outcome)
    stop = window.stop_reason()
    assert stop.reason == "error_rate"
    assert "3 of the last 4" in stop.message
    assert "server_error ×2" in stop.message and "timeout ×1" in stop.message


def test_bad_settings_are_rejected():
    with pytest.raises(ConfigError):
        ErrorRateWindow(size=0, threshold=0.5)
    with pytest.raises(ConfigError):
        ErrorRateWindow(size=5, threshold=0.0)
