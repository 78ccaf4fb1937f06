"""What an exporter reports back to the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportResult:
    out: Path | str  # a file path, or an endpoint for OTLP replay
    events: int  # events read from the record
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)  # one line each, "file:line: ..." where known
