"""Helpers for the DataDesigner tests and benchmark (not a test module).

* :func:`synthetic_events` — a DataDesigner 0.9.5-shaped ``scheduler_events.jsonl`` run,
  written event by event the way its async scheduler does for chain-3 (a sampler then three
  chained LLM columns): row groups admitted and checkpointed, each task's dependency_ready →
  … → task_lease_released, 429 deferrals re-run later, health snapshots with
  request_pressure and retryable_outcomes. Task ids are DataDesigner's own stable ids, so the
  row of every cell is known to the test.
* :func:`trace_processor_query` — Perfetto's trace processor (``../shared/tools``), for
  "loads without import errors" checks; tests skip with a reason when it is not there.
"""

from __future__ import annotations

import csv
import gzip
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from ddscope.integrations.datadesigner.layout import stable_task_id

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "datadesigner"
HEALTHY_FIXTURE = FIXTURES / "dd-0.9.5-healthy-30rec.scheduler_events.jsonl.gz"
S1_FIXTURE = FIXTURES / "dd-0.9.5-s1-interrupted.scheduler_events.jsonl.gz"
TRACE_PROCESSOR = SHARED / "tools" / "trace_processor_shell"
MODEL_COLUMNS = ("summary", "analysis", "rewrite")
RESOURCE = "request:mock/mock"


@dataclass
class SyntheticDD:
    records: int = 30
    buffer_size: int = 10
    parallel: int = 4
    every_429: int = 0  # every k-th model task execution is deferred with a 429 (0: none)
    run_id: str = "run-synthetic"
    t0: float = 1000.0
    outcome: str = "success"


class _Writer:
    def __init__(self, spec: SyntheticDD) -> None:
        self.spec = spec
        self.t = spec.t0
        self.seq = 0
        self.lines: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.limit = spec.parallel
        self.cooldown = 0.0
        self.executions = 0

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        self.t += 0.0005
        corr = {
            "run_id": self.spec.run_id,
            "row_group": fields.pop("row_group", None),
            "task_column": fields.pop("column", None),
            "task_type": fields.pop("task_type", None),
            "scheduling_group_kind": None,
            "scheduling_group_identity_hash": None,
            "task_execution_id": fields.get("task_execution_id"),
        }
        line = {
            "event_kind": kind,
            "captured_at_monotonic": round(self.t, 9),
            "sequence": self.seq,
            "captured_correlation": corr,
            "task_id": fields.pop("task_id", None),
            "task_execution_id": fields.pop("task_execution_id", None),
            "task_lease_id": fields.pop("task_lease_id", None),
            "scheduler_resource_key": None,
            "reason_or_result": fields.pop("reason_or_result", None),
            "snapshot": {"resource_limits": {"submission": 1024, RESOURCE: self.spec.parallel}},
            "diagnostics": fields.pop("diagnostics", {}),
        }
        self.lines.append(line)
        return line

    def snapshot(self, reason: str, queued: int, active_groups: int) -> None:
        total = sum(self.counts.values())
        self.event(
            "scheduler_health_snapshot",
            diagnostics={
                "reason": reason,
                "active_row_groups": active_groups,
                "queued_total": queued,
                "in_flight_tasks": 0,
                "deferred_tasks": 0,
                "request_pressure": {
                    "enabled": True,
                    "resources": {
                        "mock/mock/chat": {
                            "effective_max": self.spec.parallel,
                            "current_limit": self.limit,
                            "in_flight_count": 0,
                            "waiters": 0,
                            "cooldown_remaining_seconds": self.cooldown,
                            "last_outcome": "success",
                        }
                    },
                },
                "retryable_outcomes": {
                    "window_size": 20,
                    "rolling_total": min(total, 20),
                    "rolling_counts": {},
                    "cumulative_counts": dict(self.counts),
                    "retryable_details": {},
                },
            },
        )
        self.cooldown = 0.0

    def task(self, column: str, group: int, row: int | None, deferred: bool = False) -> None:
        task_type = "from_scratch" if row is None else "cell"
        task_id = stable_task_id(column, group, row, task_type)
        ids = {"row_group": group, "column": column, "task_type": task_type, "task_id": task_id}
        for kind in ("dependency_ready", "ready_enqueued", "selected"):
            self.event(kind, **ids)
        self.executions += 1
        lease = f"lease-{self.executions}"
        execution = f"task-exec-{self.executions}"
        request = {RESOURCE: 1} if row is not None else {}
        diag = {"resource_request": {"submission": 1, **request}}
        self.event("task_lease_acquired", **ids, task_lease_id=lease, diagnostics=diag)
        run = {"task_lease_id": lease, "task_execution_id": execution, "diagnostics": diag}
        self.event("worker_spawned", **ids, **run)
        self.t += 0.02  # the work itself
        if deferred:
            self.event("retry_deferred", **ids, **run)
            self.counts["rate_limit"] = self.counts.get("rate_limit", 0) + 1
            self.limit, self.cooldown = max(1, self.limit - 1), 1.0
        elif row is not None:
            self.counts["success"] = self.counts.get("success", 0) + 1
        self.event("task_completed", **ids, **run)
        self.event("task_lease_released", **ids, **run, reason_or_result="released")


