"""Patience under ``breaker_policy: wait``: which deferred tasks outlive the salvage budget.

A saturated endpoint refuses requests (429, and the local refusals that follow from it: an
admission timeout, an open breaker) for as long as it likes. Under ``fail_fast`` the breaker
stops the run; under ``wait`` the run is meant to sit it out (SCENARIOS.md S1, "patient"). So:

* **Pushback is free under wait.** A task's budget — ``max_attempts_in_pass × (1 +
  salvage_rounds)`` tries, as before — counts only its *other* failures (5xx, timeouts,
  connection errors, bad responses): those say the request or the endpoint is broken, and
  retrying them forever would hide that. A task whose failures are (otherwise) pushback is kept
  for further salvage rounds past ``salvage_rounds``, paced like any round by the domain's
  cooldowns and half-open probes.
* **Waiting is bounded** by ``breaker_max_wait_s`` of saturation per domain (``saturation``).

Pure: no asyncio, no clock.
"""

from __future__ import annotations

from ddscope.engine.tasks import ModelTask

# Failure kinds that mean "the endpoint is full", not "the request or the endpoint is broken".
PUSHBACK_KINDS: frozenset[str] = frozenset({"rate_limited", "admission_timeout", "breaker_open"})


def counts_against_budget(kind: str) -> bool:
    """True for a failure that uses up the task's budget. Pushback does not; under
    ``fail_fast`` that makes no difference, as every task still deferred after the last round
    is dropped."""
    return kind not in PUSHBACK_KINDS


def failure_budget(max_attempts_in_pass: int, salvage_rounds: int) -> int:
    """Failed tries (other than pushback) a task may have: the main pass and every round."""
    return max_attempts_in_pass * (1 + salvage_rounds)


def keeps_waiting(task: ModelTask, policy: str, budget: int) -> bool:
    """Whether a task still deferred after the last salvage round gets another round."""
    return policy == "wait" and task.budget_failures < budget
