"""The run's Perfetto trace, gzip-compressed and base64-encoded for the report's "Open in
Perfetto" button and download link.

Only small traces are embedded: the report must stay a few megabytes. The record's size is the
first gate (exporting a huge record would also cost more time than the whole report); the
compressed trace's size is the second. A report without an embedded trace says why, lets the
user pick the ``.pftrace`` file instead, and names the command that writes it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ddscope.exporters.trace.perfetto import export_perfetto

MAX_RECORD_BYTES = 40_000_000  # ≈ 250,000 events: exported in ~2 s
MAX_EMBED_BYTES = 1_600_000  # compressed trace; ≈ 2.1 MB once base64-encoded


@dataclass(frozen=True)
class EmbeddedTrace:
    name: str  # file name offered for download, e.g. run.pftrace
    size: int  # bytes of the uncompressed trace
    sha256: str  # of the uncompressed trace
    gzip_base64: str | None  # None: not embedded (see ``why_not``)
    why_not: str | None = None


def embed_trace(record: Path, *, lenient: bool = False) -> EmbeddedTrace:
    name = record.with_suffix(".pftrace").name
    if record.stat().st_size > MAX_RECORD_BYTES:
        why = f"the record is {record.stat().st_size / 1e6:.0f} MB, too long to embed its trace"
        return EmbeddedTrace(name, 0, "", None, why)
    with tempfile.TemporaryDirectory(prefix="ddscope-report-") as tmp:
        trace = Path(tmp) / name
        export_perfetto(record, trace, lenient=lenient)
        size, digest = trace.stat().st_size, _sha256(trace)
        packed = Path(tmp) / (name + ".gz")
        with trace.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if packed.stat().st_size > MAX_EMBED_BYTES:
            why = f"the trace is {size / 1e6:.0f} MB, too large to embed"
            return EmbeddedTrace(name, size, digest, None, why)
        encoded = base64.b64encode(packed.read_bytes()).decode("ascii")
    return EmbeddedTrace(name, size, digest, encoded)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
