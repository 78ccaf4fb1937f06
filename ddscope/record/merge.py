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

**Checked first** (:func:`check_part`, before anything is written, so a refused merge changes
no file): each part must be the shard of *this* job it is filed as — the same pipeline as the
first part (header ``num_records``, ``buffer_size``, ``fingerprint``), its ``run_started``
owning the shard's slice, every ``row_group`` it names inside that slice — and its
``data.jsonl`` must hold every row its record says was written (the record's
``row_group_finished`` is emitted only after the write, so fewer rows on disk means a lost or
wrong file), each row inside the shard's rows. A cut-off last line (a killed worker) is left
out of the job's file with a warning, never copied into the middle of it.
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

from ddscope.errors import RecordError
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


def merge_data(parts: list[Path], out: Path, lengths: list[int] | None = None) -> int:
    """Concatenates the shards' ``data.jsonl`` files (in shard order) into ``out``; returns the
    bytes written. A missing part (a shard with no rows) adds nothing. ``lengths``: how many
    bytes of each part to take (its whole lines, :attr:`PartCheck.data_bytes`)."""
    tmp = out.with_name(out.name + ".merging")
    with tmp.open("wb") as target:
        for index, part in enumerate(parts):
            if part.exists():
                with part.open("rb") as source:
                    if lengths is None:
                        shutil.copyfileobj(source, target, 1 << 20)
                    else:
                        _copy_bytes(source, target, lengths[index])
    os.replace(tmp, out)
    return out.stat().st_size


def _copy_bytes(source: Any, target: Any, count: int) -> None:
    while count > 0:
        chunk = source.read(min(count, 1 << 20))
        if not chunk:
            break
        target.write(chunk)
        count -= len(chunk)


@dataclass
class PartCheck:
    """What :func:`check_part` found: the bytes of the part's ``data.jsonl`` to merge (its
    whole lines) and warnings about it to show."""

    data_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def check_part(
    record: Path,
    data: Path,
    *,
    label: str,
    job: RunHeader,
    groups: range,
    group_rows: int,
) -> PartCheck:
    """Checks that ``record`` (with its segments) and ``data`` are the part ``label`` of the job
    whose first part's header is ``job``, owning row groups ``groups`` of ``group_rows`` rows
    each (see the module). RecordError naming the part and the file otherwise."""
    reader = RunReader(record)
    header = reader.header
    for name in ("num_records", "buffer_size", "fingerprint"):
        mine, theirs = getattr(header, name), getattr(job, name)
        if mine != theirs:
            what = name if name == "fingerprint" else f"{name} {mine}, not {theirs}"
            raise RecordError(
                f"{label}: {record} is not a part of this job (its {what} differs from the "
                "first shard's: another run's record?)"
            )
    written: dict[int, int] = {}  # row group -> rows its last row_group_finished wrote
    started = False
    for line_no, event in reader.iter_dicts():
        kind = event["kind"]
        if kind == "run_started" and not started:
            started = True
            if event.get("row_groups") != groups.stop:
                raise RecordError(
                    f"{label}: {reader.path}:{line_no}: run_started owns row groups up to "
                    f"{event.get('row_groups')!r}, not {groups.stop}: not this shard's record "
                    "(another run's?)"
                )
        group = event.get("row_group")
        if group is not None and (type(group) is not int or group not in groups):
            raise RecordError(
                f"{label}: {reader.path}:{line_no}: row group {group!r} is not one of this "
                f"shard's ({groups.start}-{groups.stop - 1}): not this shard's record "
                "(another run's?)"
            )
        if kind == "resumed" and type(event.get("row_groups_done")) is int:
            # the resume cut data.jsonl back to before this group: what was written of the
            # groups after it is on disk again only once a later event says so
            for cut in [g for g in written if g >= event["row_groups_done"]]:
                del written[cut]
        elif kind == "row_group_finished" and group is not None:
            count = event["rows_completed"]
            written[group] = count if type(count) is int else 0
    result = PartCheck()  # the record's own warnings: merge_records reads it again, and says
    rows = range(groups.start * group_rows, min(groups.stop * group_rows, job.num_records))
    on_disk = _data_rows(data, label, rows, group_rows, result)
    for group in sorted(written):
        count, found = written[group], on_disk.get(group, 0)
        if found < count:
            state = "is missing" if not data.exists() else f"holds {found} of them"
            raise RecordError(
                f"{label}: {record} says {count} rows of row group {group} were written, but "
                f"{data} {state}; copy the shard's data.jsonl with its run.jsonl"
            )
    return result


def _data_rows(
    data: Path, label: str, rows: range, group_rows: int, result: PartCheck
) -> dict[int, int]:
    """Row group -> rows of it in ``data`` (whole lines), each checked to be one of the
    shard's ``rows``; sets ``result.data_bytes``."""
    found: dict[int, int] = {}
    if not data.exists():
        return found
    if not data.is_file():
        raise RecordError(f"{label}: {data} is not a regular file")
    try:
        with data.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    result.warnings.append(
                        f"{label}: {data}:{line_no}: cut-off last line left out (worker killed?)"
                    )
                    break
                try:
                    row = orjson.loads(line).get("_row")
                except (orjson.JSONDecodeError, AttributeError) as exc:
                    raise RecordError(f"{label}: {data}:{line_no}: not a row line") from exc
                if type(row) is not int or row not in rows:
                    raise RecordError(
                        f"{label}: {data}:{line_no}: _row {row!r} is not one of this shard's rows "
                        f"({rows.start}-{rows.stop - 1}): another run's data.jsonl?"
                    )
                found[row // group_rows] = found.get(row // group_rows, 0) + 1
                result.data_bytes += len(line)
    except OSError as exc:
        raise RecordError(f"{label}: {data}: cannot read: {exc.strerror or exc}") from exc
    return found


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
