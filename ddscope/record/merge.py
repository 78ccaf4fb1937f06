"""Several workers' records and datasets joined into one run: ``run.jsonl`` and ``data.jsonl``.

The workers of a sharded job (``ddtrace run --workers N``) run *at the same time*, each writing
its own record part (with its own segments if it was resumed). The segment reader
(``record.jsonl``) joins parts one after another; concurrent parts need a merge by time instead,
so this module writes one ordinary record that every command (``health``, ``export``,
``report``, ``--otlp`` replay) reads unchanged:

* **Time.** Each part's events are shifted onto the earliest part's time axis (by the gap between
  the headers' wall-clock starts) and merged in time order, streaming: memory holds one pending
  event per part, whatever the length of the run.
* **Ids.** Lease, request and cooldown ids count from 1 in every worker, so part ``i`` of ``n``
  maps id ``x`` to ``x · n + i`` (unique, and the same on every merge). Salvage rounds likewise
  (``(r − 1) · n + i + 1``): each worker's rounds stay separate intervals. Row groups and rows
  are already global (shards own disjoint slices).
* **The run.** One ``run_started`` (the job's rows and row groups) and one ``run_finished`` at
  the last part's end: ``complete`` only if every part completed, else the worst outcome
  (``failed`` > ``cancelled`` > ``shutdown``) with the first such part's reason, its message
  prefixed by the shard; rows added up. A part with no ``run_finished`` (a worker killed and
  not taken over) leaves the job without one too, so ``health`` says the run did not finish.
* **Header.** The first part's, with the job's ``run_id``, the earliest start, the job's total
  ``num_records`` and ``settings.workers``.

``data.jsonl``: the shards own contiguous row-group slices, so the job's file is the parts'
files one after another (each already in row order). Both files are written to a temporary name
and renamed, so a reader never sees half a merge.
"""

from __future__ import annotations

import heapq
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ddscope.events import RunHeader
from ddscope.record.jsonl import RunReader
from ddscope.record.recorder import header_line

ID_FIELDS = ("lease_id", "request_id", "cooldown_id")
_OUTCOME_RANK = {"complete": 0, "shutdown": 1, "cancelled": 2, "failed": 3}
_DROPPED_KINDS = frozenset({"run_started", "run_finished"})


@dataclass
class MergeResult:
    events: int = 0
    parts: int = 0
    finished: bool = True  # every part had a run_finished
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Part:
    index: int
    label: str
    reader: RunReader
    offset_ns: int
    finished: dict[str, Any] | None = None


def merge_records(
    parts: list[Path],
    out: Path,
    *,
    job_id: str,
    num_records: int,
    row_groups: int,
    labels: list[str],
) -> MergeResult:
    """Merges worker records (``parts``: each a ``run.jsonl``, read with its segments) into
    ``out``. ``labels`` name the parts in the run's message (``shard 1/3``)."""
    readers = [RunReader(path) for path in parts]
    start = min(r.header.started_at_unix_ns for r in readers)
    merged = [
        _Part(i, labels[i], r, r.header.started_at_unix_ns - start) for i, r in enumerate(readers)
    ]
    header = _job_header(readers[0].header, job_id, start, num_records, len(parts))
    result = MergeResult(parts=len(parts))
    tmp = out.with_name(out.name + ".merging")
    # Parts that hold prompts and completions are private files (``recorder``): so is the
    # record made of them. fchmod too: a stale .merging file keeps its mode through O_TRUNC.
    private = any(reader.header.record_text for reader in readers)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    if private:
        os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(header_line(header) + b"\n")
        last_t = 0
        first = True
        for t_ns, _, _, event in heapq.merge(*(_events(p, len(parts)) for p in merged)):
            if first:
                started = {"kind": "run_started", "t_ns": t_ns, "num_records": num_records}
                handle.write(_line({**started, "row_groups": row_groups}))
                first = False
            handle.write(_line(event))
            result.events += 1
            last_t = t_ns
        finish = _run_finished(merged, last_t)
        result.finished = finish is not None
        if finish is not None:
            handle.write(_line(finish))
    os.replace(tmp, out)
    for part in merged:
        result.warnings += part.reader.finish_warnings()
    return result


def merge_data(parts: list[Path], out: Path) -> int:
    """Concatenates the shards' ``data.jsonl`` files (in shard order) into ``out``; returns the
    bytes written. A missing part (a shard with no rows) adds nothing."""
    tmp = out.with_name(out.name + ".merging")
    with tmp.open("wb") as target:
        for part in parts:
            if part.exists():
                with part.open("rb") as source:
                    shutil.copyfileobj(source, target, 1 << 20)
    os.replace(tmp, out)
    return out.stat().st_size


def _job_header(
    first: RunHeader, job_id: str, start: int, num_records: int, workers: int
) -> RunHeader:
    settings = {**first.settings, "num_records": num_records, "workers": workers}
    return first.model_copy(
        update={
            "run_id": job_id,
            "started_at_unix_ns": start,
            "num_records": num_records,
            "settings": settings,
            "segment": 0,
        }
    )


def _events(part: _Part, count: int) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
    """The part's events on the job's time axis, ids remapped; run start/finish held back.
    Yields ``(t_ns, part, seq, event)``: ``heapq.merge`` orders by time, ties by part and then
    the part's own order, so it never compares two events."""
    seq = 0
    for _, event in part.reader.iter_dicts():
        kind = event["kind"]
        t_ns = event["t_ns"] + part.offset_ns
        if kind == "run_finished":
            part.finished = {**event, "t_ns": t_ns}
        if kind in _DROPPED_KINDS:
            continue
        event["t_ns"] = t_ns
        for name in ID_FIELDS:
            value = event.get(name)
            if type(value) is int:
                event[name] = value * count + part.index
        if kind in ("salvage_started", "salvage_finished"):
            event["round"] = (event["round"] - 1) * count + part.index + 1
        seq += 1
        yield t_ns, part.index, seq, event


def _run_finished(parts: list[_Part], last_t: int) -> dict[str, Any] | None:
    if any(p.finished is None for p in parts):
        return None
    finishes = [(p, p.finished) for p in parts if p.finished is not None]
    worst_part, worst = max(finishes, key=lambda pf: _OUTCOME_RANK.get(pf[1]["outcome"], 3))
    event: dict[str, Any] = {
        "kind": "run_finished",
        "t_ns": max(last_t, *(f["t_ns"] for _, f in finishes)),
        "outcome": worst["outcome"],
        "rows_completed": sum(f["rows_completed"] for _, f in finishes),
        "rows_dropped": sum(f["rows_dropped"] for _, f in finishes),
    }
    if worst["outcome"] != "complete":
        event["reason"] = worst.get("reason")
        message = worst.get("message")
        event["message"] = f"{worst_part.label}: {message}" if message else worst_part.label
    return event


def _line(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
