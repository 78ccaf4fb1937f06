"""Patience: which deferred tasks outlive the salvage budget.

An endpoint that rate-limits refuses requests (429, a 503 with Retry-After, and the local
refusals that follow from them: an admission timeout, an open breaker) for as long as it likes,
and it serves the rest. A row refused that way is not a broken row, so:

* **Pushback is free.** A task's budget — ``max_attempts_in_pass × (1 + salvage_rounds)``
  tries — counts only its *other* failures (5xx, timeouts, connection errors, bad responses):
  those say the request or the endpoint is broken, and retrying them forever would hide that.
  A task whose failures are (otherwise) pushback is kept for further salvage rounds past
  ``salvage_rounds``, paced like any round by the domain's cooldowns — under either breaker
  policy. No row is dropped because of rate limiting while the breaker is closed.
* **Waiting is bounded by the breaker.** Under ``fail_fast`` an endpoint that keeps refusing
  opens the breaker (``breaker.py``: sustained refusals over its window) and the run stops, its
  unfinished rows reported as not produced because of saturation; under ``wait`` the run gives
  up after ``breaker_max_wait_s`` of open breaker (``saturation.py``).

Pure: no asyncio, no clock.
"""

from __future__ import annotations

from ddscope.engine.scheduling.tasks import ModelTask

# Failure kinds that mean "the endpoint is full", not "the request or the endpoint is broken".
PUSHBACK_KINDS: frozenset[str] = frozenset({"rate_limited", "admission_timeout", "breaker_open"})


def counts_against_budget(kind: str) -> bool:
    """True for a failure that uses up the task's budget (the worker also spares a 503 that
    carried Retry-After, which only it can tell apart from other 5xx)."""
    return kind not in PUSHBACK_KINDS


def failure_budget(max_attempts_in_pass: int, salvage_rounds: int) -> int:
    """Failed tries (other than pushback) a task may have: the main pass and every round."""
    return max_attempts_in_pass * (1 + salvage_rounds)


def keeps_waiting(task: ModelTask, policy: str, budget: int) -> bool:
    """Whether a task still deferred after the last salvage round gets another round: while it
    has budget left, under either policy (``policy`` is kept for the callers' signature; the
    breaker, not the budget, ends a run against a saturated endpoint)."""
    del policy
    return task.budget_failures < budget
