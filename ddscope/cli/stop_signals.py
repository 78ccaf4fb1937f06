"""Ctrl-C, SIGTERM (``docker stop``, ``timeout``) and SIGHUP (a closed terminal) end a run the
same way: the engine's ``stop_requested`` is set, the run ends with outcome ``cancelled``, the
record is closed and the summary printed. A second signal cancels the stop itself."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from ddscope.engine.pipeline.model import Pipeline
from ddscope.engine.rows.output import RowWriter
from ddscope.events import EventBus

if TYPE_CHECKING:
    from ddscope.engine.admission.shared.session import SharedAdmission
    from ddscope.engine.rows.resume import ResumePoint
    from ddscope.engine.scheduler import RunSummary

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest(asyncio.Event):
    """Set by SIGINT/SIGTERM/SIGHUP; ``why`` names the signal for the record's message."""

    why: str | None = None


async def run_until_stopped(
    pipeline: Pipeline,
    bus: EventBus,
    writer: RowWriter,
    point: ResumePoint | None,
    shared: SharedAdmission | None = None,
) -> RunSummary | None:
    """The run, with Ctrl-C, SIGTERM (``docker stop``, ``timeout``) and SIGHUP (a closed
    terminal) all ending it cleanly: outcome ``cancelled``, the record closed, a summary. A
    second signal cancels the stop itself."""
    from ddscope.engine.scheduler import run_pipeline  # heavy: asyncio engine and HTTP client

    loop = asyncio.get_running_loop()
    stop = StopRequest()
    main = asyncio.current_task()
    assert main is not None

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            main.cancel()
            return
        stop.why = "Ctrl-C" if sig == signal.SIGINT else sig.name
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if shared is None:
            return await run_pipeline(
                pipeline, bus=bus, output=writer, stop_requested=stop, resume=point
            )
        async with shared.engine_options(pipeline) as options:
            return await run_pipeline(
                pipeline, bus=bus, output=writer, stop_requested=stop, resume=point, **options
            )
    except asyncio.CancelledError:
        return None
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
