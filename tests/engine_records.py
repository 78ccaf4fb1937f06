"""Run records made by the REAL engine, fast and deterministic: for exporter tests and the S6
benchmarks (a test/benchmark support module, not shipped).

``run_pipeline`` runs SCENARIOS.md's chain-3 (topic → summary → analysis → rewrite, one domain)
on a :class:`~ddscope.engine.clock.FakeClock` with an in-process scripted chat client, so every
event — leases, waits, attempts, cooldowns, AIMD limit changes, deferrals, salvage rounds, drops,
health — is the engine's own, with no networking and no real sleeping. The driver lets every
runnable task reach its next clock wait, then jumps the clock to the next timer: fake time costs
nothing, so a run of hours of simulated traffic takes only the engine's CPU time — about 20,000
events per CPU second (a 1,000,000-event record: ~50 CPU s, ~90 MB peak RSS, written through
the real ``JsonlRecorder``).

The schedule is per task, not per call (:class:`EngineSpec`): tasks are numbered in (row,
column) order, the row read off the topic's uuid in the prompt (a seeded uuid sampler, so every
row's prompts are unique). Every ``rate_limit_every``-th task gets a 429 with Retry-After on its
first try (a cooldown, an AIMD decrease, a retry in the same pass); every ``defer_every``-th a
503 on each try of its first pass (deferred, then recovered in salvage); the summaries of
``drop_rows`` a 400 (the row is dropped). Latency is ``latency_ms`` plus up to 20 % jitter from
``random.Random(seed)``, drawn in call order (on one thread with a fake clock the engine's
order is deterministic).

Determinism: the engine seeds its backoff jitter with the run's seed and the try (worker.py), so
5xx retries back off as in a real run and still replay exactly; the header's wall-clock
``started_at_unix_ns`` is pinned. Same spec, same record, byte for byte.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ddscope.engine.client.answers import ChatResult
from ddscope.engine.clock import FakeClock
from ddscope.engine.pipeline.model import Pipeline, SamplerColumn
from ddscope.engine.pipeline.samplers import sample_cell
from ddscope.engine.scheduler import RunSummary, run_pipeline
from ddscope.errors import ClientError, RateLimited, ServerError
from ddscope.events import Event, EventBus, EventSink, ListSink, RunHeader
from ddscope.record.jsonl import JsonlRecorder

DOMAIN = "mock/mock-model"
STARTED_AT_UNIX_NS = 1_700_000_000_000_000_000  # pinned: the record must not depend on the wall
MAX_CLOCK_JUMPS = 50_000_000  # bounds the driver loop (1M events need ~200k)
SETTLE_YIELDS = 10_000  # bounds one settling of the event loop


@dataclass(frozen=True)
class EngineSpec:
    """What to run, and what the scripted endpoint answers. Tasks are numbered 1, 2, 3 … in
    (row, column) order: row 0's summary, analysis, rewrite, then row 1's (as in a chain)."""

    rows: int = 30
    buffer_size: int = 10
    max_parallel: int = 4
    latency_ms: float = 50.0
    rate_limit_every: int = 0  # every k-th task: 429 + Retry-After on its first try (0 = never)
    retry_after_s: float = 0.5
    defer_every: int = 0  # every k-th task: 503 on each try of its first pass, ok in salvage
    drop_rows: tuple[int, ...] = ()  # rows whose summary gets a 400: the row is dropped
    max_attempts_in_pass: int = 2
    health_interval_s: float = 2.0
    seed: int = 7


COLUMNS = ("summary", "analysis", "rewrite")
PROMPTS = ("Summarise {{ topic }}", "Analyse {{ summary }}", "Rewrite {{ analysis }}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def chain3_pipeline(spec: EngineSpec) -> Pipeline:
    """chain-3 as in SCENARIOS.md, with a uuid topic so that every row's prompts are unique."""
    return Pipeline.from_dict(
        {
            "name": "chain-3",
            # never connected to: the address only shows in the header (server.address/port)
            "providers": [{"name": "mock", "endpoint": "http://127.0.0.1:8000/v1"}],
            "models": [
                {
                    "alias": "m",
                    "provider": "mock",
                    "model": "mock-model",
                    "max_parallel_requests": spec.max_parallel,
                }
            ],
            "columns": [
                {"name": "topic", "type": "sampler", "sampler": "uuid"},
                *(
                    {"name": name, "type": "llm_text", "model": "m", "prompt": prompt}
                    for name, prompt in zip(COLUMNS, PROMPTS, strict=True)
                ),
            ],
            "run": {
                "num_records": spec.rows,
                "buffer_size": spec.buffer_size,
                "max_attempts_in_pass": spec.max_attempts_in_pass,
                "health_interval_s": spec.health_interval_s,
                "salvage_pause_s": 0.5,
                "seed": spec.seed,
            },
        }
    )


