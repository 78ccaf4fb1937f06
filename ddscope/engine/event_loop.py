"""The event loop a run gets: uvloop where it is installed, else asyncio's own.

Why uvloop: much of the hot path is the event loop's (sockets, callbacks, timers); on uvloop a
model task costs less CPU with the same rows and the same record — S5 interleaved over 4 rounds
(``benchmarks/bench_s5_overhead.py --loop``): no sinks 403 → 392 µs a task, the record + OTLP
503 → 468 µs (the instrumented run gains most). It is already installed with ``uvicorn[standard]``
(the mock endpoint's server) on CPython off Windows.

``DDSCOPE_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop if it imports), ``uvloop``
(required: an error if missing), ``asyncio``. Code that embeds :func:`run_pipeline` in its own
loop keeps its loop: the engine is correct on both (uvloop's timers are millisecond-rounded;
:class:`~ddscope.engine.clock.MonotonicClock` makes the engine's timers never fire early on it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, cast, get_args

from ddscope.errors import ConfigError

__all__ = ["EVENT_LOOP_ENV", "LoopChoice", "chosen_loop", "run"]

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOP_ENV = "DDSCOPE_EVENT_LOOP"

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def chosen_loop(choice: str | None = None) -> tuple[str, LoopFactory | None]:
    """The loop's name and its factory (None: asyncio's default) for ``choice``, else the
    environment's ``DDSCOPE_EVENT_LOOP``, else ``auto``. Raises ConfigError for an unknown
    choice, or ``uvloop`` asked for where it is not installed."""
    source = "event loop" if choice is not None else EVENT_LOOP_ENV
    value = (choice if choice is not None else os.environ.get(EVENT_LOOP_ENV, "")).strip()
    value = value.lower() or "auto"
    if value not in get_args(LoopChoice):
        allowed = ", ".join(get_args(LoopChoice))
        raise ConfigError(f"{source} must be one of {allowed}; got {value!r}")
    if value == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if value == "uvloop":
            raise ConfigError(
                f"{source} is uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return "asyncio", None
    return "uvloop", cast(LoopFactory, uvloop.new_event_loop)


def run(main: Coroutine[Any, Any, T], choice: str | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop (see :func:`chosen_loop`)."""
    try:
        _, factory = chosen_loop(choice)
    except ConfigError:
        main.close()  # never awaited: closed so Python does not warn about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
