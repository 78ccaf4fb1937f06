"""Which deferred tasks keep waiting past the salvage budget (pure)."""

from __future__ import annotations

from scheduler_support import plain_pipeline

from ddscope.engine.admission.patience import counts_against_budget, failure_budget, keeps_waiting
from ddscope.engine.scheduling.tasks import ModelTask, plan_columns
from ddscope.events import RETRYABLE_KINDS


def test_only_failures_other_than_pushback_use_up_the_budget():
    assert failure_budget(3, 2) == 9 and failure_budget(1, 0) == 1
    free = {kind for kind in RETRYABLE_KINDS if not counts_against_budget(kind)}
    assert free == {"rate_limited", "admission_timeout", "breaker_open"}
    assert counts_against_budget("server_error") and counts_against_budget("timeout")


def test_a_refused_task_keeps_waiting_under_either_policy_until_its_budget_is_used():
    task = ModelTask(plan_columns(plain_pipeline(model=True))["summary"], 0, 0)
    task.attempts = 40  # refused 40 times: free, under fail_fast as under wait
    assert keeps_waiting(task, "wait", budget=2)
    assert keeps_waiting(task, "fail_fast", budget=2)
    task.budget_failures = 1
    assert keeps_waiting(task, "fail_fast", budget=2)
    task.budget_failures = 2
    assert not keeps_waiting(task, "wait", budget=2)
    assert not keeps_waiting(task, "fail_fast", budget=2)
