"""How DataDesigner's outcomes read in ddscope's words: a job's end, a dropped row's error
kind, and the likeliest kind of a deferral no snapshot explained."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ddscope.integrations.datadesigner.snapshots import NOT_FAILURES, RETRYABLE_KINDS

JOB_OUTCOMES: dict[str, str] = {
    "success": "complete",
    "early_shutdown": "shutdown",
    "cancelled": "cancelled",
    "error": "failed",
}
# DataDesigner's non-retryable error classes (by name) → ddscope error kinds.
DROP_KINDS = (
    ("RateLimit", "rate_limited"),
    ("Timeout", "timeout"),
    ("InternalServer", "server_error"),
    ("Connection", "connection_error"),
    ("Template", "template_error"),
    ("Model", "client_error"),
)


def job_ending(
    result: str, diag: Mapping[str, Any], scrub: Callable[[str], str]
) -> tuple[str, str, str]:
    """``scheduler_job_completed``'s result → (run outcome, reason, message)."""
    outcome = JOB_OUTCOMES.get(result, "failed")
    if result == "success":
        return outcome, "complete", "DataDesigner finished the job"
    if result == "early_shutdown":
        message = "DataDesigner stopped early: its non-retryable error rate crossed the limit"
        return outcome, "error_rate", message + " (shutdown_error_rate)"
    if result == "cancelled":
        return outcome, "cancelled", "DataDesigner's job was cancelled (interrupted)"
    error = scrub(str(diag.get("error_type") or result))
    return outcome, "error", f"DataDesigner's job ended with an error: {error}"


def drop_kind(error_type: str) -> str | None:
    """A non-retryable error class name → ddscope's error kind (None: not a model error)."""
    return next((kind for name, kind in DROP_KINDS if name in error_type), None)


def likeliest_kind(cumulative: Mapping[str, int], *, rate_limited_lately: bool) -> str:
    """For a deferral no snapshot explained: the most frequent failure kind so far, else what
    the last snapshot's outcome suggests."""
    failures = {k: v for k, v in cumulative.items() if k not in NOT_FAILURES and v > 0}
    if failures:
        return RETRYABLE_KINDS.get(max(failures, key=lambda k: failures[k]), "bad_response")
    return "rate_limited" if rate_limited_lately else "server_error"
