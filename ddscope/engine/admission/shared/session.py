"""One worker's use of the shared admission state: check it, open it, hand the run its options.

:class:`SharedAdmission` is what the CLI holds for ``--admission URL [--shard I/N]``:

* :meth:`check` — a synchronous PING before anything in the output directory is touched, so an
  unreachable Redis is one line and exit 2 (``AdmissionUnavailable`` is a ``ConfigError``);
* :meth:`engine_options` — inside the run's event loop: connects, subscribes to the pipeline's
  domains, and yields the keyword arguments for ``run_pipeline`` (the admission factory and the
  shard's row groups); closes the store after the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from ddscope.engine.admission.gate import AdmissionSettings, RequestAdmission
from ddscope.engine.admission.shared.gate import SharedRequestAdmission
from ddscope.engine.admission.shared.store import (
    SOCKET_TIMEOUT_S,
    AdmissionUnavailable,
    DomainSpec,
    RedisAdmissionStore,
    StoreCounters,
)
from ddscope.engine.admission.shared.url import AdmissionUrl
from ddscope.engine.emitter import Emitter
from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.row_groups import engine_group_rows, row_group_bounds
from ddscope.engine.rows.shards import Shard

COUNTERS_FILE = "admission.json"  # the worker's Redis round trips, beside its record


def domain_specs(pipeline: Pipeline) -> list[DomainSpec]:
    """The pipeline's domains as the shared state keys and bounds them."""
    specs = []
    for domain, alias in pipeline.domains().items():
        initial = 1 if alias.ramp_s > 0 and alias.max_parallel_requests > 1 else None
        specs.append(
            DomainSpec(
                domain=domain,
                endpoint=pipeline.provider_for(alias).endpoint,
                max_parallel=alias.max_parallel_requests,
                initial_limit=initial or alias.max_parallel_requests,
            )
        )
    return specs


@dataclass
class SharedAdmission:
    url: AdmissionUrl
    shard: Shard | None = None
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    counters: StoreCounters | None = None  # the store's, after the run

    def check(self) -> None:
        """PING, synchronously; AdmissionUnavailable (one line, no password) if it fails."""
        client = redis.Redis.from_url(
            self.url.raw, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        try:
            client.ping()
        except (RedisError, OSError) as exc:
            why = self.url.scrub(str(exc)) or type(exc).__name__
            raise AdmissionUnavailable(
                f"--admission: cannot reach Redis at {self.url.redacted()}: {why}"
            ) from None
        finally:
            client.close()

    def rows_owned(self, pipeline: Pipeline) -> int:
        """The rows this worker is to produce (all of them without a shard)."""
        run = pipeline.run
        if self.shard is None:
            return run.num_records
        size = engine_group_rows(run.buffer_size)
        groups = self.shard.row_groups(run.num_records, run.buffer_size)
        return sum(row_group_bounds(run.num_records, size, g)[1] for g in groups)

    def save_counters(self, run_dir: Path) -> None:
        """Writes ``admission.json`` (round trips, renewals, operations, and how long other
        workers' 429s took to reach this one) after the run."""
        if self.counters is not None:
            c = self.counters
            data: dict[str, Any] = {"round_trips": c.round_trips, "renewals": c.renewals}
            data["ops"] = c.ops
            data["cooldown_lags_ms"] = [[round(a, 2), round(b, 2)] for a, b in c.cooldown_lags_ms]
            (run_dir / COUNTERS_FILE).write_text(json.dumps(data))

    @contextlib.asynccontextmanager
    async def engine_options(self, pipeline: Pipeline) -> AsyncIterator[dict[str, Any]]:
        """``run_pipeline`` keyword arguments: ``admission_factory`` and ``row_groups``."""
        store = await RedisAdmissionStore.connect(self.url, worker_id=self.worker_id)
        try:
            await store.add_domains(domain_specs(pipeline))
            run = pipeline.run
            rows = self.shard.row_groups(run.num_records, run.buffer_size) if self.shard else None
            yield {"admission_factory": _factory(store), "row_groups": rows}
        finally:
            self.counters = store.counters
            await store.close()


AdmissionFactory = Callable[
    [Mapping[str, AdmissionSettings], Emitter, Callable[[str], None]], RequestAdmission
]


def _factory(store: RedisAdmissionStore) -> AdmissionFactory:
    def build(
        settings: Mapping[str, AdmissionSettings], emitter: Emitter, stop: Callable[[str], None]
    ) -> RequestAdmission:
        admission = SharedRequestAdmission(settings, emitter, store)
        admission.on_lost = stop
        return admission

    return build
