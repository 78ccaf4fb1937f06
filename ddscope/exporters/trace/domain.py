"""One request-admission domain (provider/model) on the trace timeline.

Under the domain's group track: counters for the AIMD limit, requests in flight and waiters
(in flight and waiters are derived from the attempt and wait intervals as they stream by, so
they need no health events); a signals track with 429s, admission timeouts and breaker
transitions as instants; and lane groups for cooldowns, request waits and attempts. When the
provider sends ``x-ratelimit-*`` headers, counter tracks ``quota: remaining requests`` /
``quota: remaining tokens`` follow them (declared on first value, so other runs show none).

An attempt's slice is named after its outcome ("chat ok", "chat 429"), which is known only when
it finishes, so the attempt is written at its finish: begin (at its start time) and end
together. Its lane is taken at its start, so a lane still holds one slice at a time and the
slices on a lane are written in time order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddscope.exporters.trace.layout import LaneGroup, Layout
from ddscope.exporters.trace.writer import Flows, TraceWriter

_STATUS_NAMES = {"ok": "chat ok", "rate_limited": "chat 429"}
_WAIT_SIGNALS = {"timeout": "admission timeout", "breaker_open": "refused: breaker open"}
_QUOTA_COUNTERS = (
    ("ratelimit_remaining_requests", "quota: remaining requests", "requests"),
    ("ratelimit_remaining_tokens", "quota: remaining tokens", "tokens"),
)
_COOLDOWN_NAMES = {"probe": "probe cooldown", "quota": "quota pause"}

# (begin ts, lane, task_id, attempt) of an attempt still on the wire
_OpenAttempt = tuple[int, int, Any, Any]


def attempt_name(outcome: str, status: int | None) -> str:
    """Outcome-aware slice name: "chat ok", "chat 429", "chat 503", "chat timeout"."""
    name = _STATUS_NAMES.get(outcome)
    if name is None:
        name = f"chat {status}" if status else f"chat {outcome}"
    return name


class DomainTracks:
    """``flow_of(task_id)`` gives the task's live flow (empty when it has none)."""

    def __init__(
        self,
        layout: Layout,
        writer: TraceWriter,
        domain: str,
        parent: int,
        flow_of: Callable[[Any], Flows],
    ) -> None:
        self.name = domain
        self._w = writer
        self._flow_of = flow_of
        key = ("domain", domain)
        self.group = group = layout.track(key, domain, parent)
        self.limit_track = self._counter(layout, (*key, "limit"), "AIMD limit")
        self.in_flight_track = self._counter(layout, (*key, "in_flight"), "in flight")
        self.waiters_track = self._counter(layout, (*key, "waiters"), "waiters")
        self.signals = layout.track((*key, "signals"), "429 · timeouts · breaker", group)
        self.cooldowns = LaneGroup(layout, (*key, "cooldown"), "cooldown", group)
        self.waits = LaneGroup(layout, (*key, "waits"), "request waits", group, "wait")
        self.attempts = LaneGroup(layout, (*key, "attempts"), "attempts", group, "chat")
        self.limit: int | None = None
        self._layout = layout
        self.in_flight = 0
        self.waiters = 0
        self._open_waits: dict[tuple[Any, Any], int] = {}
        self._open_attempts: dict[tuple[Any, Any], _OpenAttempt] = {}
        self._open_cooldowns: dict[Any, int] = {}

    def _counter(self, layout: Layout, key: tuple[str, ...], name: str) -> int:
        return layout.track(key, name, self.group, counter=True, unit="requests")

    # --- waits ---------------------------------------------------------------------------

    # Handlers read the fields they need (d[...]: a missing one raises KeyError, reported by
    # the timeline as a bad record line) before changing any state.

    def wait_started(self, d: dict[str, Any], ts: int) -> None:
        request, attempt, task = d["request_id"], d["attempt"], d["task_id"]
        lane = self.waits.acquire()
        self._open_waits[request, attempt] = lane
        self.waiters += 1
        args = (("task_id", task), ("attempt", attempt))
        counters = ((self.waiters_track, self.waiters),)
        self._w.begin(ts, lane, "wait", args, self._flow_of(task), counters)

    def wait_finished(self, d: dict[str, Any], ts: int) -> None:
        key, outcome = (d["request_id"], d["attempt"]), d["outcome"]
        lane = self._open_waits.pop(key, None)
        if lane is None:
            return
        self.waiters -= 1
        self._w.end(ts, lane, (("outcome", outcome),), ((self.waiters_track, self.waiters),))
        self.waits.release(lane)
        signal = _WAIT_SIGNALS.get(outcome)
        if signal is not None:
            args = (("task_id", d.get("task_id")), ("attempt", d.get("attempt")))
            self._w.instant(ts, self.signals, signal, args)

    # --- attempts ------------------------------------------------------------------------

    def attempt_started(self, d: dict[str, Any], ts: int) -> None:
        request, attempt, task = d["request_id"], d["attempt"], d["task_id"]
        lane = self.attempts.acquire()
        self._open_attempts[request, attempt] = (ts, lane, task, attempt)
        self.in_flight += 1
        self._w.counter(ts, self.in_flight_track, self.in_flight)

    def attempt_finished(self, d: dict[str, Any], ts: int) -> None:
        key, outcome, status = (d["request_id"], d["attempt"]), d["outcome"], d.get("status_code")
        opened = self._open_attempts.pop(key, None)
        if opened is None:
            return
        begin, lane, task, attempt = opened
        args = (
            ("task_id", task),
            ("attempt", attempt),
            ("outcome", outcome),
            ("status", status),
            ("retry_after_s", d.get("retry_after_s")),
            ("input_tokens", d.get("input_tokens")),
            ("output_tokens", d.get("output_tokens")),
            ("error", d.get("error")),
            ("remaining_requests", d.get("ratelimit_remaining_requests")),
            ("remaining_tokens", d.get("ratelimit_remaining_tokens")),
            ("reset_requests_s", d.get("ratelimit_reset_requests_s")),
            ("quota_exhausted", d.get("quota_exhausted")),
            ("backoff_s", d.get("backoff_s")),
        )
        # The flow as it is now: written late, the attempt must not reuse a terminated flow.
        flows = self._flow_of(task)
        self._w.begin(begin, lane, attempt_name(outcome, status), args, flows)
        self.in_flight -= 1
        self._w.end(ts, lane, (), ((self.in_flight_track, self.in_flight),))
        self.attempts.release(lane)
        if outcome == "rate_limited":
            signal = (("retry_after_s", d.get("retry_after_s")), ("task_id", task))
            self._w.instant(ts, self.signals, "429", (*signal, ("attempt", attempt)))
        self._quota_counters(d, ts)

    def _quota_counters(self, d: dict[str, Any], ts: int) -> None:
        for field, name, unit in _QUOTA_COUNTERS:
            value = d.get(field)
            if isinstance(value, int):
                key = ("domain", self.name, field)
                track = self._layout.track(key, name, self.group, counter=True, unit=unit)
                self._w.counter(ts, track, value)

    # --- cooldowns, limit, breaker -------------------------------------------------------

    def cooldown_started(self, d: dict[str, Any], ts: int) -> None:
        cooldown = d["cooldown_id"]
        lane = self.cooldowns.acquire()
        self._open_cooldowns[cooldown] = lane
        name = _COOLDOWN_NAMES.get(d.get("cause") or "", "cooldown")
        args = (
            ("duration_s", d.get("duration_s")),
            ("retry_after_s", d.get("retry_after_s")),
            ("request_id", d.get("request_id")),
            ("attempt", d.get("attempt")),
        )
        self._w.begin(ts, lane, name, args)

    def cooldown_finished(self, d: dict[str, Any], ts: int) -> None:
        lane = self._open_cooldowns.pop(d["cooldown_id"], None)
        if lane is not None:
            self._w.end(ts, lane)
            self.cooldowns.release(lane)

    def limit_changed(self, d: dict[str, Any], ts: int, run_start: int) -> None:
        if self.limit is None and isinstance(d.get("old"), int):
            # The limit before its first change held since the run started.
            self._w.counter(min(run_start, ts), self.limit_track, d["old"])
        self.limit = d.get("new")
        if isinstance(self.limit, int):
            self._w.counter(ts, self.limit_track, self.limit)

    def seed_limit(self, limit: Any, ts: int) -> None:
        """A health snapshot's limit, used only until the first recorded change."""
        if self.limit is None and isinstance(limit, int):
            self.limit = limit
            self._w.counter(ts, self.limit_track, limit)

    def breaker(self, d: dict[str, Any], ts: int) -> None:
        args = tuple(
            (key, d.get(key))
            for key in (
                "reason",
                "policy",
                "consecutive_429",
                "share_429",
                "time_at_floor_s",
                "last_retry_after_s",
                "window_s",
                "window_attempts",
                "window_refused",
            )
        )
        self._w.instant(ts, self.signals, f"breaker {d.get('state')}", args)

    # --- end of a cut-off record ---------------------------------------------------------

    def close_open(self, ts: int) -> int:
        """Closes every interval still open at ``ts``, marked unfinished; returns how many."""
        unfinished = (("unfinished", True),)
        for begin, lane, task, attempt in self._open_attempts.values():
            args = (("task_id", task), ("attempt", attempt))
            flows = self._flow_of(task)
            self._w.begin(begin, lane, "chat (unfinished)", (*args, *unfinished), flows)
            self._w.end(ts, lane)
        for lane in (*self._open_waits.values(), *self._open_cooldowns.values()):
            self._w.end(ts, lane, unfinished)
        closed = len(self._open_attempts) + len(self._open_waits) + len(self._open_cooldowns)
        self._open_attempts.clear()
        self._open_waits.clear()
        self._open_cooldowns.clear()
        return closed
