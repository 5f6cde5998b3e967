"""The package map, enforced from the source (static, ``ast``; imports inside functions count too).

* ``common`` is the ground: contracts and small shared helpers; it imports no service.
* Each service (``*_svc``) imports ``common`` and itself, and another service only along an edge of
  :data:`ALLOWED_SERVICE_EDGES` (each with its reason).
* ``fusion`` (orchestration: the console script, the stack supervisor, the demo, the UI) and ``benchmarks`` sit on
  top: they may import anything. No package below them imports ``fusion`` (only benchmarks, which measure it, and
  tests do), and no package imports ``benchmarks`` (``fusion bench`` names it in its command table, a string, and
  imports it only when run).
* No import cycle between modules.

The allowed service edges only shrink: an edge that is no longer used fails the test.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("observer_svc", "archiver_svc", "labeler_svc", "trainer_svc", "trader_svc")
TOP = ("benchmarks", "fusion")
PACKAGES = ("common", *SERVICES, *TOP)

ALLOWED_SERVICE_EDGES: dict[tuple[str, str], str] = {
    ("trainer_svc", "archiver_svc"): "training datasets are read from the archive through the archiver's reader",
    ("trader_svc", "archiver_svc"): "settling a resolution trimmed from the stream reads the archived states",
    ("trainer_svc", "labeler_svc"): "batch labelling of archived states uses the labeler's hindsight labels",
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        base = ROOT / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The project modules ``name`` imports: ``import a.b`` -> ``a.b``; ``from a import b`` -> ``a.b`` when it is
    a module, else ``a``; relative imports resolved. Parent packages imported implicitly do not count."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([mod] if mod else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            m = _resolve(t)
            if m is not None and m != name:
                yield m


def _resolve(target: str) -> str | None:
    """The project module ``target`` names (the longest existing prefix), None for a third-party module."""
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imports(name, path)) for name, path in MODULES.items()}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a fresh copy)."""
    return {k: set(v) for k, v in _graph().items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's SCCs of more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_of(module: str) -> str:
    return module.split(".")[0]


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, deps in sorted(graph.items()):
        ps = package_of(src)
        for dst in sorted(deps):
            pd = package_of(dst)
            if pd == ps:
                continue
            if pd == "fusion" and ps not in TOP:
                bad.append(f"{src} -> {dst}: nothing imports the top-level fusion")
            elif ps in TOP:
                continue
            elif pd in TOP:
                bad.append(f"{src} -> {dst}: nothing imports the top-level {pd}")
            elif ps == "common":
                bad.append(f"{src} -> {dst}: common imports no service")
            elif pd != "common" and (ps, pd) not in ALLOWED_SERVICE_EDGES:
                bad.append(f"{src} -> {dst}: {ps} may not import {pd}")
    return bad


def test_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    g = import_graph()
    assert "trainer_svc.backends.torch_backend" in g["trainer_svc.backends"]  # imported inside make_backend
    assert len(MODULES) > 80 and all(package_of(m) in PACKAGES for m in MODULES)


def test_no_import_cycles() -> None:
    cycles = strongly_connected(import_graph())
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_packages_import_only_downwards() -> None:
    assert direction_violations(import_graph()) == []


def test_exceptions_are_current() -> None:
    """Every allowed service edge is used."""
    g = import_graph()
    used = {(package_of(s), package_of(d)) for s, deps in g.items() for d in deps}
    assert [e for e in ALLOWED_SERVICE_EDGES if e not in used] == []


def test_orchestration_lives_in_fusion() -> None:
    """The console script, the stack supervisor and the demo are in ``fusion/``; common keeps no orchestration."""
    assert {"fusion.cli", "fusion.stack", "fusion.demo.cli", "fusion.demo.run"} <= set(MODULES)
    assert not [m for m in MODULES if m in ("common.cli", "common.stack") or m.startswith("common.demo")]


@pytest.mark.parametrize(
    ("src", "dst", "why"),
    [
        ("common.policy", "trainer_svc.env", "common imports no service"),
        ("trader_svc.models", "trainer_svc.dataset", "trader_svc may not import trainer_svc"),
        ("trainer_svc.pipeline", "benchmarks.run", "nothing imports the top-level benchmarks"),
        ("common.settings", "fusion.cli", "nothing imports the top-level fusion"),
        ("observer_svc.service", "fusion.stack", "nothing imports the top-level fusion"),
    ],
)
def test_direction_rule_catches(src: str, dst: str, why: str) -> None:
    g = import_graph()
    g[src] = g[src] | {dst}
    assert any(why in v for v in direction_violations(g))


def test_cycle_check_catches() -> None:
    g = import_graph()
    g["common.keys"] = g["common.keys"] | {"common.streams"}  # streams imports keys
    assert any({"common.keys", "common.streams"} <= scc for scc in strongly_connected(g))
