"""The package layout's rules, read off the imports (AST), so they stay true as the code grows.

- The building blocks (`harness.models`, `harness.data`, `harness.analysis`) import nothing
  from the sweep machinery (`harness.engine`), the CLI, the report or `tasks`: a Hessian, a
  landscape or a Fourier profile can be computed from a notebook without a sweep.
- No import cycle between the modules of `harness` and `tasks` (every import counts: top level,
  inside functions and under TYPE_CHECKING).
- At most six modules at `harness/`'s top level.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "tasks")
BUILDING_BLOCKS = ("harness.models", "harness.data", "harness.analysis")
FORBIDDEN_FOR_BLOCKS = ("harness.engine", "harness.cli", "harness.report", "tasks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that `name` imports anywhere in its file (absolute and relative)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            # the longest of our modules that the dotted name starts with
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_known_edges():
    """The scanner itself: it finds imports in functions, under TYPE_CHECKING and `from pkg import sub`."""
    graph = import_graph()
    assert "harness.engine.store" in graph["harness.engine.compact"]
    assert "harness.engine.registry" in graph["harness.engine.spec"]
    assert "harness.models.zoo.cnn" in graph["harness.models.zoo"]


def test_building_blocks_import_no_engine():
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() if under(m, BUILDING_BLOCKS)
           for t in sorted(targets) if under(t, FORBIDDEN_FOR_BLOCKS)]
    assert not bad, "building blocks must not import the engine, cli, report or tasks:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = strongly_connected(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_at_most_six_top_level_modules():
    top = sorted(p.name for p in (ROOT / "harness").glob("*.py"))
    assert len(top) <= 6, top


def test_numerics_load_without_engine_or_ray():
    """Importing the building blocks (as a notebook would) loads neither the engine nor Ray."""
    code = ("import sys; import harness.analysis.hessian, harness.analysis.landscape, "
            "harness.analysis.features, harness.models, harness.data, harness.data.corruptions; "
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('harness.engine', "
            "'harness.report', 'tasks'))); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
