"""A synthetic but contract-exact run record, for exporter tests and post-mortem benchmarks.

It simulates the chain-3 pipeline on one domain without any networking: tasks take request
slots in time order, some attempts get 429 (a cooldown, an AIMD decrease, a retry), failing
tasks are deferred and recovered in a salvage round, and a chosen row is dropped. Every interval
pairs up exactly like the engine's, so exporters can be tested and benchmarked on records of any
size (S6 wants 1,000,000 events) in seconds. Real-run tests use the engine itself.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ddscope import __version__
from ddscope.events import (
    AttemptFinished,
    AttemptStarted,
    ColumnInfo,
    CooldownFinished,
    CooldownStarted,
    DomainHealth,
    DomainInfo,
    Event,
    Health,
    LeaseFinished,
    LeaseStarted,
    LimitChanged,
    RowDropped,
    RowGroupFinished,
    RowGroupStarted,
    RunFinished,
    RunHeader,
    RunStarted,
    SalvageFinished,
    SalvageStarted,
    TaskDeferred,
    WaitFinished,
    WaitStarted,
)

DOMAIN = "mock/mock-model"
COLUMNS = ("summary", "analysis", "rewrite")
MS = 1_000_000


@dataclass(frozen=True)
class SyntheticSpec:
    rows: int = 30
    buffer_size: int = 10
    max_parallel: int = 4
    latency_ms: int = 50
    rate_limit_every: int = 0  # every k-th attempt answers 429 (0 = never)
    defer_every: int = 0  # every k-th task fails its pass and is recovered in salvage
    drop_rows: tuple[int, ...] = ()  # rows whose first model task gets a client error
    seed: int = 7


def synthetic_header(spec: SyntheticSpec, run_id: str = "synthetic") -> RunHeader:
    deps = {"summary": ["topic"], "analysis": ["summary"], "rewrite": ["analysis"]}
    columns = [ColumnInfo(name="topic", type="sampler")] + [
        ColumnInfo(name=c, type="llm_text", model_alias="mock", domain=DOMAIN, depends_on=deps[c])
        for c in COLUMNS
    ]
    return RunHeader(
        ddscope_version=__version__,
        run_id=run_id,
        started_at_unix_ns=1_700_000_000_000_000_000,
        pipeline_name="chain-3 (synthetic)",
        num_records=spec.rows,
        buffer_size=spec.buffer_size,
        columns=columns,
        domains=[
            DomainInfo(
                domain=DOMAIN,
                provider="mock",
                model="mock-model",
                server_address="127.0.0.1",
                server_port=8000,
                max_parallel_requests=spec.max_parallel,
            )
        ],
    )


class _Sim:
    """Keeps the domain's slots and ids while tasks are laid on the timeline."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.slots = [0] * spec.max_parallel  # heap of the times each slot frees up
        self.limit = spec.max_parallel
        self.ids = 0
        self.attempts = 0
        self.tasks = 0
        self.out: list[tuple[int, int, Event]] = []  # (t_ns, seq, event)
        self.last_t = 0

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def add(self, event: Event) -> None:
        self.out.append((event.t_ns, len(self.out), event))

    def run_task(
        self, column: str, row: int, group: int, ready: int, salvage: int | None, fail: str | None
    ) -> tuple[int, str]:
        """Lays one task (lease → wait → attempts) down; returns (finish time, outcome)."""
        start = max(ready, heapq.heappop(self.slots))
        lease, request, task = self.next_id(), self.next_id(), f"{column}:{row}"
        self.add(
            LeaseStarted(
                t_ns=ready,
                lease_id=lease,
                task_id=task,
                row_group=group,
                column=column,
                row=row,
                resources={f"request:{DOMAIN}": 1},
                salvage_round=salvage,
            )
        )
        t, attempt, outcome = start, 0, "ok"
        while True:
            attempt += 1
            self.attempts += 1
            self.add(
                WaitStarted(
                    t_ns=ready if attempt == 1 else t,
                    request_id=request,
                    attempt=attempt,
                    task_id=task,
                    lease_id=lease,
                    domain=DOMAIN,
                )
            )
            self.add(
                WaitFinished(
                    t_ns=t,
                    request_id=request,
                    attempt=attempt,
                    task_id=task,
                    domain=DOMAIN,
                    outcome="admitted",
                )
            )
            self.add(
                AttemptStarted(
                    t_ns=t,
                    request_id=request,
                    attempt=attempt,
                    task_id=task,
                    lease_id=lease,
                    domain=DOMAIN,
                )
            )
            latency = self.spec.latency_ms * MS + self.rng.randrange(0, 10 * MS)
            every = self.spec.rate_limit_every
            if fail is None and every and self.attempts % every == 0 and attempt < 3:
                t = self.rate_limited(t, request, attempt, task)
                continue
            result = fail or "ok"
            self.add(
                AttemptFinished(
                    t_ns=t + latency,
                    request_id=request,
                    attempt=attempt,
                    task_id=task,
                    domain=DOMAIN,
                    outcome=result,
                    status_code={"ok": 200, "client_error": 400, "server_error": 503}[result],
                    input_tokens=12 if result == "ok" else None,
                    output_tokens=30 if result == "ok" else None,
                    response_model="mock-model" if result == "ok" else None,
                )
            )
            t += latency
            outcome = {"ok": "ok", "client_error": "dropped", "server_error": "deferred"}[result]
            break
        heapq.heappush(self.slots, t)
        self.add(
            LeaseFinished(
                t_ns=t,
                lease_id=lease,
                task_id=task,
                row_group=group,
                column=column,
                outcome=outcome,
                error_kind=None if result == "ok" else result,
            )
        )
        return t, outcome

    def rate_limited(self, t: int, request: int, attempt: int, task: str) -> int:
        end = t + 5 * MS
        self.add(
            AttemptFinished(
                t_ns=end,
                request_id=request,
                attempt=attempt,
                task_id=task,
                domain=DOMAIN,
                outcome="rate_limited",
                status_code=429,
                retry_after_s=0.2,
            )
        )
        cooldown = self.next_id()
        self.add(
            CooldownStarted(
                t_ns=end,
                cooldown_id=cooldown,
                domain=DOMAIN,
                retry_after_s=0.2,
                duration_s=0.2,
                request_id=request,
                attempt=attempt,
            )
        )
        self.add(CooldownFinished(t_ns=end + 200 * MS, cooldown_id=cooldown, domain=DOMAIN))
        if self.limit > 1:
            new = max(1, int(self.limit * 0.75))
            self.add(
                LimitChanged(t_ns=end, domain=DOMAIN, old=self.limit, new=new, reason="decrease")
            )
            self.limit = new
        return end + 200 * MS


