"""The layers hold: the import-linter contracts in pyproject.toml are kept, they cover every
part of the core, and no module of the project imports itself through others (no cycle)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("monitord", "probes", "remediation")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (module -> modules it imports): its strongly connected
    components of more than one module, or of one that imports itself (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def import_graph() -> dict[str, set[str]]:
    """Every import between the project's modules (function-level and TYPE_CHECKING ones included)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)  # no cache written into the checkout (the unit lane runs unprivileged)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert sorted(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}})) == [["a", "b"], ["c", "d"]]


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert "monitord.config" in graph and "probes.ping" in graph and "remediation.ipmi" in graph
    assert cycles(graph) == []


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_the_contracts_cover_every_part_of_the_core():
    contracts = {c["id"]: c for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}
    core = {f"monitord.{p.parent.name}" for p in (REPO / "monitord").glob("*/__init__.py")} - {"monitord.shared"}
    assert set(contracts["plugins"]["forbidden_modules"]) == core
    assert set(contracts["registries"]["source_modules"]) == core
    assert set(contracts["leaf"]["forbidden_modules"]) == core | {"probes", "remediation"}
    # all of the core's code is in those subpackages: beside them only the package marker and `python -m monitord`
    assert sorted(p.name for p in (REPO / "monitord").glob("*.py")) == ["__init__.py", "__main__.py"]
