"""A DataDesigner scheduler event file → ddscope ``run.jsonl`` records, one per segment (run).

The files are written whole or not at all (a ``.partial`` renamed at the end), so a record that
exists is complete; each holds the translation ``health`` and ``export`` would read, which other
ddscope tools (and older ddscope versions) can then open like any run.jsonl.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ddscope.errors import ConfigError, RecordError
from ddscope.integrations.datadesigner.reader import DataDesignerReader, scan_segments


@dataclass
class Converted:
    records: list[Path] = field(default_factory=list)
    events: int = 0
    warnings: list[str] = field(default_factory=list)


def convert_file(source: Path, out_dir: Path, *, lenient: bool = False) -> Converted:
    """Writes ``out_dir/run.jsonl`` (one segment) or ``run-1.jsonl``, ``run-2.jsonl``, …"""
    scan = scan_segments(source)
    if not lenient or not scan.segments:
        scan.refuse_bad_start(source)
    count = len(scan.segments)
    if count == 0:
        raise RecordError(f"{source}:1: no scheduler_job_started: not a complete DataDesigner run")
    targets = [
        out_dir / ("run.jsonl" if count == 1 else f"run-{i}.jsonl") for i in range(1, count + 1)
    ]
    existing = [str(t) for t in targets if t.exists()]
    if existing:  # never replace a record: it may be the only copy of a run
        raise ConfigError(f"{existing[0]}: exists; choose another --out directory or remove it")
    result = Converted()
    for index, target in enumerate(targets, 1):
        reader = DataDesignerReader(source, lenient=lenient, segment=index)
        result.events += _write(reader, target)
        result.records.append(target)
        result.warnings += [w for w in reader.finish_warnings() if "runs (segments)" not in w]
    return result


def _write(reader: DataDesignerReader, target: Path) -> int:
    partial = target.with_name(target.name + ".partial")
    events = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as file:
            header = reader.header.model_dump(mode="json", by_alias=True, exclude_none=True)
            file.write(orjson.dumps(header) + b"\n")
            for _line, event in reader.iter_dicts():
                file.write(orjson.dumps({k: v for k, v in event.items() if v is not None}))
                file.write(b"\n")
                events += 1
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return events
