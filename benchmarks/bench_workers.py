"""Several worker processes sharing one provider's admission state through Redis.

    .venv/bin/python benchmarks/bench_workers.py [--requests 20000 --workers 1,2,4]

A one-column pipeline (``--requests`` rows, one model request each) against the mock endpoint in
a child process with ``--slots`` parallel slots (beyond them it answers 429) and ``--latency-ms``,
and ``max_parallel_requests`` = slots. Runs ``ddtrace run --workers W --admission redis://…`` for
each W (a throwaway ``redis-server`` on a free port), plus the plain single process without Redis
as the baseline, and prints for each: wall time of the job (process start-up and the merge
included) and of the engine (the merged record's run), requests per second, CPU ms per request
(every worker and the coordinator: ``RUSAGE_CHILDREN``; the mock and Redis are not counted),
Redis round trips per request on the request path (the workers' ``admission.json``), and the
mock's peak concurrency (must stay ≤ slots) and 429s.

Then the cooldown's reach: the widest worker count again, against a mock that answers every
``--cooldown-every``-th request 429 with ``Retry-After: 1``; from the merged record, for each
429 the delay until every other worker started its own (adopted) cooldown — the issue's budget
is 50 ms. Then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ddscope.engine.admission.shared.local_redis import LocalRedis
from ddscope.mock import MockBehavior, MockServerProcess
from ddscope.record.jsonl import RunReader

PIPELINE = """\
name: bench-workers
providers:
  - {{name: mock, endpoint: "{endpoint}"}}
models:
  - {{alias: m, provider: mock, model: mock-model, max_parallel_requests: {slots}, timeout_s: 30}}
columns:
  - {{name: topic, type: sampler, sampler: category, values: [a, b, c]}}
  - {{name: text, type: llm_text, model: m, prompt: "Write about {{{{ topic }}}}."}}
run:
  num_records: {records}
  buffer_size: {buffer}
