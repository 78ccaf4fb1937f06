"""Resume: continue a run that was killed, cancelled or shut down, without redoing its rows.

What is already done is read from the files, not trusted from memory:

* ``data.jsonl`` — rows are written a whole row group at a time, in row-group order. A group
  is done if it holds all its rows, or if the record says it was *checkpointed* with exactly
  the rows on disk (others were dropped for good, e.g. a client error). A group the record says
  was *abandoned* (written with what it had when a run stopped) is not done: its missing rows
  are generated now. A group the record does not mention (its last flush was lost) counts as
  done if a later group was written after it. Everything from the first group that is not
  done (an abandoned group, a group cut off by a kill, a half line) is cut away and generated
  again.
* the record (all segments, ``record.jsonl.record_parts``) — which groups were checkpointed,
  the largest lease/request/cooldown id (the new segment's ids start after it), and whether the
  run already completed (nothing to resume).
* the pipeline — the first header's ``fingerprint`` (:func:`pipeline_fingerprint`: a digest per
  column and model, and the seed and sizes) must match the pipeline given now; otherwise the
  resume is refused naming what changed, since rows already written would not match new ones.

Finished rows of the groups generated again are *carried*: read back from the cut-away end of
``data.jsonl`` and from the writer's journal ``data.pending.jsonl`` (rows finished but not yet
written when the run stopped, ``engine.output``), and written with their group without a
request. Only requests on the wire when a run was killed are sent again.

Rows depend only on (seed, column, row) and the model's answer to the same prompt, so the final
``data.jsonl`` holds the rows an uninterrupted run writes. The new segment of the record is
``run.N.jsonl`` (``RunHeader.segment`` N, same ``run_id``), read together with the earlier ones
as one run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ddscope.engine.pipeline.model import LlmTextColumn, Pipeline
from ddscope.engine.rows.output import journal_path, read_journal
from ddscope.engine.rows.row_groups import engine_group_rows, row_group_bounds, row_group_count
from ddscope.errors import ConfigError, RecordError
from ddscope.record.jsonl import RunReader, record_parts

_ID_FIELDS = ("lease_id", "request_id", "cooldown_id")


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a resumed run starts: the groups and rows kept, and its record segment."""

    run_id: str
    segment: int  # the new record part's number (run.N.jsonl)
    row_groups_done: int  # groups 0 .. row_groups_done-1 are on disk and not generated again
    rows_done: int
    keep_bytes: int  # the prefix of data.jsonl that holds them
    first_id: int  # ids of the new segment start here (unique across segments)
    # rows completed in the groups cut away (an abandoned group's finished rows): written
    # again with their group, never generated again
    carried: dict[int, dict[str, object]] = field(default_factory=dict)


def pipeline_fingerprint(pipeline: Pipeline) -> dict[str, str]:
    """What decides the rows, part by part: a digest per column and model, and the seed and
    sizes as values (so a change can be named: ``run.seed: 0 -> 1``)."""
    found: dict[str, str] = {
        "columns": ",".join(c.name for c in pipeline.columns),
        "run.seed": str(pipeline.run.seed),
        "run.num_records": str(pipeline.run.num_records),
        "run.buffer_size": str(pipeline.run.buffer_size),
    }
    for column in pipeline.columns:
        found[f"columns.{column.name}"] = _digest(column.model_dump(mode="json"))
        if isinstance(column, LlmTextColumn):
            alias = pipeline.model_for(column.name)
            assert alias is not None  # the pipeline checked its aliases
            # the endpoint may move (a new mock port); the model and its sampling may not
            what = alias.model_dump(mode="json", include={"model", "temperature", "max_tokens"})
            found[f"models.{alias.alias}"] = _digest(what)
    return found


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def describe_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """``['run.seed: 0 -> 1', 'columns.summary changed', ...]``; empty when equal."""
    changes: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is None or after is None:
            changes.append(f"{key} {'added' if before is None else 'removed'}")
        elif key == "columns" or key.startswith("run."):  # plain values, not digests
            changes.append(f"{key}: {before} -> {after}")
        else:
            changes.append(f"{key} changed")
    return changes


@dataclass
class _RecordFacts:
    finished: dict[int, tuple[str, int]]  # row group -> (outcome, rows written)
    max_id: int
    outcome: str | None  # the last run_finished outcome


