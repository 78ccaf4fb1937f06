"""``ddtrace merge DIR``: join the shard workers' parts in ``DIR/workers/`` into one run.

A job spread over hosts (``ddtrace run --shard I/N --admission …`` on each) leaves one part per
host; copy them to ``DIR/workers/shard-I-of-N/`` (the layout ``--workers`` uses on one machine)
and ``ddtrace merge DIR`` writes ``DIR/run.jsonl`` and ``DIR/data.jsonl``, which every command
reads as one run (``record.merge``). Every shard of the job must be there; merging again gives
the same files. A part that is not the shard of this job it is filed as, or whose ``data.jsonl``
lacks rows its record says were written, is refused (exit 2, naming the shard and the file)
before any file is written (``record.merge.check_part``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import click

from ddscope.cli.common import handle_errors, warn
from ddscope.engine.rows.row_groups import engine_group_rows, row_group_count
from ddscope.engine.rows.shards import Shard
from ddscope.errors import ConfigError
from ddscope.record.jsonl import RunReader
from ddscope.record.merge import MergeResult, check_part, merge_data, merge_records

WORKERS_DIR = "workers"
_PART = re.compile(r"^shard-(\d+)-of-(\d+)$")


def shard_count(out_dir: Path) -> int:
    """N from the part directories' names; a ConfigError when there are none or they disagree."""
    counts = {
        int(m.group(2))
        for p in (out_dir / WORKERS_DIR).glob("shard-*")
        if (m := _PART.match(p.name))
    }
    if len(counts) != 1:
        found = "none" if not counts else ", ".join(f"of {n}" for n in sorted(counts))
        raise ConfigError(
            f"{out_dir / WORKERS_DIR}: expected shard-I-of-N parts of one job, found {found}"
        )
    return counts.pop()


def merge_job(out_dir: Path, count: int) -> MergeResult:
    """Merges ``out_dir/workers/shard-I-of-N`` (I = 0…N−1) into ``out_dir``."""
    shards = [Shard(i, count) for i in range(count)]
    parts = [out_dir / WORKERS_DIR / s.dir_name for s in shards]
    for shard, part in zip(shards, parts, strict=True):
        if not (part / "run.jsonl").exists():
            raise ConfigError(f"shard {shard.label}: no record at {part / 'run.jsonl'}")
    headers = [RunReader(part / "run.jsonl").header for part in parts]
    first = headers[0]
    group_rows = engine_group_rows(first.buffer_size)
    groups = row_group_count(first.num_records, group_rows)
    checks = [
        check_part(
            part / "run.jsonl",
            part / "data.jsonl",
            label=f"shard {shard.label}",
            job=first,
            groups=shard.row_groups(first.num_records, first.buffer_size),
            group_rows=group_rows,
        )
        for shard, part in zip(shards, parts, strict=True)
    ]
    job_id = hashlib.sha256("/".join(h.run_id for h in headers).encode()).hexdigest()[:16]
    result = merge_records(
        [part / "run.jsonl" for part in parts],
        out_dir / "run.jsonl",
        job_id=job_id,
        num_records=first.num_records,
        row_groups=groups,
        labels=[f"shard {s.label}" for s in shards],
    )
    merge_data(
        [part / "data.jsonl" for part in parts],
        out_dir / "data.jsonl",
        [check.data_bytes for check in checks],
    )
    result.warnings += [w for check in checks for w in check.warnings]
    return result


@click.command("merge")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def merge_command(out_dir: Path) -> None:
    """Merge the shard parts in DIR/workers/ into DIR/run.jsonl and DIR/data.jsonl.

    \b
    For a job run with --shard I/N on several hosts: copy each host's output directory to
    DIR/workers/shard-I-of-N/, then merge. Exit codes: 0 merged, 1 merged but the job did not
    finish (a part has no run_finished), 2 a part is missing or unreadable.
    """
    result = merge_job(out_dir, shard_count(out_dir))
    for message in result.warnings:
        warn(message)
    record = out_dir / "run.jsonl"
    click.echo(
        f"{record}  ({result.parts} parts, {result.events:,} events); {out_dir / 'data.jsonl'}"
    )
    raise SystemExit(0 if result.finished else 1)
