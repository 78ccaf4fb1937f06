"""The package's shape: no import cycles (function-level imports included), arrows pointing one way
(DESIGN.md §2), and the heavy or UI libraries only where they belong.

The import graph is read from the source with ``ast`` — every ``import`` and ``from … import``
anywhere in a module, except under ``if TYPE_CHECKING:`` (those never run) — so a cycle hidden
behind a function-level import is found too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "ddscope"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import that can run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (item for child in node.orelse for item in _imports(child))
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]
        yield from _imports(node)


def _targets(module: str, names: list[str]) -> set[str]:
    """The ddscope modules an import statement loads (``from pkg import submodule`` included)."""
    found = {f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES}
    if (module in MODULES and len(found) < len(names)) or not names:
        found.add(module)
    return {m for m in found if m in MODULES}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = set()
        for module, names in _imports(tree):
            graph[name] |= _targets(module, names) - {name}
    return graph


def _external_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {module.split(".")[0] for module, _ in _imports(tree)}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports() -> None:
    graph = _graph()
    # cli/main.py loads its commands lazily by name (importlib), but cli/run.py imports the
    # engine inside functions; the graph must see at least some of those edges
    assert "ddscope.events" in graph["ddscope.engine.scheduler"]
    assert any(m.startswith("ddscope.engine") for m in graph["ddscope.cli.run"])


def test_no_import_cycles() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


# DESIGN.md §2: cli → engine, exporters, integrations, mock; engine and exporters → events;
# never engine → exporters or cli.
FORBIDDEN = {
    "ddscope.engine": ("ddscope.exporters", "ddscope.cli", "ddscope.mock", "ddscope.integrations"),
    "ddscope.exporters": ("ddscope.engine", "ddscope.cli", "ddscope.mock"),
    "ddscope.record": ("ddscope.engine", "ddscope.exporters", "ddscope.cli", "ddscope.mock"),
    "ddscope.events": ("ddscope.engine", "ddscope.exporters", "ddscope.cli", "ddscope.mock"),
    "ddscope.mock": ("ddscope.engine", "ddscope.exporters", "ddscope.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_arrows_point_one_way(layer: str) -> None:
    graph = _graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if target.startswith(FORBIDDEN[layer])
    )
    assert not wrong, "\n".join(wrong)


# A library used only where its concept lives: click is the CLI's, OpenTelemetry the OTel
# exporter's (and the live adapters that feed it), so `ddtrace health` never loads them.
CONFINED = {
    "click": ("ddscope.cli",),
    "opentelemetry": ("ddscope.exporters.otel",),
}


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_libraries_stay_in_their_sub_package(library: str) -> None:
    outside = sorted(
        name
        for name, path in MODULES.items()
        if library in _external_imports(path) and not name.startswith(CONFINED[library])
    )
    assert not outside, f"{library} imported outside {CONFINED[library]}: {outside}"