def plan_resume(pipeline: Pipeline, record: Path, data: Path) -> ResumePoint:
    """Checks that the run in ``record``/``data`` can be resumed with ``pipeline`` and says
    where it continues. ConfigError (one line) when it cannot."""
    parts = record_parts(record)
    if not record.exists():
        raise ConfigError(f"--resume: {record} not found; nothing to resume (run without it)")
    try:
        reader = RunReader(parts)
        facts = _scan_record(reader)
    except RecordError as exc:
        raise ConfigError(f"--resume: the run record cannot be read: {exc}") from exc
    changes = describe_changes(reader.header.fingerprint, pipeline_fingerprint(pipeline))
    if not reader.header.fingerprint:
        changes = ["the record has no pipeline fingerprint (written by an older ddscope)"]
    if changes:
        raise ConfigError(
            f"--resume: the pipeline differs from the one {record} was started with "
            f"({'; '.join(changes)}); resume with the original pipeline, or start a new run "
            "without --resume"
        )
    if facts.outcome == "complete":
        raise ConfigError(f"--resume: the run in {record.parent} already completed")
    groups, rows, keep = _kept_groups(pipeline, data, facts.finished)
    return ResumePoint(
        run_id=reader.header.run_id,
        segment=len(parts),
        row_groups_done=groups,
        rows_done=rows,
        keep_bytes=keep,
        first_id=facts.max_id + 1,
        carried=_carried_rows(pipeline, data, keep, groups),
    )


def _scan_record(reader: RunReader) -> _RecordFacts:
    facts = _RecordFacts(finished={}, max_id=0, outcome=None)
    for _, event in reader.iter_dicts():
        kind = event["kind"]
        if kind == "row_group_finished":
            facts.finished[event["row_group"]] = (event["outcome"], event["rows_completed"])
        elif kind == "run_finished":
            facts.outcome = event["outcome"]
        for name in _ID_FIELDS:
            value = event.get(name)
            if type(value) is int and value > facts.max_id:
                facts.max_id = value
    return facts


def _kept_groups(
    pipeline: Pipeline, data: Path, finished: dict[int, tuple[str, int]]
) -> tuple[int, int, int]:
    """(groups kept, rows in them, bytes of data.jsonl that hold them)."""
    run = pipeline.run
    size = engine_group_rows(run.buffer_size)
    total = row_group_count(run.num_records, size)
    ends = _group_ends(data, size)  # group -> (rows on disk, end offset), groups in order
    last = max(ends, default=-1)
    kept, rows, keep = 0, 0, 0
    for group in range(last + 1):
        count, end = ends.get(group, (0, keep))
        full = count == row_group_bounds(run.num_records, size, group)[1]
        known = finished.get(group)
        # a group the record does not know was resolved if a later group was written after it
        done = full or (group < last if known is None else known == ("checkpointed", count))
        if not done:
            break
        kept, rows, keep = group + 1, rows + count, end
    if kept == last + 1:  # then groups the record says were written with no rows (all dropped)
        while kept < total and finished.get(kept) == ("checkpointed", 0):
            kept += 1
    return kept, rows, keep


def _group_ends(data: Path, size: int) -> dict[int, tuple[int, int]]:
    """Row group -> (rows on disk, byte offset after its last whole line)."""
    ends: dict[int, tuple[int, int]] = {}
    if not data.exists():
        return ends
    offset, previous = 0, -1
    with data.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break  # a line cut off by a kill: not kept
            try:
                row = orjson.loads(line)["_row"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"--resume: {data}:{line_no}: not a row line ({exc})") from exc
            if type(row) is not int or row <= previous:
                raise ConfigError(f"--resume: {data}:{line_no}: _row {row!r} out of order")
            previous = row
            offset += len(line)
            group = row // size
            count, _ = ends.get(group, (0, 0))
            ends[group] = (count + 1, offset)
    return ends


def _carried_rows(
    pipeline: Pipeline, data: Path, keep: int, groups_done: int
) -> dict[int, dict[str, object]]:
    """Finished rows of the groups generated again: from the cut-away end of data.jsonl and
    from the writer's journal (``output.read_journal``)."""
    first_row = groups_done * engine_group_rows(pipeline.run.buffer_size)
    carried = {row: v for row, v in read_journal(journal_path(data)).items() if row >= first_row}
    carried.update(_rows_after(data, keep))
    return carried


def _rows_after(data: Path, offset: int) -> dict[int, dict[str, object]]:
    """The whole rows after ``offset`` (row → values without ``_row``): what a stopped run
    finished in the groups that are generated again."""
    carried: dict[int, dict[str, object]] = {}
    if not data.exists():
        return carried
    with data.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            if not line.endswith(b"\n"):
                break
            values = orjson.loads(line)
            carried[values.pop("_row")] = values
    return carried
