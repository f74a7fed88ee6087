"""The package's shape, as docs/architecture.md states it: no import cycle between modules
(imports inside functions count), imports point only down the data flow, and no function or
module too long to read in one sitting."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gatrank

PACKAGE = Path(__file__).resolve().parents[1] / "gatrank"

MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 500

# The data flow, in order (docs/architecture.md): a module may import from its own layer and the
# layers before it, never from a later one. A layer is a top-level module or a subpackage.
LAYERS: list[set[str]] = [
    {"gatrank", "gatrank.__main__"},  # the version; __main__ only calls cli (checked apart)
    {"config", "plugins", "io", "runtime", "project", "render"},
    {"metrics", "losses", "model", "model_hints", "baselines"},
    {"data"},
    {"datasets"},
    {"training"},
    {"checks"},
    {"plots", "offline"},
    {"evaluate"},
    {"doctor"},
    {"notebook"},
    {"monitor", "api"},
    {"integrations", "loops"},
    {"suite"},
    {"cli"},
]


LAZY_EXPORTS: dict[str, str] = gatrank._LAZY
"""What ``gatrank`` exports lazily, by the module that defines it."""


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, importer: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """gatrank modules an import statement loads, resolved to the deepest existing module
    (``from gatrank.doctor import faults`` -> gatrank.doctor.faults, ``from gatrank.doctor
    import diagnose`` -> gatrank.doctor, the package's ``__init__``; a lazy export of
    ``gatrank`` to the module that defines it)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        if not is_package:
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    for alias in node.names:
        full = f"{base}.{alias.name}"
        if full in known:
            yield full
        elif base == "gatrank" and alias.name in LAZY_EXPORTS:
            yield LAZY_EXPORTS[alias.name]  # `from gatrank import Monitor` loads gatrank.monitor
        elif base in known:
            yield base


def import_graph() -> dict[str, set[str]]:
    """Module -> the gatrank modules it imports anywhere in its body (top level, functions,
    methods; also under ``if TYPE_CHECKING``, which is no cycle at run time but one in the
    design)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            dep
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for dep in _imported(node, name, is_package, known)
            if dep != name
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _layer(module: str) -> int:
    if module in LAYERS[0]:
        return 0
    top = module.split(".")[1]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: add it to docs/architecture.md "
                         "and to LAYERS")


def flow_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a imports b"`` for every import from a later layer of the data flow."""
    return sorted(
        f"{module} imports {dep}"
        for module, deps in graph.items()
        if module != "gatrank.__main__"
        for dep in deps
        if _layer(dep) > _layer(module)
    )


# --------------------------------------------------------------------------- the checker itself


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}) == ["b", "b2", "b"]


def test_flow_violations_name_imports_against_the_flow():
    ok = {"gatrank.training.loop": {"gatrank.data.graphset", "gatrank.training.epoch"}}
    assert flow_violations(ok) == []
    back = {"gatrank.data.graphset": {"gatrank.training.loop"}, "gatrank.cli": {"gatrank.io"}}
    assert flow_violations(back) == ["gatrank.data.graphset imports gatrank.training.loop"]


def test_imports_inside_functions_and_packages_resolve_to_modules():
    graph = import_graph()
    # a function-level import counts (cli defers its commands' imports)
    assert "gatrank.training" in graph["gatrank.cli.train"] or any(
        m.startswith("gatrank.training.") for m in graph["gatrank.cli.train"])
    # a package's __init__ is a node of its own: it imports its submodules
    assert any(m.startswith("gatrank.doctor.") for m in graph["gatrank.doctor"])


# --------------------------------------------------------------------------- the package


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, (
        "import cycle: " + " -> ".join(cycle) + ". Inside a package import a sibling by its "
        "module path (from gatrank.doctor.report import ...), not through the package.")


def test_imports_point_down_the_data_flow():
    wrong = flow_violations(import_graph())
    assert not wrong, "imports against the data flow (docs/architecture.md): " + "; ".join(wrong)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _module_name(p))
def test_functions_and_modules_stay_short(path: Path):
    src = path.read_text()
    assert len(src.splitlines()) <= MAX_MODULE_LINES, (
        f"{_module_name(path)}: {len(src.splitlines())} lines; split it by concern")
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(src))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_module_name(path)}: " + ", ".join(long) + "; name its phases as functions"
