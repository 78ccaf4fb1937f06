"""The paragraph ``ddtrace run`` ends with, and its exit code — both from the engine's
:class:`~ddscope.engine.scheduler.RunSummary`, never from what the progress display happened to
see (a progress sink disabled by a broken pipe must not turn a complete run into a failure, nor
the other way round).

Text that may carry what a server sent (a stop's message) is escaped before it is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ddscope.cli.common import EXIT_FAILED, EXIT_OK
from ddscope.cli.console.next_steps import next_commands
from ddscope.safe_text import escape_controls

if TYPE_CHECKING:
    from ddscope.engine.scheduler import RunSummary

_OUTCOME_WORDS = {"shutdown": "shut down"}  # as the progress display says it


def exit_code_of(summary: RunSummary) -> int:
    """0 when the run completed, 1 otherwise (failed, shut down, cancelled)."""
    return EXIT_OK if summary.outcome == "complete" else EXIT_FAILED


def summary_paragraph(
    summary: RunSummary, total_rows: int, data_path: Path, record_path: Path
) -> str:
    """Outcome and reason, rows, drops, duration, files, next commands."""
    duration = f"{summary.duration_s:.1f} s"
    if summary.outcome == "complete":
        head = f"Run complete in {duration}."
    else:
        head = _stopped_head(summary, duration)
    drops = ""
    if summary.drops_by_reason:
        ordered = sorted(summary.drops_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
        drops = " (" + ", ".join(f"{reason} {n}" for reason, n in ordered) + ")"
    missing = total_rows - summary.rows_completed - summary.rows_dropped
    rows = (
        f"{summary.rows_completed}/{total_rows} rows written to {data_path}, "
        f"{summary.rows_dropped} dropped{drops}"
        + (f", {missing} not produced" if missing > 0 else "")
        + f"; {summary.requests} requests, {summary.rate_limited} rate-limited (429)."
    )
    return f"{head} {rows} Run record: {record_path}.\n{next_commands(record_path)}"


def _stopped_head(summary: RunSummary, duration: str) -> str:
    word = _OUTCOME_WORDS.get(summary.outcome, summary.outcome)
    why = summary.reason
    head = f"Run {word}" + (f" ({why})" if why and why != summary.outcome else "")
    head += f" after {duration}."
    message = escape_controls((summary.message or "").strip())
    if message:
        head += f" {message[0].upper()}{message[1:]}" + ("" if message.endswith(".") else ".")
    return head