class ScriptedClient:
    """A chat client that answers by the spec's schedule; latency runs on the fake clock.

    A prompt names its task: its column by its first word, its row by the topic's uuid (the
    engine's own seeded sampler says which row has which uuid)."""

    def __init__(self, clock: FakeClock, spec: EngineSpec, pipeline: Pipeline) -> None:
        self.clock, self.spec = clock, spec
        self.rng = random.Random(spec.seed)  # latency jitter, drawn in call order
        topic = pipeline.columns[0]
        assert isinstance(topic, SamplerColumn)
        self.row_of = {str(sample_cell(topic, spec.seed, r)): r for r in range(spec.rows)}
        self.tries: dict[tuple[int, int], int] = {}  # (row, column index) → tries so far

    async def __aenter__(self) -> ScriptedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def chat(self, model: str, messages: list[dict[str, Any]], **_: Any) -> ChatResult:
        prompt = str(messages[-1]["content"])
        task = self._task_of(prompt)
        tries = self.tries[task] = self.tries.get(task, 0) + 1
        latency_s = self.spec.latency_ms / 1000 * (1 + 0.2 * self.rng.random())
        failure = self._failure(*task, tries)
        if failure is not None:
            await self.clock.sleep(latency_s / 10)  # a refusal comes back quicker than an answer
            raise failure
        await self.clock.sleep(latency_s)
        return ChatResult(f"out({prompt})", 12, 30, model, 200)

    def _task_of(self, prompt: str) -> tuple[int, int]:
        found = _UUID.search(prompt)
        column = next(i for i, p in enumerate(PROMPTS) if prompt.startswith(p.split()[0]))
        if found is None or found.group() not in self.row_of:
            raise AssertionError(f"a prompt the schedule cannot place: {prompt!r}")
        return self.row_of[found.group()], column

    def _failure(self, row: int, column: int, tries: int) -> Exception | None:
        spec, number = self.spec, row * len(COLUMNS) + column + 1
        if column == 0 and row in spec.drop_rows:
            return ClientError("HTTP 400: bad request", status_code=400)
        if spec.defer_every and number % spec.defer_every == 0:
            if tries <= spec.max_attempts_in_pass:
                return ServerError("HTTP 503: overloaded", status_code=503)
        elif spec.rate_limit_every and number % spec.rate_limit_every == 0 and tries == 1:
            return RateLimited("HTTP 429", retry_after_s=spec.retry_after_s)
        return None


class SteppingClock(FakeClock):
    """A FakeClock that can say when its next timer is due (so the driver jumps straight there)."""

    def next_due(self) -> float | None:
        # FakeClock keeps its timers in a heap; cancelled ones stay there until they come due.
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None


