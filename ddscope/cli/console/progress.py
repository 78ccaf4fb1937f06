"""What ``ddtrace run`` shows while a run goes, and the paragraph it ends with.

:class:`~ddscope.cli.console.tally.RunTally` folds events into the figures people ask for (rows,
drops by reason, requests, 429s, each domain's limit, in flight, cooldown). :class:`ProgressSink`
is the event sink that prints them: on a terminal one status line redrawn at most ten times a
second; otherwise plain lines, one per row-group checkpoint and one per health event. The engine
emits health at least every few seconds, so a stalled endpoint never leaves the user without
output. Breaker, shutdown and salvage events are printed at once in both modes.

Nothing printed here carries prompt or completion text, error bodies or secrets: only counts,
names, and the engine's own reason sentences.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO

from ddscope import events
from ddscope.cli.console.tally import DomainView, RunTally
from ddscope.safe_text import escape_controls

__all__ = [
    "DomainView",
    "ProgressSink",
    "RunTally",
    "describe_event",
    "status_line",
]

_BAR_WIDTH = 16


# ---------------------------------------------------------------------------------------------
# The sink


class ProgressSink:
    """Prints progress to ``stream``. ``interactive`` defaults to ``stream.isatty()``."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        quiet: bool = False,
        refresh_s: float = 0.1,
    ) -> None:
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.quiet = quiet
        self.tally = RunTally()
        self.closed = False
        self._refresh_s = refresh_s
        self._last_draw = 0.0
        self._status_shown = False

    def open(self, header: events.RunHeader) -> None:
        self.tally.open(header)

    def handle(self, event: events.Event) -> None:
        self.tally.update(event)
        if self.quiet:
            return
        line = self._line_for(event)
        if line is not None:
            self._print(f"[{self.tally.now_ns / 1e9:7.1f}s] {line}")
        if self.interactive:
            now = time.monotonic()
            if line is not None or now - self._last_draw >= self._refresh_s:
                self._draw_status(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._status_shown:
            self._draw_status(time.monotonic())
            self.stream.write("\n")
            self._status_shown = False
        self.stream.flush()

    def _line_for(self, event: events.Event) -> str | None:
        kind = event.kind
        if kind in ("breaker", "shutdown", "salvage_started", "salvage_finished", "run_started"):
            return describe_event(event, self.tally)
        if isinstance(event, events.RowDropped) and self.tally.drops_by_reason[event.reason] == 1:
            return describe_event(event, self.tally)  # the first of each reason, to show why
        if not self.interactive and kind in ("row_group_finished", "health"):
            return describe_event(event, self.tally)
        return None

    def _print(self, line: str) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False
        # Lines may quote a server's error text: escaped here too, whatever reached the event.
        self.stream.write(escape_controls(line) + "\n")
        if not self.interactive:
            self.stream.flush()

    def _draw_status(self, now: float) -> None:
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        self.stream.write("\r\x1b[K" + status_line(self.tally, width))
        self.stream.flush()
        self._status_shown = True
        self._last_draw = now


# ---------------------------------------------------------------------------------------------
# Text


def status_line(t: RunTally, width: int | None = None) -> str:
    """``12.3s [####----] 16/24 rows, 0 dropped | 74 req, 8x429 | domain: ...``: elapsed time
    first. With ``width``, the line fits it: the domains are written shorter, then only as many
    as fit are shown (``+2 more``), and only as a last resort is the line cut (``…``)."""
    done = t.rows_completed + t.rows_dropped
    filled = round(_BAR_WIDTH * done / t.total_rows) if t.total_rows else 0
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    head = (
        f"{t.now_ns / 1e9:.1f}s [{bar}] {t.rows_completed}/{t.total_rows} rows, "
        f"{t.rows_dropped} dropped"
    )
    full = [head, f"{t.requests} req, {t.rate_limited}x429"]
    full += [_domain_text(name, view, t) for name, view in t.domains.items()]
    line = " | ".join(full)
    if width is None or len(line) <= width:
        return line
    return _fit(t, head, width)


def _fit(t: RunTally, head: str, width: int) -> str:
    """The status line in ``width`` columns, giving up detail before the clock and the rows:
    shorter domain texts, then no progress bar, then fewer domains (``+2 more``)."""
    requests = f"{t.requests} req {t.rate_limited}x429"
    compact = (
        f"{t.now_ns / 1e9:.1f}s {t.rows_completed}/{t.total_rows} rows, {t.rows_dropped} dropped"
    )
    views = list(t.domains.items())
    for first in (head, compact):
        for model_only in (False, True):
            texts = [_domain_short(name, v, t, model_only) for name, v in views]
            line = " | ".join([first, requests, *texts])
            if len(line) <= width:
                return line
    for shown in range(len(texts) - 1, -1, -1):
        line = " | ".join([compact, requests, *texts[:shown], f"+{len(texts) - shown} more"])
        if len(line) <= width:
            return line
    line = f"{compact} | {requests}"
    return line if len(line) <= width else line[: width - 1] + "…"


def _domain_short(name: str, view: DomainView, t: RunTally, model_only: bool) -> str:
    """``mock-model 3/4 2w cd1.5s BRK``: in flight/limit, waiters, cooldown left, breaker."""
    label = name.partition("/")[2] or name if model_only else name
    text = f"{label} {view.in_flight}/{view.limit}"
    if view.waiters:
        text += f" {view.waiters}w"
    cooldown = t.cooldown_remaining_s(view)
    if cooldown >= 0.05:
        text += f" cd{cooldown:.1f}s"
    if view.breaker != "closed":
        text += " BRK" if view.breaker == "open" else " HALF"
    return text


def _domain_text(name: str, view: DomainView, t: RunTally) -> str:
    text = f"{name} in flight {view.in_flight}/{view.limit}"
    if view.waiters:
        text += f", {view.waiters} waiting"
    cooldown = t.cooldown_remaining_s(view)
    if cooldown >= 0.05:
        text += f", cooldown {cooldown:.1f}s"
    if view.breaker != "closed":
        text += f", breaker {view.breaker.upper().replace('_', '-')}"
    return text


def describe_event(event: Any, t: RunTally) -> str:
    """One progress line (without the time prefix) for the event kinds that get one."""
    describe = _DESCRIBERS.get(event.kind)
    return describe(event, t) if describe else event.kind


def _describe_row_group(e: Any, t: RunTally) -> str:
    return (
        f"row group {e.row_group + 1}/{t.row_groups or '?'} {e.outcome}: {_rows_text(t)}; "
        f"{t.requests} requests, {t.rate_limited} rate-limited"
    )


def _describe_health(e: Any, t: RunTally) -> str:
    domains = "; ".join(_domain_text(name, v, t) for name, v in t.domains.items())
    return (
        f"health: {_rows_text(t)}; queue {e.queue_depth}, leases {e.leases}, "
        f"deferred {e.deferred}"
        + (f"; {domains}" if domains else "")
        + (f" ({e.note})" if e.note else "")
    )


def _describe_breaker(e: Any, t: RunTally) -> str:
    retry_after = (
        f", Retry-After {e.last_retry_after_s:g}s" if e.last_retry_after_s is not None else ""
    )
    return (
        f"BREAKER {e.state.upper().replace('_', '-')} on {e.domain}: {e.reason} "
        f"({e.consecutive_429} consecutive 429s, {e.share_429:.0%} of recent requests"
        f"{retry_after}); policy {e.policy}"
    )


_DESCRIBERS: dict[str, Callable[[Any, RunTally], str]] = {
    "run_started": lambda e, t: f"run started: {e.num_records} rows in {e.row_groups} row groups",
    "row_group_finished": _describe_row_group,
    "health": _describe_health,
    "breaker": _describe_breaker,
    "shutdown": lambda e, t: f"SHUTDOWN ({e.reason}): {e.message}",
    "row_dropped": lambda e, t: (
        f"row {e.row} dropped ({e.reason}): {e.message} "
        "[further drops of this kind are counted, not shown]"
    ),
    "salvage_started": lambda e, t: f"salvage round {e.round}: retrying {e.tasks} deferred tasks",
    "salvage_finished": lambda e, t: (
        f"salvage round {e.round} done: {e.recovered} recovered, {e.still_deferred} still deferred"
    ),
}


def _rows_text(t: RunTally) -> str:
    return f"{t.rows_completed}/{t.total_rows} rows done, {t.rows_dropped} dropped"
