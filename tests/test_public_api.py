"""The typed public API: what the lazy loaders hand out at run time is exactly what type checkers
see through the ``TYPE_CHECKING`` imports, every exported name resolves, and the exceptions are
re-exported from the top."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import ddscope
from ddscope import errors

LAZY_PACKAGES = [
    "ddscope",
    "ddscope.engine",
    "ddscope.engine.admission",
    "ddscope.exporters.otel",
    "ddscope.exporters.trace",
]


def _type_checking_imports(module_name: str) -> dict[str, str]:
    source = Path(importlib.import_module(module_name).__file__ or "").read_text()
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                found.update({alias.name: stmt.module for alias in stmt.names})
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_table_and_type_checking_imports_agree(package: str) -> None:
    module = importlib.import_module(package)
    lazy = vars(module)["_LAZY"]
    assert _type_checking_imports(package) == lazy


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_and_is_listed(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name


def test_every_exception_is_exported_from_the_top() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.DdscopeError)
    }
    assert classes <= set(ddscope.__all__)
    assert ddscope.ConfigError is errors.ConfigError


def test_what_run_pipeline_needs_is_exported() -> None:
    params = inspect.signature(ddscope.run_pipeline).parameters
    assert {"pipeline", "bus", "output"} <= set(params)
    assert isinstance(ddscope.JsonlRowWriter, type)
    assert isinstance(ddscope.DiscardingRowWriter, type)


def test_version_comes_from_the_distribution() -> None:
    from importlib.metadata import version

    assert ddscope.__version__ == version("ddscope")


def test_import_ddscope_loads_neither_the_engine_nor_opentelemetry() -> None:
    code = (
        "import sys, ddscope; "
        "print(sorted(m for m in ('ddscope.engine.scheduler', 'opentelemetry', 'aiohttp') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
