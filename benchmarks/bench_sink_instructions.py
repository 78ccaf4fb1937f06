"""What each event sink costs per task in *instructions*: S5's event stream replayed through one
sink under valgrind's cachegrind, which counts the instructions every thread of the process ran.

``bench_sink_cost.py`` measures the same replay in CPU time, and S5 (``bench_s5_overhead.py``)
the sinks inside live runs; both move with the machine (a round of S5 by ±20 µs a task), so a
change worth 1–3 µs a task needs tens of interleaved rounds to show. An instruction count does
not move with the machine: the same code, inputs and environment give the same count within a
fraction of a per cent, so a change to a sink's code can be judged in one run of this script.
What it cannot see is the live run's memory: in S5 the same instructions run at about half the
replayed rate (see ``docs/PERFORMANCE.md``), so a count is a floor for a sink's live cost, and
the goal of issue 17 is still judged by S5.

Method: the run is recorded once (chain-3 on the mock endpoint, as ``bench_sink_cost.py``), then
for each sink two processes run under ``valgrind --tool=cachegrind --cache-sim=no``, each
replaying the record into a fresh sink once to warm up (imports, first-use caches) and then one
or two more times; the difference between their totals is one replay, start-up excluded. Each
replay, like a run, is inside ``fewer_young_collections`` and follows a full collection; the
one-replay process collects once more at its end so both processes make the same collections.
Nothing in a replay depends on time (``TIMELESS_ENV``, ``RECORD_BATCH``).
Sinks:

* ``record`` — ``JsonlRecorder`` writing run.jsonl (its writer thread included);
* ``otel``   — ``OtelSink`` into the SDK's in-memory exporter and metric reader;
* ``otlp``   — the sink ``ddtrace run`` builds, exporting over OTLP/gRPC to a receiver in a
  child process (encoding and the gRPC client included; the receiver is not under valgrind).

Needs valgrind (Debian's ``valgrind``). Usage::

    .venv/bin/python benchmarks/bench_sink_instructions.py [--records 300] [--sinks otel,otlp]
        [--keep DIR]    # then: cg_diff DIR/otlp.1.cg DIR/otlp.2.cg > one.cg; cg_annotate one.cg
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_s5_overhead import start_receiver
from bench_sink_cost import Finish, otel_sink, otlp_sink, recorded_stream

from ddscope.engine.gc_pacing import fewer_young_collections
from ddscope.events import EventSink
from ddscope.record.jsonl import JsonlRecorder, RunReader

SINKS = ("record", "otel", "otlp")
VALGRIND_TIMEOUT_S = 1200


# Nothing in a replay may depend on time, or the count would depend on how long valgrind took:
# the record writes every 256 events (S5 live: ≈ 240 in each 100 ms interval), spans are
# exported 512 at a time and metrics once, at the end.
RECORD_BATCH = 256
TIMELESS_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
    "PYTHONHASHSEED": "0",  # the same string hashes, so the same dict probes, in every process
}


def make_sink(name: str, workdir: Path, endpoint: str) -> tuple[EventSink, Finish]:
    if name == "record":
        recorder = JsonlRecorder(
            workdir / "replayed.jsonl", flush_interval_s=3600, max_buffer_events=RECORD_BATCH
        )
        return recorder, lambda: None
    if name == "otel":
        return otel_sink()
    return otlp_sink(endpoint)


def replay(name: str, record: Path, replays: int, endpoint: str) -> None:
    """The child under valgrind: one warm-up replay, then ``replays`` counted ones."""
    reader = RunReader(record)
    try:
        header, events = reader.header, list(reader)
    finally:
        reader.close()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(1 + replays):
            sink, finish = make_sink(name, Path(tmp), endpoint)
            gc.collect()
            with fewer_young_collections():
                sink.open(header)
                for event in events:
                    sink.handle(event)
                sink.close()
                finish()
        if replays == 1:
            gc.collect()  # the two-replay process makes one collection more before its last


def start_counting(
    name: str, record: Path, replays: int, endpoint: str, out: Path
) -> subprocess.Popen[str]:
    """Starts the child under cachegrind; its ``summary:`` line is the total of all threads."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out}",
        sys.executable,
        __file__,
        "--replay",
        name,
        str(record),
        str(replays),
        endpoint,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **TIMELESS_ENV},
    )


def summary(process: subprocess.Popen[str], out: Path) -> int:
    try:
        _, stderr = process.communicate(timeout=VALGRIND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"valgrind run ({out.name}) took over {VALGRIND_TIMEOUT_S} s") from None
    if process.returncode != 0:
        tail = stderr.strip().splitlines()[-5:]
        raise SystemExit(f"valgrind run failed ({out.name}): " + " | ".join(tail))
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"{out}: no summary line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--sinks", default=",".join(SINKS))
    parser.add_argument(
        "--keep",
        type=Path,
        help="leave the cachegrind files (SINK.1.cg, SINK.2.cg) in this folder, for "
        "cg_diff and cg_annotate: which functions a change made cheaper",
    )
    parser.add_argument("--replay", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        name, record, replays, endpoint = args.replay
        replay(name, Path(record), int(replays), endpoint)
        return
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    unknown = sorted(set(sinks) - set(SINKS))
    if unknown:
        parser.error(f"--sinks: unknown {', '.join(unknown)} (known: {', '.join(SINKS)})")
    if shutil.which("valgrind") is None:
        parser.exit(2, "bench_sink_instructions: valgrind not found (Debian package valgrind)\n")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    receiver, endpoint = start_receiver() if "otlp" in sinks else (None, "")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            header, events = recorded_stream(args.records, workdir)
            record = workdir / "s5.jsonl"
            tasks = sum(1 for e in events if e.kind == "lease_started")
            figures = {}
            for name in sinks:
                # both processes at once: the machine's two cores, and counts do not care
                outs = {n: (args.keep or workdir) / f"{name}.{n}.cg" for n in (1, 2)}
                runs = {n: start_counting(name, record, n, endpoint, o) for n, o in outs.items()}
                try:
                    totals = {n: summary(p, outs[n]) for n, p in runs.items()}
                finally:  # one failed or timed out: the other is not left running
                    for process in runs.values():
                        if process.poll() is None:
                            process.kill()
                            process.wait(timeout=30)
                per_task = (totals[2] - totals[1]) / tasks
                figures[name] = round(per_task)
                print(f"{name:7s} {per_task:10,.0f} instructions a task", flush=True)
    finally:
        if receiver is not None:
            assert receiver.stdin is not None
            receiver.stdin.close()
            receiver.wait(timeout=30)
    print(f"{len(events)} events, {tasks} tasks, {header.run_id}")
    line = {
        "benchmark": "bench_sink_instructions",
        "records": args.records,
        "events": len(events),
        "tasks": tasks,
        "instructions_per_task": figures,
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
