"""Fewer young-generation garbage collections while a run is on.

CPython starts a young-generation collection every 700 tracked allocations net of frees. A run's
sinks keep events a little while (the record writes them every 100 ms, the OTel sink makes spans
256 events at a time), so the net count crosses 700 often, and each collection walks whatever is
alive then: measured in S5 (chain-3, 1,000 records; ``benchmarks/bench_s5_overhead.py``), 40
collections and ~23 ms per run with the record, 55 and 35–80 ms with OTLP too, against 5 and
1 ms without sinks — 8 to 25 µs of CPU per task. With a threshold of :data:`RUN_YOUNG_THRESHOLD`
none or one happen; memory grows by at most that many young objects (a few MB) between
collections, and cyclic garbage is still collected.

The interpreter's thresholds are set on entry and put back when the last run in the process
ends (runs may overlap: a count, not a stack of saved values). Only the young generation's
threshold changes; the older generations keep theirs.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

RUN_YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_active_runs = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_young_collections(threshold: int = RUN_YOUNG_THRESHOLD) -> Iterator[None]:
    """Raises the young generation's threshold to at least ``threshold`` while inside; the
    first of overlapping runs saves the interpreter's thresholds, the last puts them back. A
    threshold of 0 (collection disabled) is left as it is."""
    global _active_runs, _saved
    with _lock:
        if _active_runs == 0:
            _saved = gc.get_threshold()
            young, *older = _saved
            if young and young < threshold:
                gc.set_threshold(threshold, *older)
        _active_runs += 1
    try:
        yield
    finally:
        with _lock:
            _active_runs -= 1
            if _active_runs == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