class PinnedHeader:
    """Passes events through to ``inner``, with the header's wall-clock start pinned."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.essential = bool(getattr(inner, "essential", False))

    def open(self, header: RunHeader) -> None:
        self.inner.open(header.model_copy(update={"started_at_unix_ns": STARTED_AT_UNIX_NS}))

    def handle(self, event: Event) -> None:
        self.inner.handle(event)

    def close(self) -> None:
        self.inner.close()


class _Discard:
    """A row writer that keeps nothing: the dataset is not what these records are for."""

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        pass

    def close(self) -> None:
        pass


async def _settle(loop: asyncio.AbstractEventLoop) -> None:
    """Yields until no callback is ready: every task is parked on a clock timer (or done)."""
    ready = getattr(loop, "_ready", None)  # asyncio's run queue; None on a foreign loop
    for _ in range(SETTLE_YIELDS if ready is not None else 50):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return


def run_engine(spec: EngineSpec, sinks: Iterable[EventSink], run_id: str = "engine") -> RunSummary:
    """Runs chain-3 on the real engine with a fake clock; events go to ``sinks``."""
    clock = SteppingClock()
    bus = EventBus([PinnedHeader(sink) for sink in sinks])
    pipeline = chain3_pipeline(spec)

    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        run = asyncio.create_task(
            run_pipeline(
                pipeline,
                bus=bus,
                output=_Discard(),
                clock=clock,
                client_factory=lambda provider, alias: ScriptedClient(clock, spec, pipeline),
                run_id=run_id,
            )
        )
        for _ in range(MAX_CLOCK_JUMPS):
            await _settle(loop)
            if run.done():
                return run.result()
            due = clock.next_due()
            if due is None:
                run.cancel()
                raise RuntimeError("the engine is stuck: no task can run and no timer is due")
            clock.advance(max(0.0, due - clock.now()))
        run.cancel()
        raise RuntimeError(f"the run did not finish within {MAX_CLOCK_JUMPS} clock jumps")

    return asyncio.run(main())


@lru_cache(maxsize=16)
def engine_events(spec: EngineSpec) -> tuple[RunHeader, tuple[Event, ...]]:
    """The header and events of the run (cached per spec: tests share them; do not mutate)."""
    sink = ListSink()
    run_engine(spec, [sink])
    assert sink.header is not None
    return sink.header, tuple(sink.events)


def write_engine_record(path: str | Path, spec: EngineSpec) -> int:
    """Writes the run's record with the real recorder (``run.jsonl``); returns its events."""
    recorder = JsonlRecorder(path)
    run_engine(spec, [recorder])
    return recorder.events_written


# The S6 benchmarks' workload (SCENARIOS.md S6: "a run.jsonl of 1,000,000 events ... produced by
# the engine against a fast endpoint"): chain-3 at 8 parallel requests, 20 ms answers, a 429 every
# 40th task, a deferral every 97th, two rows dropped. ``rows`` is set from the events wanted.
S6_SPEC = EngineSpec(
    buffer_size=50,
    max_parallel=8,
    latency_ms=20,
    rate_limit_every=40,
    defer_every=97,
    drop_rows=(5, 17),
)
S6_EVENTS_PER_ROW = 12.9  # what S6_SPEC produces, measured (998,910 events from 77,519 rows)
GENERATOR_VERSION = 2  # in the cache's file names: bump it when the records change


def s6_record(events: int, cache: Path | None = None) -> Path:
    """A cached S6 record of about ``events`` events (generated once: ~50 CPU s per million).
    Delete the cache directory to regenerate after an engine change."""
    rows = max(10, round(events / S6_EVENTS_PER_ROW))
    directory = cache or Path(tempfile.gettempdir()) / "ddscope-s6"
    path = directory / f"engine-chain3-{GENERATOR_VERSION}-{rows}.jsonl"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        cpu = time.process_time()
        count = write_engine_record(partial, replace(S6_SPEC, rows=rows))
        cpu = time.process_time() - cpu
        rate = count / cpu if cpu > 0 else float("inf")
        print(f"generated {path} with the engine: {count:,} events in {cpu:.1f} CPU s", end="")
        print(f" ({rate:,.0f} events per CPU s)")
        partial.replace(path)
    return path
