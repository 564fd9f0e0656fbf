"""The shape of the code: no import cycle between srstudy's modules, no module over 450 lines.

Reads the sources (no import), maps each file to its dotted name through pyproject's
`package-dir`, and follows every `import`/`from … import` of an srstudy module, at module
level or inside a function alike: a deferred import still makes the two modules depend on
each other. Run in CI with the rest of the suite.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def _package_dirs() -> dict[str, Path]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pkg: ROOT / d for pkg, d in conf["tool"]["setuptools"]["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Dotted module name → source file, for every .py file under the mapped folders."""
    out: dict[str, Path] = {}
    for pkg, folder in sorted(_package_dirs().items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            # a file under srstudy/ that belongs to a sub-package mapped elsewhere is skipped
            out.setdefault(name, path)
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The srstudy modules `name` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                mod = ".".join([*anchor, mod] if mod else anchor)
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import srstudy.models.dvmsr.x` → srstudy.models.dvmsr
                t = t.rpartition(".")[0]
            if t and t != name and not (name.startswith(t + ".") and t in known and _is_pkg(t, known)):
                found.add(t)
    return found


def _is_pkg(t: str, known: set[str]) -> bool:
    return any(k.startswith(t + ".") for k in known)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read():
    graph = _graph()
    assert "srstudy.cli" in graph and "srstudy.models.dvmsr" in graph
    assert "srstudy.models.mamba" in graph["srstudy.models.dvmsr"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (fold shared code into a lower module):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles)


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by job, see docs / DESIGN): {long}"
