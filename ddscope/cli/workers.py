"""``ddtrace run PIPELINE --admission redis://…`` with ``--workers N`` or ``--shard I/N``.

* ``--shard I/N --admission URL`` runs ONE worker of a job (on any host): the row groups of
  shard I (``engine.shards``), request admission shared through Redis, its own record and rows
  in ``OUT`` (``--resume`` continues it). Without ``--shard``, ``--admission`` alone runs the
  whole pipeline as one worker that shares each provider's limits with every other job on the
  same Redis.
* ``--workers N --admission URL`` is the coordinator on one machine: it checks Redis, starts N
  shard workers (``OUT/workers/shard-I-of-N/``, each ``-q``, its output in ``worker.log``),
  shows one progress view, takes over a worker that was killed (once per shard: the same shard
  again with ``--resume``, so its rows already on disk are kept and none is made twice), and
  at the end merges the parts into ``OUT/run.jsonl`` and ``OUT/data.jsonl`` (``record.merge``),
  which every command reads as one run. Ctrl-C/SIGTERM are passed on to the workers, which stop
  cleanly; the parts are merged all the same.

The Redis URL reaches the workers in the environment (``DDSCOPE_ADMISSION``), never on a
command line (``ps`` shows those) — it may hold a password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ddscope.cli.console.job_progress import JobProgress
from ddscope.cli.console.next_steps import next_commands
from ddscope.cli.merge import WORKERS_DIR, merge_job
from ddscope.cli.out_dir import claim_out_dir
from ddscope.engine.admission.shared.session import COUNTERS_FILE, SharedAdmission
from ddscope.engine.admission.shared.url import AdmissionUrl
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.shards import Shard
from ddscope.errors import ConfigError
from ddscope.record.jsonl import RunReader

__all__ = ["Coordinator", "SharedAdmission", "WorkerOptions", "check_sharding_options"]

ADMISSION_ENV = "DDSCOPE_ADMISSION"
WORKER_LOG = "worker.log"
POLL_S = 0.2  # how often the coordinator looks at its workers and redraws the progress line
MAX_TAKEOVERS = 1  # per shard: a worker that keeps dying is a bug to report, not to loop on


@dataclass
class WorkerOptions:
    """The ``run`` options a worker gets from its coordinator (``-o``, ``-q`` aside)."""

    records: int | None = None
    buffer_size: int | None = None
    breaker_policy: str | None = None
    record_text: bool = False
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None

    def argv(self) -> list[str]:
        args: list[str] = []
        for flag, value in (
            ("--records", self.records),
            ("--buffer-size", self.buffer_size),
            ("--breaker-policy", self.breaker_policy),
            ("--otlp-endpoint", self.otlp_endpoint),
            ("--otlp-protocol", self.otlp_protocol),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args + (["--record-text"] if self.record_text else [])


def check_sharding_options(
    workers: int | None, shard: str | None, admission: str | None, prometheus_port: int | None
) -> tuple[AdmissionUrl | None, Shard | None]:
    """Usage errors (exit 2) for the combinations that make no sense."""
    if workers is not None and shard is not None:
        raise ConfigError("--workers and --shard: choose one (a coordinator, or one worker)")
    if (workers is not None or shard is not None) and admission is None:
        which = "--workers" if workers is not None else "--shard"
        raise ConfigError(
            f"{which} needs --admission redis://HOST:PORT/DB (the workers share each "
            f"provider's limits there; env {ADMISSION_ENV})"
        )
    if workers is not None and prometheus_port is not None:
        raise ConfigError("--prometheus-port: not with --workers (one port, several processes)")
    url = AdmissionUrl.parse(admission) if admission is not None else None
    return url, Shard.parse(shard) if shard is not None else None


# -- the coordinator ------------------------------------------------------------------------


@dataclass
class _Worker:
    shard: Shard
    part_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    takeovers: int = 0
    exit_code: int | None = None
    skipped: bool = False  # --resume of a job whose shard had already completed


@dataclass
class Coordinator:
    pipeline_file: Path
    pipeline: Pipeline
    out_dir: Path
    workers: int
    url: AdmissionUrl
    options: WorkerOptions
    quiet: bool = False
    resume: bool = False
    notes: list[str] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        SharedAdmission(self.url).check()  # one line, exit 2, before anything is touched
        with claim_out_dir(self.out_dir):
            started = time.monotonic()
            crew = [self._prepare(Shard(i, self.workers)) for i in range(self.workers)]
            progress = JobProgress(sys.stderr, self.pipeline.run.num_records, self.workers)
            progress.quiet = self.quiet
            self._supervise(crew, progress)
            progress.finish()
            return self._merge_and_report(crew, time.monotonic() - started)

    def _prepare(self, shard: Shard) -> _Worker:
        worker = _Worker(shard, self.out_dir / WORKERS_DIR / shard.dir_name)
        worker.part_dir.mkdir(parents=True, exist_ok=True)
        record = worker.part_dir / "run.jsonl"
        if self.resume and record.exists() and _completed(record):
            worker.skipped, worker.exit_code = True, 0
            return worker
        self._spawn(worker, resume=self.resume and record.exists())
        return worker

    def _spawn(self, worker: _Worker, *, resume: bool) -> None:
        command = [sys.executable, "-m", "ddscope.cli.main", "run", str(self.pipeline_file)]
        command += ["--shard", worker.shard.label, "-o", str(worker.part_dir), "-q"]
        command += self.options.argv() + (["--resume"] if resume else [])
        env = {**os.environ, ADMISSION_ENV: self.url.raw}
        with (worker.part_dir / WORKER_LOG).open("ab") as log:
            worker.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        worker.exit_code = None

    def _supervise(self, crew: list[_Worker], progress: JobProgress) -> None:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                running = sum(self._poll(w, crew) for w in crew)
                progress.update([w.part_dir for w in crew], running)
                if running == 0:
                    return
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _poll(self, worker: _Worker, crew: list[_Worker]) -> bool:
        """True while the worker runs; takes a killed worker over (see the module)."""
        if worker.proc is None or worker.exit_code is not None:
            return False
        code = worker.proc.poll()
        if code is None:
            if self._stopping:
                worker.proc.send_signal(signal.SIGTERM)
            return True
        worker.exit_code = code
        killed = code < 0 and -code != signal.SIGTERM
        if killed and not self._stopping and worker.takeovers < MAX_TAKEOVERS:
            worker.takeovers += 1
            name = signal.Signals(-code).name
            self.notes.append(
                f"shard {worker.shard.label}: worker killed ({name}); taken over with --resume"
            )
            self._spawn(worker, resume=(worker.part_dir / "run.jsonl").exists())
            return True
        return False

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stopping = True  # the next poll passes SIGTERM on to every worker

    def _merge_and_report(self, crew: list[_Worker], elapsed_s: float) -> int:
        usage = [w for w in crew if w.exit_code == 2]
        if usage:
            raise ConfigError(f"shard {usage[0].shard.label}: {_last_line(usage[0])}")
        records = [w.part_dir / "run.jsonl" for w in crew]
        missing = [w for w, r in zip(crew, records, strict=True) if not r.exists()]
        if missing:
            click.echo(f"shard {missing[0].shard.label} left no record: {_last_line(missing[0])}")
            return 1
        result = merge_job(self.out_dir, self.workers)
        for note in self.notes:
            click.echo(note, err=True)
        click.echo(self._summary(crew, elapsed_s))
        ok = result.finished and all(w.exit_code == 0 for w in crew)
        return 0 if ok else 1

    def _summary(self, crew: list[_Worker], elapsed_s: float) -> str:
        header = RunReader(self.out_dir / "run.jsonl")
        finished = None
        for event in header:
            if event.kind == "run_finished":
                finished = event
        total = self.pipeline.run.num_records
        trips = _round_trips(crew)
        head = (
            f"Job of {self.workers} workers "
            + (
                f"{finished.outcome} in {elapsed_s:.1f} s"
                if finished
                else "did not finish (a worker's record has no end)"
            )
            + "."
        )
        rows = (
            f" {finished.rows_completed}/{total} rows written to {self.out_dir / 'data.jsonl'}, "
            f"{finished.rows_dropped} dropped."
            if finished
            else ""
        )
        why = f" {finished.message}" if finished is not None and finished.message else ""
        record = self.out_dir / "run.jsonl"
        return (
            f"{head}{rows}{why} Admission shared at {self.url.redacted()}{trips}. "
            f"Run record (merged from {self.out_dir / WORKERS_DIR}/*): {record}.\n"
            + next_commands(record)
        )


def _completed(record: Path) -> bool:
    outcome = None
    for _, event in RunReader(record).iter_dicts():
        if event["kind"] == "run_finished":
            outcome = event["outcome"]
    return outcome == "complete"


def _last_line(worker: _Worker) -> str:
    log = worker.part_dir / WORKER_LOG
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    text = lines[-1] if lines else f"exit code {worker.exit_code}"
    return click.unstyle(text)[:300]


def _round_trips(crew: list[_Worker]) -> str:
    trips = 0
    for worker in crew:
        path = worker.part_dir / COUNTERS_FILE
        if path.exists():
            trips += int(json.loads(path.read_text()).get("round_trips", 0))
    return f" ({trips:,} Redis round trips on the request path)" if trips else ""
