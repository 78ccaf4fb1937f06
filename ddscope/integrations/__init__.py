"""Adapters that turn another engine's events into ddscope's (DESIGN.md §7: other engines are
sources of events). Every view — health, Perfetto, Chrome JSON, OTLP — then works on them
unchanged.

* :mod:`~ddscope.integrations.datadesigner` — NVIDIA NeMo DataDesigner: its recorded
  ``scheduler_events.jsonl`` and, live, its scheduler and request-admission events.
"""
