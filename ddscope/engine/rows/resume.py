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

**Bad input is refused, never half-used** (``ConfigError``, one line naming the file, line or
field; nothing on disk is changed, since the plan is made before any file is opened for
writing): a line of ``data.jsonl`` or of the journal that is not a row of this pipeline (not
JSON, ``_row`` not an integer in range, other columns), a path that is not a regular file, a
``run.N.jsonl`` beyond the segment the resume would write (it would be read as part of the
run). The only damage forgiven is the one a kill leaves: a cut-off last line (no newline), in
either file. An empty last record segment (a resume killed before its header) is no part of the
run (``record.segments``); this resume writes that segment again.

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
from ddscope.engine.rows.output import ROW_INDEX_KEY, journal_path
from ddscope.engine.rows.row_groups import engine_group_rows, row_group_bounds, row_group_count
from ddscope.errors import ConfigError, RecordError
from ddscope.record.jsonl import RunReader, record_parts
from ddscope.record.segments import segment_path, segments_named_after

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
    _check_files(record, len(parts), data)
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
        carried=_carried_rows(pipeline, data, keep, groups, rows),
    )


def _check_files(record: Path, segments: int, data: Path) -> None:
    """Refuses what the plan cannot read or would break (see the module): before any file
    is read for rows, so a refusal names the path at fault rather than an OS error."""
    for path in (data, journal_path(data)):
        if path.exists() and not path.is_file():
            raise ConfigError(f"--resume: {path} is not a regular file; move it away")
    # The new segment is run.N.jsonl (N = segments); a run.M.jsonl past it would be read as a
    # later part of this run by every command after the resume.
    ours = {segment_path(record, n) for n in range(segments + 1)}
    for path in segments_named_after(record):
        if path not in ours:
            raise ConfigError(
                f"--resume: {path} follows no segment of this run (the last is "
                f"{segment_path(record, segments - 1).name}); move it away"
            )


def _scan_record(reader: RunReader) -> _RecordFacts:
    facts = _RecordFacts(finished={}, max_id=0, outcome=None)
    for line_no, event in reader.iter_dicts():
        kind = event["kind"]
        if kind == "row_group_finished":
            group, rows = event["row_group"], event["rows_completed"]
            # the reader checks that fields exist, not their types: an unhashable row_group
            # would otherwise be a TypeError traceback
            if type(group) is not int or type(rows) is not int:
                raise ConfigError(
                    f"--resume: {reader.path}:{line_no}: row_group_finished with row_group "
                    f"{group!r} and rows_completed {rows!r} (integers expected)"
                )
            facts.finished[group] = (event["outcome"], rows)
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
    # group -> (rows on disk, end offset), groups in order
    ends = _group_ends(data, size, run.num_records)
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


def _group_ends(data: Path, size: int, num_records: int) -> dict[int, tuple[int, int]]:
    """Row group -> (rows on disk, byte offset after its last whole line)."""
    ends: dict[int, tuple[int, int]] = {}
    if not data.exists():
        return ends
    offset, previous = 0, -1
    try:
        with data.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    break  # a line cut off by a kill: not kept
                row = _row_index(line, f"{data}:{line_no}", num_records)
                if row <= previous:
                    raise ConfigError(f"--resume: {data}:{line_no}: _row {row!r} out of order")
                previous = row
                offset += len(line)
                group = row // size
                count, _ = ends.get(group, (0, 0))
                ends[group] = (count + 1, offset)
    except OSError as exc:
        raise ConfigError(f"--resume: {data}: cannot read: {exc.strerror or exc}") from exc
    return ends


def _row_index(line: bytes, where: str, num_records: int) -> int:
    """The ``_row`` of one line of data.jsonl or the journal; ConfigError naming ``where``
    (``file:line``) when the line is not a row of this run."""
    try:
        values = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--resume: {where}: not a row line ({exc})") from exc
    if type(values) is not dict or ROW_INDEX_KEY not in values:
        raise ConfigError(f"--resume: {where}: not a row line (no {ROW_INDEX_KEY!r})")
    row = values[ROW_INDEX_KEY]
    if type(row) is not int or not 0 <= row < num_records:  # type(): a bool is not a row
        raise ConfigError(
            f"--resume: {where}: {ROW_INDEX_KEY} {row!r} is not a row of this run "
            f"(an integer 0 to {num_records - 1} expected)"
        )
    return row


def _row_values(
    line: bytes, where: str, num_records: int, columns: frozenset[str]
) -> tuple[int, dict[str, object]]:
    """(row, values without ``_row``) of a finished row to carry: it must hold exactly the
    pipeline's columns, as the engine writes it again as it is."""
    row = _row_index(line, where, num_records)
    values: dict[str, object] = orjson.loads(line)
    del values[ROW_INDEX_KEY]
    if values.keys() != columns:
        found = ", ".join(sorted(values)) or "none"
        raise ConfigError(
            f"--resume: {where}: row {row} has columns {found}, not the pipeline's "
            f"({', '.join(sorted(columns))})"
        )
    return row, values


def _carried_rows(
    pipeline: Pipeline, data: Path, keep: int, groups_done: int, rows_kept: int
) -> dict[int, dict[str, object]]:
    """Finished rows of the groups generated again: from the cut-away end of data.jsonl and
    from the writer's journal (``output.JsonlRowWriter.note_row``)."""
    first_row = groups_done * engine_group_rows(pipeline.run.buffer_size)
    carried = {
        row: values
        for row, values in _whole_rows(pipeline, journal_path(data), 0, 0).items()
        if row >= first_row
    }
    # the kept prefix is ``rows_kept`` whole lines, one a row
    carried.update(_whole_rows(pipeline, data, keep, rows_kept))
    return carried


def _whole_rows(
    pipeline: Pipeline, path: Path, offset: int, lines_before: int
) -> dict[int, dict[str, object]]:
    """The whole rows of ``path`` after ``offset``, which ``lines_before`` lines precede
    (row → values without ``_row``).

    Both files are appended to a line at a time, so a kill leaves at most a last line without
    its newline: that one is skipped. Any other bad line is refused, naming it: it is not what
    ddscope wrote, and carrying it would put it in the dataset."""
    carried: dict[int, dict[str, object]] = {}
    if not path.exists():
        return carried
    num_records = pipeline.run.num_records
    columns = frozenset(c.name for c in pipeline.columns)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            line_no = lines_before  # so a message names the line's number in the file
            for line in handle:
                line_no += 1
                if not line.endswith(b"\n"):
                    break
                row, values = _row_values(line, f"{path}:{line_no}", num_records, columns)
                carried[row] = values
    except OSError as exc:
        raise ConfigError(f"--resume: {path}: cannot read: {exc.strerror or exc}") from exc
    return carried