def synthetic_events(spec: SyntheticDD) -> list[dict[str, Any]]:
    w = _Writer(spec)
    groups = -(-spec.records // spec.buffer_size)
    w.event("scheduler_job_started", diagnostics=_job_started(spec, groups))
    w.snapshot("start", 0, 0)
    for group in range(groups):
        size = min(spec.buffer_size, spec.records - group * spec.buffer_size)
        w.event("row_group_admitted", diagnostics={"row_group": group, "row_group_size": size})
        w.snapshot("row_group_admitted", 1, 1)
        w.task("topic", group, None)
        for column in MODEL_COLUMNS:
            again = []
            for row in range(size):
                deferred = spec.every_429 > 0 and (w.executions + 1) % spec.every_429 == 0
                w.task(column, group, row, deferred)
                if deferred:
                    again.append(row)
                if row % 5 == 4:
                    w.snapshot("admission_blocked", size - row, 1)
            w.snapshot("queue_drained", len(again), 1)
            for row in again:  # the deferred cells run again (and succeed)
                w.task(column, group, row)
        w.event(
            "row_group_checkpointed",
            diagnostics={"row_group": group, "row_group_size": size, "dropped_rows": 0}
            | {"surviving_rows": size, "result": "finalized", "active_row_groups": 0},
        )
        w.snapshot("row_group_checkpointed", 0, 0)
    w.event("scheduler_job_completed", reason_or_result=spec.outcome, diagnostics={})
    return w.lines


def _job_started(spec: SyntheticDD, groups: int) -> dict[str, Any]:
    scheduling = [
        {"column": "topic", "strategy": "full_column", "resource_request": {"submission": 1}}
    ] + [
        {
            "column": c,
            "strategy": "cell_by_cell",
            "resource_request": {"submission": 1, "llm_wait": 1, RESOURCE: 1},
            "request_resource": "mock/mock/chat",
        }
        for c in MODEL_COLUMNS
    ]
    return {
        "run_id": spec.run_id,
        "num_records": spec.records,
        "buffer_size": spec.buffer_size,
        "row_group_count": groups,
        "column_scheduling": scheduling,
        "resource_limits": {"submission": 1024, "llm_wait": 1024, RESOURCE: spec.parallel},
    }


def write_dd_file(path: Path, lines: list[dict[str, Any]], *, gz: bool = False) -> Path:
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def requires_trace_processor() -> Path:
    """The trace processor binary, or a pytest skip saying why it cannot be used."""
    if not TRACE_PROCESSOR.exists():
        pytest.skip(f"Perfetto's trace processor is not here ({TRACE_PROCESSOR}: ../shared absent)")
    probe = subprocess.run(
        [str(TRACE_PROCESSOR), "--version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(f"trace processor does not run here (libprotobuf32?): {probe.stderr[:200]}")
    return TRACE_PROCESSOR


def trace_processor_query(trace: Path, sql: str) -> list[dict[str, str]]:
    """Rows of ``sql`` over ``trace``; fails the test if the trace does not load."""
    binary = requires_trace_processor()
    done = subprocess.run(
        [str(binary), "query", str(trace), sql], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"trace processor could not load {trace}: {done.stderr[-500:]}"
    return list(csv.DictReader(io.StringIO(done.stdout)))


IMPORT_ERRORS_SQL = (
    "select name, idx, severity, source, value from stats "
    "where value > 0 and severity in ('error', 'data_loss')"
)


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    for line in raw.splitlines():
        if line.strip():
            yield orjson.loads(line)


def requires_fixtures() -> None:
    if not HEALTHY_FIXTURE.exists() or not S1_FIXTURE.exists():
        pytest.skip(f"the DataDesigner fixtures are not here ({FIXTURES}: ../shared absent)")
