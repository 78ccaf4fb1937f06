"""Model-client transports under concurrency, against the mock endpoint in a child process.

    .venv/bin/python benchmarks/bench_client.py [--requests 3000 --concurrency 32 --latency-ms 50]

Runs the same load three ways — ModelClient with its default transport (aiohttp, called
directly), ModelClient over plain httpx, and a bare aiohttp ClientSession (the floor) — and
prints, for each, wall time,
its ratio to the ideal (requests × latency ÷ concurrency) and client CPU ms per request
(``time.process_time``: the server runs in another process). Then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import aiohttp
import orjson

from ddscope.engine.client.model_client import ModelClient
from ddscope.mock import MockBehavior, MockServerProcess

MESSAGES = [{"role": "user", "content": "write one sentence about topic a"}]
Call = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Figures:
    wall_s: float
    ratio_to_ideal: float
    cpu_ms_per_request: float
    errors: int


async def drive(call: Call, requests: int, concurrency: int) -> int:
    """Sends ``requests`` calls with ``concurrency`` workers; returns the number that failed."""
    remaining = iter(range(requests))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in remaining:  # the shared iterator bounds the total
            try:
                await call()
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def timed(call: Call, requests: int, concurrency: int) -> tuple[float, float, int]:
    await drive(call, concurrency, concurrency)  # warm-up: open the connections
    wall0, cpu0 = time.perf_counter(), time.process_time()
    errors = await drive(call, requests, concurrency)
    return time.perf_counter() - wall0, time.process_time() - cpu0, errors


async def run_model_client(url: str, transport: str, requests: int, concurrency: int):
    async with ModelClient(url, transport=transport) as client:  # type: ignore[arg-type]

        async def call() -> str:
            return (await client.chat("mock-model", MESSAGES)).text

        return await timed(call, requests, concurrency)


async def run_bare_aiohttp(url: str, requests: int, concurrency: int):
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"content-type": "application/json"}
    body = orjson.dumps({"model": "mock-model", "messages": MESSAGES})
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call() -> str:
            async with session.post(f"{url}/chat/completions", data=body) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())["choices"][0]["message"]["content"]

        return await timed(call, requests, concurrency)


VARIANTS = {
    "modelclient_aiohttp": lambda url, n, c: run_model_client(url, "aiohttp", n, c),
    "modelclient_httpx": lambda url, n, c: run_model_client(url, "httpx", n, c),
    "bare_aiohttp": run_bare_aiohttp,
}


def measure(name: str, url: str, args: argparse.Namespace, ideal_s: float) -> Figures:
    runs = [
        asyncio.run(VARIANTS[name](url, args.requests, args.concurrency))
        for _ in range(args.repeat)
    ]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    return Figures(
        wall_s=round(wall, 3),
        ratio_to_ideal=round(wall / ideal_s, 3),
        cpu_ms_per_request=round(cpu * 1000 / args.requests, 3),
        errors=sum(r[2] for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median)")
    args = parser.parse_args()
    ideal_s = args.requests * args.latency_ms / 1000 / args.concurrency
    results: dict[str, Figures] = {}
    with MockServerProcess(MockBehavior(latency_ms=args.latency_ms)) as server:
        for name in VARIANTS:
            results[name] = measure(name, server.base_url, args, ideal_s)
            f = results[name]
            print(
                f"{name:22s} wall {f.wall_s:7.2f} s   {f.ratio_to_ideal:5.2f}× ideal   "
                f"CPU {f.cpu_ms_per_request:6.3f} ms/request   errors {f.errors}",
                flush=True,
            )
    print(f"ideal {ideal_s:.2f} s ({args.requests} requests × {args.latency_ms:g} ms ÷ "
          f"{args.concurrency})")  # fmt: skip
    line = {
        "benchmark": "bench_client",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "repeat": args.repeat,
        "ideal_s": round(ideal_s, 3),
        "results": {name: asdict(f) for name, f in results.items()},
    }
    print("JSON " + json.dumps(line))


if __name__ == "__main__":
    main()
