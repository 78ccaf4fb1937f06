"""``ddtrace export RUN.jsonl --perfetto``: a run record as a native Perfetto trace.

The record is read once, as a stream (``RunReader.iter_dicts()``), and each TracePacket is
appended to the file as soon as it is known, so memory stays flat however long the run: only
open intervals, live flows and the track table are held. Layout, lanes and flows are described
in :mod:`ddscope.exporters.trace.timeline`; the packets are TrackEvent protobuf on one trusted
sequence with interned names (:mod:`ddscope.exporters.trace.perfetto_wire`). Open the file in
https://ui.perfetto.dev ("Open trace file").
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Literal

from ddscope.events import RunHeader
from ddscope.exporters.result import ExportResult
from ddscope.exporters.trace.perfetto_proto import ProtoTraceWriter
from ddscope.exporters.trace.perfetto_wire import WireTraceWriter
from ddscope.exporters.trace.timeline import export_timeline
from ddscope.exporters.trace.writer import TraceWriter

Encoder = Literal["wire", "proto"]


def export_perfetto(
    record: Path, out: Path, *, lenient: bool = False, encoder: Encoder = "wire"
) -> ExportResult:
    """Writes ``out`` (.pftrace) from ``record`` (run.jsonl).

    ``encoder="proto"`` builds every packet with the generated protobuf classes instead of the
    hand encoder: same trace, slower; kept as the reference for tests and the benchmark.
    Warnings: the reader's (truncated last line, skipped lines, unknown kinds) plus a note
    when intervals left open by a cut-off record were closed at its last timestamp.
    """

    def make_writer(file: IO[bytes], header: RunHeader) -> TraceWriter:
        return WireTraceWriter(file) if encoder == "wire" else ProtoTraceWriter(file)

    return export_timeline(Path(record), Path(out), make_writer, lenient=lenient)
