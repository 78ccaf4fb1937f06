"""The engine: runs a pipeline and emits typed events. It imports no OpenTelemetry, Perfetto,
click or HTML code (tests/test_layering.py keeps it so).

* :mod:`~ddscope.engine.pipeline` — config models, loading, the column DAG, templates, samplers;
* :mod:`~ddscope.engine.admission` — per provider/model request admission: AIMD, cooldowns,
  ramp, waiters, circuit breaker;
* :mod:`~ddscope.engine.scheduler` — the run loop (:func:`run_pipeline`);
* :mod:`~ddscope.engine.scheduling` — cells as tasks, the fair ready queue, task leases, the
  dispatcher and workers, the main pass, salvage rounds, early shutdown;
* :mod:`~ddscope.engine.rows` — row groups, row writers, ``--resume``, shards;
* :mod:`~ddscope.engine.client` — the OpenAI-compatible client, error classification, scrub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports

if TYPE_CHECKING:
    from ddscope.engine.pipeline import Pipeline
    from ddscope.engine.scheduler import RunSummary, run_pipeline

__all__ = ["Pipeline", "RunSummary", "run_pipeline"]
_LAZY = {
    "Pipeline": "ddscope.engine.pipeline",
    "RunSummary": "ddscope.engine.scheduler",
    "run_pipeline": "ddscope.engine.scheduler",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
