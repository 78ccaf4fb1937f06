"""``ddtrace health``: one streaming pass over a run record → a :class:`HealthReport`.

The record is read with ``RunReader.iter_dicts()`` (orjson dicts, no pydantic per event) and each
event goes through a dispatch dict on ``kind`` to a handler that does a few additions. Per-domain
state and its time integrals live in :mod:`health_domain`, cell readiness (for idle attribution)
in :mod:`health_ready`; the report is assembled by :mod:`health_build` and judged by
:mod:`health_findings`. Memory is bounded by what is *open* (leases, waits, attempts, rows of row
groups in flight), never by the length of the run.

Progress, for the "longest interval with no progress": a task lease that finished ``ok`` or a row
group checkpointed. The interval counts only while work was pending (rows not yet resolved), and
is described by what each domain did during it (cooldown, breaker, requests on the wire, ready
work waiting, salvage pause) plus the engine's own latest health event inside it.

``at_s``: the snapshot as of that moment — events after it are ignored, intervals still open
then are reported as open, and the run counts as ``running`` rather than crashed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import chain, islice
from typing import Any, Literal

from ddscope.events import EVENT_KINDS, RunHeader
from ddscope.exporters.health.domain import DomainTracker, read_snapshot
from ddscope.exporters.health.ready import Readiness
from ddscope.exporters.health.stats import BINS, LogHistogram
from ddscope.exporters.health.tally import RunTally
from ddscope.record.jsonl import BadRecordValue

Handler = Callable[[dict[str, Any], int], None]
NEVER = 1 << 62  # "no --at": later than any t_ns
CHUNK = 8192  # events between histogram flushes


class HealthAnalyzer:
    """The streaming state. Feed it with :meth:`consume`, then :meth:`finish` once."""

    # Slots: attribute access in the hot handlers is ~2x faster than a >30-key __dict__.
    # fmt: off
    __slots__ = (
        "_tracker_list", "at_ns", "events", "finished", "handlers", "header",
        "last_progress", "last_signal", "lease_hist", "lease_outcomes", "leases",
        "longest_gap", "longest_gap_ns", "max_silence_ns", "num_records", "peak_leases",
        "peak_row_groups", "pending", "readiness", "resumes", "row_groups_finished",
        "row_groups_open", "row_groups_total", "rows_resolved", "rows_written",
        "skipped_after_at", "stopped_ns", "t_last", "t_start", "tally", "trackers",
        "warnings",
    )
    # fmt: on

    def __init__(self, header: RunHeader, *, at_ns: int | None = None) -> None:
        self.header = header
        self.at_ns = NEVER if at_ns is None else at_ns
        self.trackers: dict[str, DomainTracker] = {
            d.domain: DomainTracker(d.domain, d.max_parallel_requests, 0) for d in header.domains
        }
        self.readiness = Readiness(header.columns, self.trackers)
        self.warnings: list[str] = []
        self.num_records = header.num_records
        self.row_groups_total = -(-header.num_records // max(1, header.buffer_size))
        self.t_start: int | None = None
        self.t_last = 0
        self.events = 0
        self.skipped_after_at = 0
        self.finished: dict[str, Any] | None = None
        self.leases: dict[int, tuple[int, str, int, int]] = {}
        self.lease_hist = LogHistogram()
        self.lease_outcomes: dict[str, int] = {}
        self.rows_written = 0
        self.rows_resolved = 0
        self.row_groups_finished = 0
        self.resumes = 0  # segments after the first
        self.stopped_ns = 0  # between segments: the run was not running
        self.tally = RunTally()
        # peaks seen in the events themselves: a short run may have a single health event
        self.peak_leases = 0
        self.row_groups_open = 0
        self.peak_row_groups = 0
        # progress and silence
        self.last_progress = 0
        self.last_signal = 0
        self.max_silence_ns = 0
        self.pending = header.num_records > 0
        self.longest_gap_ns = -1
        self.longest_gap: dict[str, Any] | None = None
        self._tracker_list = list(self.trackers.values())
        for tracker in self._tracker_list:
            tracker.mark = tracker.snapshot(0)
        # The handler of kind K is the method _K; a kind added to the contract later is read
        # and ignored, not a crash.
        self.handlers: dict[str, Handler] = {kind: _ignore for kind in EVENT_KINDS}
        self.handlers["salvage_finished"] = self.tally.salvage_finished
        self.handlers["task_deferred"] = self.tally.task_deferred
        self.handlers.update(
            (kind, getattr(self, f"_{kind}")) for kind in EVENT_KINDS if hasattr(self, f"_{kind}")
        )

    # -- the pass ----------------------------------------------------------------------------

    def consume(self, events: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Reads every event. The hot loop of the S6 benchmark: per event one comparison and
        one handler call; histograms are bucketed once per chunk of CHUNK events."""
        handlers, at_ns = self.handlers, self.at_ns
        it = iter(events)
        if self.t_start is None:  # the window starts at the first event (normally run_started)
            first = next(it, None)
            if first is None:
                return
            if first[1]["t_ns"] <= at_ns:
                self._begin(first[1]["t_ns"])
            it = chain([first], it)
        last, skipped, read, line = self.t_last, 0, 0, 0
        try:
            while True:
                n = -1
                for n, (line, data) in enumerate(islice(it, CHUNK)):  # noqa: B007 - n is used
                    t = data["t_ns"]
                    if t > at_ns:
                        skipped += 1
                        continue
                    last = t
                    handlers[data["kind"]](data, t)
                read += n + 1
                for tracker in self._tracker_list:
                    tracker.wait_hist.flush()
                    tracker.attempt_hist.flush()
                self.lease_hist.flush()
                if n < CHUNK - 1:
                    break
        except BadRecordValue as error:  # a handler's own check: say where (zero cost until)
            error.line_no = line
            raise
        self.events += read
        self.skipped_after_at += skipped
        self.t_last = last

    def _begin(self, t: int) -> None:
        self.t_start = self.last_progress = self.last_signal = t
        for tracker in self._tracker_list:
            tracker.last_t = t
            tracker.bins.t0 = t
            tracker.mark = tracker.snapshot(t)

    @property
    def end_ns(self) -> int:
        """The end of the window: run_finished, else --at (if the record goes past it), else the
        last event (a crashed or killed run)."""
        if self.finished is not None:
            return int(self.finished["t_ns"])
        if self.at_ns != NEVER and self.skipped_after_at:
            return self.at_ns
        return self.t_last

    @property
    def state(self) -> Literal["finished", "running", "crashed"]:
        if self.finished is not None:
            return "finished"
        return "running" if self.at_ns != NEVER and self.skipped_after_at else "crashed"

    def finish(self) -> None:
        """Closes the window: integrals up to the end, and the last no-progress interval."""
        end = self.end_ns
        for tracker in self._tracker_list:
            tracker.close(end)
            if tracker.cooldown and end - tracker.cooldown_started > tracker.cooldown_longest_ns:
                tracker.cooldown_longest_ns = end - tracker.cooldown_started
        if self.pending and end - self.last_progress > self.longest_gap_ns:
            self._record_gap(self.last_progress, end, open_=self.finished is None)
        self._silence(end)

    # -- progress ----------------------------------------------------------------------------

    def _progress(self, t: int) -> None:
        if self.pending and t - self.last_progress > self.longest_gap_ns:
            self._record_gap(self.last_progress, t, open_=False)
        if t - self.last_signal > self.max_silence_ns:
            self.max_silence_ns = t - self.last_signal
        self.last_signal = self.last_progress = t
        for tracker in self._tracker_list:
            if tracker.last_t != t:
                tracker.touch(t)
            tracker.mark = read_snapshot(tracker)
        self.pending = self.rows_resolved < self.num_records

    def _silence(self, t: int) -> None:
        if t - self.last_signal > self.max_silence_ns:
            self.max_silence_ns = t - self.last_signal
        self.last_signal = t

    def _record_gap(self, start: int, end: int, *, open_: bool) -> None:
        self.longest_gap_ns = end - start
        deltas = {
            tr.domain: tuple(b - a for a, b in zip(tr.mark, tr.snapshot(end), strict=True))
            for tr in self._tracker_list
        }
        health = self.tally.latest_health
        in_gap = health is not None and start <= health["t_ns"] <= end
        self.longest_gap = {
            "start": start,
            "end": end,
            "open": open_,
            "deltas": deltas,
            "health": health if in_gap else None,
        }

    # -- handlers ------------------------------------------------------------------------------

    def _domain(self, name: str, t: int) -> DomainTracker:
        tracker = self.trackers.get(name)
        if tracker is None:  # not in the header: capacity unknown, take 1 and say so
            self.warnings.append(f"domain {name!r} is not in the record's header")
            tracker = self.trackers[name] = DomainTracker(name, 1, t)
            self._tracker_list.append(tracker)
            tracker.mark = tracker.snapshot(t)
        return tracker

    def _run_started(self, data: dict[str, Any], t: int) -> None:
        self.num_records = int(data.get("num_records", self.num_records))
        self.row_groups_total = int(data.get("row_groups", self.row_groups_total))

    def _run_finished(self, data: dict[str, Any], t: int) -> None:
        self.finished = data

    def _resumed(self, data: dict[str, Any], t: int) -> None:
        """A later segment of the same run: the row groups it starts from were done before it;
        the ones after are generated again, so what earlier segments said of them is void."""
        done = int(data["row_groups_done"])
        self.resumes += 1
        # The time the run was stopped is not a stall: close the no-progress interval where the
        # previous segment ended (its run_finished, else its last health event or progress).
        previous_end = max(self.last_signal, int(self.finished["t_ns"]) if self.finished else 0)
        if self.pending and previous_end - self.last_progress > self.longest_gap_ns:
            self._record_gap(self.last_progress, previous_end, open_=False)
        self.stopped_ns += max(0, t - previous_end)
        self.finished = None  # the previous segment's end is not the run's
        self.tally.forget_drops_from(done)
        self.row_groups_finished = done
        self.row_groups_open = 0
        self.rows_written = int(data["rows_done"])
        self.rows_resolved = self.rows_written + sum(
            sum(reasons.values()) for reasons in self.tally.drops_by_group.values()
        )
        self.leases.clear()  # a killed segment's leases never end; none carries over
        self.readiness.resumed(t)
        for tracker in self._tracker_list:
            tracker.resumed(t)
            tracker.mark = read_snapshot(tracker)
        self.last_progress = self.last_signal = t
        self.pending = self.rows_resolved < self.num_records

    def _row_group_started(self, data: dict[str, Any], t: int) -> None:
        rows = data["rows"]
        if not 0 <= rows <= max(self.num_records, 1):  # walked row by row when it finishes
            raise BadRecordValue("row_group_started.rows", f"{rows} is not 0 to num_records")
        self.readiness.row_group_started(t, data["row_group"], data["first_row"], rows)
        self.row_groups_open += 1
        if self.row_groups_open > self.peak_row_groups:
            self.peak_row_groups = self.row_groups_open

    def _row_group_finished(self, data: dict[str, Any], t: int) -> None:
        self.row_groups_finished += 1
        self.row_groups_open -= 1
        self.rows_written += data["rows_completed"]
        self.rows_resolved += data["rows_completed"] + data["rows_dropped"]
        self.readiness.row_group_finished(data["row_group"])
        if data["outcome"] == "checkpointed":
            self._progress(t)

    def _lease_started(self, data: dict[str, Any], t: int) -> None:
        leases = self.leases
        leases[data["lease_id"]] = (t, data["column"], data["row"], data["row_group"])
        if len(leases) > self.peak_leases:
            self.peak_leases = len(leases)

    def _lease_finished(self, data: dict[str, Any], t: int) -> None:
        outcome = data["outcome"]
        outcomes = self.lease_outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        lease = self.leases.pop(data["lease_id"], None)
        if lease is None:
            return
        self.lease_hist.pending.append(t - lease[0])
        if outcome == "ok":
            self.readiness.cell_done(t, lease[1], lease[2], lease[3])
            self._progress(t)
        elif outcome == "deferred":
            self.readiness.cell_deferred(t, lease[1], lease[2], lease[3])

    def _wait_started(self, data: dict[str, Any], t: int) -> None:
        tracker = self.trackers.get(data["domain"]) or self._domain(data["domain"], t)
        if not tracker.readiness_known and tracker.last_t != t:
            tracker.touch(t)  # open waits are the fallback readiness signal
        tracker.waits_open += 1
        tracker.open_waits[(data["request_id"], data["attempt"])] = t

    def _wait_finished(self, data: dict[str, Any], t: int) -> None:
        tracker = self.trackers.get(data["domain"]) or self._domain(data["domain"], t)
        started = tracker.open_waits.pop((data["request_id"], data["attempt"]), None)
        outcome = data["outcome"]
        waits = tracker.waits
        waits[outcome] = waits.get(outcome, 0) + 1
        if started is None:
            return
        if not tracker.readiness_known and tracker.last_t != t:
            tracker.touch(t)
        tracker.waits_open -= 1
        tracker.wait_hist.pending.append(t - started)

    def _attempt_started(self, data: dict[str, Any], t: int) -> None:
        tracker = self.trackers.get(data["domain"]) or self._domain(data["domain"], t)
        if tracker.last_t != t:
            tracker.touch(t)
        tracker.in_flight += 1
        tracker.open_attempts[(data["request_id"], data["attempt"])] = t

    def _attempt_finished(self, data: dict[str, Any], t: int) -> None:
        tr = self.trackers.get(data["domain"]) or self._domain(data["domain"], t)
        if tr.last_t != t:
            tr.touch(t)
        started = tr.open_attempts.pop((data["request_id"], data["attempt"]), None)
        if started is not None:
            tr.in_flight -= 1
        outcome = data["outcome"]
        tr.attempts[outcome] = tr.attempts.get(outcome, 0) + 1
        tr.attempts_total += 1
        limited = outcome == "rate_limited"
        if limited:
            tr.rate_limited += 1
            tr.quota_refused += data.get("quota_exhausted") is True
        elif outcome == "ok":
            if started is not None:
                tr.attempt_hist.pending.append(t - started)
            tr.tokens_in += data.get("input_tokens") or 0
            tr.tokens_out += data.get("output_tokens") or 0
        if tr.limit <= 1:
            tr.floor_attempts += 1
            tr.floor_rate_limited += limited
        bins = tr.bins
        index = (t - bins.t0) // bins.width
        if not 0 <= index < BINS:
            index = bins.index(t)
        bins.attempts[index] += 1
        if limited:
            bins.rl[index] += 1

    def _cooldown_started(self, data: dict[str, Any], t: int) -> None:
        self._domain(data["domain"], t).cooldown_begins(t, data.get("cause"))

    def _cooldown_finished(self, data: dict[str, Any], t: int) -> None:
        self._domain(data["domain"], t).cooldown_ends(t)

    def _limit_changed(self, data: dict[str, Any], t: int) -> None:
        self._domain(data["domain"], t).limit_changed(t, data["old"], data["new"])

    def _breaker(self, data: dict[str, Any], t: int) -> None:
        self._domain(data["domain"], t).breaker(t, data)

    def _salvage_started(self, data: dict[str, Any], t: int) -> None:
        self.readiness.salvage_started(t)
        self.tally.salvage_started(data, t)

    def _row_dropped(self, data: dict[str, Any], t: int) -> None:
        self.tally.row_dropped(data, t)
        self.readiness.row_dropped(t, data["row"], data["row_group"])

    def _health(self, data: dict[str, Any], t: int) -> None:
        self.tally.health(data, t)
        self._silence(t)

    def _shutdown(self, data: dict[str, Any], t: int) -> None:
        self.tally.shutdown_event(data, t)
        for tracker in self._tracker_list:
            tracker.touch(t)
            tracker.stopping = True


def _ignore(data: dict[str, Any], t: int) -> None:
    """Events that change nothing the snapshot reports."""
