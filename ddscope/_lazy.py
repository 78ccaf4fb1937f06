"""Lazy re-exports for package ``__init__`` modules.

A package's entry points are listed once as ``name → defining module``; the module is imported
on first attribute access, so importing a light sub-module (``ddscope.exporters.otel.setup``)
does not load a heavy sibling (the OpenTelemetry SDK). Each package also imports the same names
under ``TYPE_CHECKING`` so type checkers see them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, resolving ``table`` names into ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # cached: the next access does not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace.get("__all__", ()), *table})

    return __getattr__, __dir__
