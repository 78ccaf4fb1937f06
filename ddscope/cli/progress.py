"""What ``ddtrace run`` shows while a run goes, and the paragraph it ends with.

:class:`RunTally` folds events into the figures people ask for (rows, drops by reason,
requests, 429s, each domain's limit / in-flight / cooldown). :class:`ProgressSink` is the event
sink that prints them: on a terminal one status line redrawn at most ten times a second;
otherwise plain lines, one per row-group checkpoint and one per health event. The engine emits
health at least every few seconds, so a stalled endpoint never leaves the user without output.
Breaker, shutdown and salvage events are printed at once in both modes.

Nothing printed here carries prompt or completion text, error bodies or secrets: only counts,
names, and the engine's own reason sentences.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ddscope import events
from ddscope.engine.scrub import escape_controls

_BAR_WIDTH = 16
_OUTCOME_WORDS = {"shutdown": "shut down"}


@dataclass
class DomainView:
    limit: int
    in_flight: int = 0
    waiters: int = 0
    cooldown_until_ns: int | None = None
    breaker: str = "closed"


@dataclass
class RunTally:
    """Running figures of one run, updated from its events (cheap per event)."""

    header: events.RunHeader | None = None
    total_rows: int = 0
    row_groups: int = 0
    row_groups_done: int = 0
    rows_checkpointed: int = 0  # from row_group_finished
    rows_done_live: int = 0  # from health: done, perhaps not yet checkpointed
    drops_by_reason: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    rate_limited: int = 0
    deferred: int = 0
    queue_depth: int = 0
    now_ns: int = 0
    domains: dict[str, DomainView] = field(default_factory=dict)
    shutdown: events.Shutdown | None = None
    finished: events.RunFinished | None = None
    interrupted: bool = False

    def open(self, header: events.RunHeader) -> None:
        self.header = header
        self.total_rows = header.num_records
        self.domains = {d.domain: DomainView(limit=d.max_parallel_requests) for d in header.domains}

    def update(self, event: events.Event) -> None:
        self.now_ns = max(self.now_ns, event.t_ns)
        handler = _TALLY_HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    def domain(self, name: str) -> DomainView:
        view = self.domains.get(name)
        if view is None:
            view = self.domains[name] = DomainView(limit=0)
        return view

    def cooldown_remaining_s(self, view: DomainView) -> float:
        if view.cooldown_until_ns is None:
            return 0.0
        return max(0.0, (view.cooldown_until_ns - self.now_ns) / 1e9)

    @property
    def rows_completed(self) -> int:
        if self.finished is not None:
            return self.finished.rows_completed
        return max(self.rows_checkpointed, self.rows_done_live)

    @property
    def rows_dropped(self) -> int:
        if self.finished is not None:
            return self.finished.rows_dropped
        return sum(self.drops_by_reason.values())

    @property
    def outcome(self) -> str:
        if self.finished is not None:
            return self.finished.outcome
        return "cancelled" if self.interrupted else "unfinished"


def _on_run_started(t: RunTally, e: Any) -> None:
    t.total_rows, t.row_groups = e.num_records, e.row_groups


def _on_row_group_finished(t: RunTally, e: Any) -> None:
    t.row_groups_done += 1
    t.rows_checkpointed += e.rows_completed


def _on_row_dropped(t: RunTally, e: Any) -> None:
    t.drops_by_reason[e.reason] += 1


def _on_attempt_started(t: RunTally, e: Any) -> None:
    t.domain(e.domain).in_flight += 1


def _on_attempt_finished(t: RunTally, e: Any) -> None:
    view = t.domain(e.domain)
    view.in_flight = max(0, view.in_flight - 1)
    t.requests += 1
    if e.outcome == "rate_limited":
        t.rate_limited += 1


def _on_cooldown_started(t: RunTally, e: Any) -> None:
    t.domain(e.domain).cooldown_until_ns = e.t_ns + round(e.duration_s * 1e9)


def _on_cooldown_finished(t: RunTally, e: Any) -> None:
    t.domain(e.domain).cooldown_until_ns = None


def _on_limit_changed(t: RunTally, e: Any) -> None:
    t.domain(e.domain).limit = e.new


def _on_breaker(t: RunTally, e: Any) -> None:
    t.domain(e.domain).breaker = e.state


def _on_health(t: RunTally, e: Any) -> None:
    t.queue_depth, t.deferred = e.queue_depth, e.deferred
    t.rows_done_live = e.rows_completed
    for d in e.domains:
        view = t.domain(d.domain)
        view.limit, view.in_flight, view.waiters, view.breaker = (
            d.limit,
            d.in_flight,
            d.waiters,
            d.breaker,
        )
        view.cooldown_until_ns = (
            e.t_ns + round(d.cooldown_remaining_s * 1e9) if d.cooldown_remaining_s > 0 else None
        )


def _on_shutdown(t: RunTally, e: Any) -> None:
    t.shutdown = e


def _on_run_finished(t: RunTally, e: Any) -> None:
    t.finished = e


_TALLY_HANDLERS: dict[str, Callable[[RunTally, Any], None]] = {
    "run_started": _on_run_started,
    "row_group_finished": _on_row_group_finished,
    "row_dropped": _on_row_dropped,
    "attempt_started": _on_attempt_started,
    "attempt_finished": _on_attempt_finished,
    "cooldown_started": _on_cooldown_started,
    "cooldown_finished": _on_cooldown_finished,
    "limit_changed": _on_limit_changed,
    "breaker": _on_breaker,
    "health": _on_health,
    "shutdown": _on_shutdown,
    "run_finished": _on_run_finished,
}


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


def summary_text(t: RunTally, data_path: Path, record_path: Path) -> str:
    """The closing paragraph: outcome and reason, rows, drops, duration, files, next commands."""
    f = t.finished
    duration = f"{t.now_ns / 1e9:.1f} s"
    if f is not None and f.outcome == "complete":
        head = f"Run complete in {duration}."
    elif f is not None:
        head = _finished_head(f, duration, t.interrupted)
    elif t.interrupted:
        head = f"Run interrupted after {duration} (Ctrl-C); the record may lack its last events."
    else:
        head = f"Run ended after {duration} without a finish event."
    drops = ""
    if t.drops_by_reason:
        drops = " (" + ", ".join(f"{r} {n}" for r, n in t.drops_by_reason.most_common()) + ")"
    missing = t.total_rows - t.rows_completed - t.rows_dropped
    rows = (
        f"{t.rows_completed}/{t.total_rows} rows written to {data_path}, "
        f"{t.rows_dropped} dropped{drops}"
        + (f", {missing} not produced" if missing > 0 else "")
        + f"; {t.requests} requests, {t.rate_limited} rate-limited (429)."
    )
    record = shlex.quote(str(record_path))
    command = invoked_as()
    return (
        f"{head} {rows} Run record: {record_path}.\n"
        f"Next:\n  {command} health {record}\n"
        f"  {command} report {record}   (an HTML page with plots)\n"
        f"  {command} open {record}     (the trace in https://ui.perfetto.dev)"
    )


def invoked_as() -> str:
    """The command as the user ran it, for the "Next:" lines: after the README's set-up that is
    ``.venv/bin/ddtrace``, and a bare ``ddtrace`` would not be on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name in ("ddtrace", "ddtrace.exe"):
        return shlex.quote(argv0)
    if argv0.endswith(("ddscope/cli/main.py", "ddscope/__main__.py")):
        return f"{shlex.quote(sys.executable)} -m ddscope.cli.main"
    return "ddtrace"


def _finished_head(f: events.RunFinished, duration: str, interrupted: bool) -> str:
    word = _OUTCOME_WORDS.get(f.outcome, f.outcome)
    why = "Ctrl-C" if interrupted else f.reason
    head = f"Run {word}" + (f" ({why})" if why and why != f.outcome else "") + f" after {duration}."
    message = (f.message or "").strip()
    if message and message.rstrip(".").lower() != f"the run was {word}":
        head += f" {message[0].upper()}{message[1:]}" + ("" if message.endswith(".") else ".")
    return head


def exit_code(t: RunTally) -> int:
    """0 when the run completed, 1 otherwise (failed, shut down, cancelled, unfinished)."""
    return 0 if t.finished is not None and t.finished.outcome == "complete" else 1