def synthetic_events(spec: SyntheticSpec) -> Iterator[Event]:
    """Events of a whole run, in time order."""
    sim = _Sim(spec)
    groups = (spec.rows + spec.buffer_size - 1) // spec.buffer_size
    sim.add(RunStarted(t_ns=0, num_records=spec.rows, row_groups=groups))
    t, deferred = 0, []
    dropped_in = {g: 0 for g in range(groups)}
    sizes = {}
    for group in range(groups):
        first = group * spec.buffer_size
        rows = range(first, min(spec.rows, first + spec.buffer_size))
        sizes[group] = len(rows)
        sim.add(RowGroupStarted(t_ns=t, row_group=group, first_row=first, rows=len(rows)))
        end_group = t
        for row in rows:
            outcome = _row_main_pass(sim, row, group, t, deferred)
            dropped_in[group] += outcome == "dropped"
            end_group = max(end_group, sim.last_t)
        if not any(g == group for _, _, g in deferred):
            _finish_group(sim, end_group, group, sizes[group], dropped_in[group])
        t = end_group
        sim.add(health_at(t, sim, len(deferred)))
    t_end = salvage(sim, deferred, t)
    for group in sorted({g for _, _, g in deferred}):
        _finish_group(sim, t_end, group, sizes[group], dropped_in[group])
    dropped = sum(dropped_in.values())
    sim.add(
        RunFinished(
            t_ns=t_end,
            outcome="complete" if not dropped else "failed",
            reason=None if not dropped else "rows_dropped",
            message=f"{spec.rows - dropped} rows completed, {dropped} dropped",
            rows_completed=spec.rows - dropped,
            rows_dropped=dropped,
        )
    )
    sim.out.sort(key=lambda item: (item[0], item[1]))
    for _, _, event in sim.out:
        yield event


def _row_main_pass(
    sim: _Sim, row: int, group: int, t: int, deferred: list[tuple[str, int, int]]
) -> str:
    """Runs one row's chain in the main pass: "ok", "dropped" or "deferred"."""
    for column in COLUMNS:
        sim.tasks += 1
        fail = "client_error" if row in sim.spec.drop_rows and column == COLUMNS[0] else None
        if fail is None and sim.spec.defer_every and sim.tasks % sim.spec.defer_every == 0:
            fail = "server_error"
        t, outcome = sim.run_task(column, row, group, t, None, fail)
        sim.last_t = t
        task = f"{column}:{row}"
        if outcome == "dropped":
            sim.add(
                RowDropped(
                    t_ns=t,
                    row_group=group,
                    row=row,
                    column=column,
                    task_id=task,
                    reason="client_error",
                    message=f"row {row}: {column} got HTTP 400",
                )
            )
            return "dropped"
        if outcome == "deferred":
            sim.add(
                TaskDeferred(
                    t_ns=t,
                    task_id=task,
                    row_group=group,
                    column=column,
                    row=row,
                    error_kind="server_error",
                    attempts=1,
                )
            )
            deferred.append((column, row, group))
            return "deferred"
    return "ok"


def _finish_group(sim: _Sim, t: int, group: int, size: int, dropped: int) -> None:
    sim.add(
        RowGroupFinished(
            t_ns=t,
            row_group=group,
            outcome="checkpointed",
            rows_completed=size - dropped,
            rows_dropped=dropped,
        )
    )


def salvage(sim: _Sim, deferred: list[tuple[str, int, int]], t: int) -> int:
    """One salvage round that recovers every deferred task and the rest of its row."""
    if not deferred:
        return t
    sim.add(SalvageStarted(t_ns=t, round=1, tasks=len(deferred)))
    end = t
    for column, row, group in deferred:
        start = COLUMNS.index(column)
        tt = t
        for col in COLUMNS[start:]:
            tt, _ = sim.run_task(col, row, group, tt, 1, None)
        end = max(end, tt)
    sim.add(SalvageFinished(t_ns=end, round=1, recovered=len(deferred), still_deferred=0))
    return end


def health_at(t: int, sim: _Sim, deferred: int) -> Health:
    return Health(
        t_ns=t,
        queue_depth=0,
        leases=0,
        in_flight=0,
        deferred=deferred,
        rows_completed=0,
        rows_dropped=0,
        row_groups_in_flight=1,
        domains=[DomainHealth(domain=DOMAIN, limit=sim.limit, in_flight=0, waiters=0)],
    )


def write_synthetic_record(path: str | Path, spec: SyntheticSpec) -> int:
    """Writes a record straight to disk (no recorder thread); returns the number of events."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        out.write(synthetic_header(spec).model_dump_json(by_alias=True, exclude_none=True) + "\n")
        for event in synthetic_events(spec):
            out.write(event.model_dump_json(exclude_none=True) + "\n")
            count += 1
    return count