"""


@dataclass(frozen=True)
class Figures:
    mode: str
    workers: int
    exit_code: int
    job_wall_s: float
    engine_s: float
    requests: int
    requests_per_s: float
    cpu_ms_per_request: float
    redis_round_trips_per_request: float | None
    mock_peak_concurrency: int
    mock_429: int


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def engine_seconds(record: Path) -> float:
    last = 0
    for _, event in RunReader(record).iter_dicts():
        last = max(last, event["t_ns"])
    return last / 1e9


def round_trips(out: Path) -> int | None:
    files = list(out.glob("workers/*/admission.json"))
    if not files:
        return None
    return sum(int(json.loads(p.read_text())["round_trips"]) for p in files)


def run_once(
    pipeline: Path, out: Path, workers: int | None, url: str | None, mock: MockServerProcess
) -> Figures:
    mock.reset_stats()
    command = [sys.executable, "-m", "ddscope.cli.main", "run", str(pipeline), "-o", str(out)]
    command += ["-q"]
    if workers is not None and url is not None:
        command += ["--workers", str(workers), "--admission", url]
    cpu0, wall0 = children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - wall0, children_cpu_s() - cpu0
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    stats = mock.stats()
    trips = round_trips(out)
    engine = engine_seconds(out / "run.jsonl")
    requests = max(1, stats.requests)
    return Figures(
        mode="plain" if workers is None else "redis",
        workers=workers or 1,
        exit_code=done.returncode,
        job_wall_s=round(wall, 2),
        engine_s=round(engine, 2),
        requests=stats.requests,
        requests_per_s=round(stats.requests / engine, 1) if engine else 0.0,
        cpu_ms_per_request=round(cpu * 1000 / requests, 3),
        redis_round_trips_per_request=None if trips is None else round(trips / requests, 3),
        mock_peak_concurrency=stats.max_in_flight,
        mock_429=stats.rate_limited,
    )


def propagation_ms(record: Path, workers: int) -> list[float]:
    """Per 429 and other worker: ms from the 429's cooldown to that worker's adopted one. The
    merge maps a cooldown id x of worker i to x·N + i, so ``id % N`` names the worker."""
    origins: list[tuple[int, int]] = []  # (t_ns, worker)
    adopted: dict[int, list[int]] = {i: [] for i in range(workers)}
    for _, event in RunReader(record).iter_dicts():
        if event["kind"] != "cooldown_started":
            continue
        worker = event["cooldown_id"] % workers
        if event.get("request_id") is not None:
            origins.append((event["t_ns"], worker))
        else:
            adopted[worker].append(event["t_ns"])
    delays = []
    for t_ns, origin in origins:
        for worker, times in adopted.items():
            later = [t for t in times if t_ns <= t <= t_ns + 1_000_000_000]
            if worker != origin and later:
                delays.append((min(later) - t_ns) / 1e6)
    return delays


def describe(figures: Figures, ideal_s: float, slots: int) -> str:
    trips = figures.redis_round_trips_per_request
    share = ideal_s / max(figures.engine_s, 1e-9)
    return (
        f"{figures.mode:5} workers={figures.workers}: exit {figures.exit_code}, job "
        f"{figures.job_wall_s:.2f} s, engine {figures.engine_s:.2f} s "
        f"({figures.requests_per_s:,.0f} req/s, {share:.0%} of ideal), CPU "
        f"{figures.cpu_ms_per_request:.3f} ms/request, Redis round trips "
        f"{'-' if trips is None else f'{trips:.3f}'}/request, mock peak "
        f"{figures.mock_peak_concurrency} (limit {slots}), 429s {figures.mock_429}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--buffer-size", type=int, default=500)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--cooldown-every", type=int, default=500)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    behavior = MockBehavior(latency_ms=args.latency_ms, capacity=args.slots)
    results: list[Figures] = []
    with (
        LocalRedis() as redis,
        MockServerProcess(behavior) as mock,
        tempfile.TemporaryDirectory() as tmp,
    ):
        pipeline = Path(tmp) / "pipeline.yaml"
        pipeline.write_text(
            PIPELINE.format(
                endpoint=mock.base_url,
                slots=args.slots,
                records=args.requests,
                buffer=args.buffer_size,
            )
        )
        ideal = args.requests * args.latency_ms / 1000 / args.slots
        print(
            f"{args.requests:,} requests, {args.slots} slots, {args.latency_ms:g} ms: "
            f"ideal engine time {ideal:.2f} s ({args.requests / ideal:,.0f} requests/s)"
        )
        runs: list[tuple[int | None, str | None]] = [(None, None)]
        runs += [(n, redis.url) for n in counts]
        for index, (workers, url) in enumerate(runs):
            figures = run_once(pipeline, Path(tmp) / f"out{index}", workers, url, mock)
            results.append(figures)
            print(describe(figures, ideal, args.slots))
        delays = cooldown_reach(args, max(counts), redis.url, Path(tmp))
    reach = {"workers": max(counts), "delays": len(delays)}
    if delays:
        reach |= {"p50_ms": statistics.median(delays), "max_ms": max(delays)}
    runs_json = [asdict(r) for r in results]
    print("JSON " + json.dumps({"ideal_s": round(ideal, 3), "runs": runs_json, "cooldown": reach}))


def cooldown_reach(args: argparse.Namespace, workers: int, url: str, tmp: Path) -> list[float]:
    every = args.cooldown_every
    behavior = MockBehavior(
        latency_ms=args.latency_ms, rate_limit_k=1, rate_limit_n=every, retry_after="1"
    )
    with MockServerProcess(behavior) as mock:
        pipeline = tmp / "cooldown.yaml"
        text = PIPELINE.format(
            endpoint=mock.base_url, slots=args.slots, records=every * 8, buffer=args.buffer_size
        )
        pipeline.write_text(text)
        run_once(pipeline, tmp / "cooldown", workers, url, mock)
    delays = propagation_ms(tmp / "cooldown" / "run.jsonl", workers)
    to_redis, to_worker = heard_ms(tmp / "cooldown")
    total = [a + b for a, b in zip(to_redis, to_worker, strict=True)]
    print(f"cooldown reach, {workers} workers, a 429 every {every} requests (budget 50 ms):")
    for name, values in (
        ("429 -> Redis (from then on every acquire is refused)", to_redis),
        ("Redis -> another worker's gate", to_worker),
        ("429 -> another worker's gate", total),
        ("429 -> another worker's record (merged timelines)", delays),
    ):
        if values:
            p50, top = statistics.median(values), max(values)
            print(f"  {name}: n={len(values)}, p50 {p50:.1f} ms, max {top:.1f} ms")
    return total


def heard_ms(out: Path) -> tuple[list[float], list[float]]:
    """What the workers measured themselves (one host, one clock): per message, ms from the
    429 until Redis had it, and from Redis until this worker handled it."""
    to_redis: list[float] = []
    to_worker: list[float] = []
    for path in out.glob("workers/*/admission.json"):
        for a, b in json.loads(path.read_text()).get("cooldown_lags_ms", []):
            to_redis.append(a)
            to_worker.append(b)
    return to_redis, to_worker


if __name__ == "__main__":
    main()
