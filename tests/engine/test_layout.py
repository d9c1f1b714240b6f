"""The import rules of the layout, read from the source with ``ast`` (nothing is imported).

- no import cycles between modules; every import counts (function-level and ``TYPE_CHECKING`` ones too);
- the engine (everything outside ``tasks/<kind>/``) never imports a kind package, and names kind modules
  only in ``tasks/registry.py``'s "module:attr" strings;
- a kind never imports another kind;
- a kind's ``__init__.py`` holds no code, so importing ``tasks/<kind>/runtime.py`` runs nothing else.

The checkers are plain functions over a source tree; the last tests run them on small synthetic trees to
show that each rule can fail and that the failure names the offending import.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True)
class Edge:
    """One import statement's target, resolved to a module of the tree."""

    importer: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}"


@dataclass(frozen=True)
class Tree:
    """The modules of one package tree: dotted name -> file, and the names of its kind packages."""

    root: Path
    modules: dict[str, Path]
    kinds: frozenset[str]

    @classmethod
    def read(cls, src: Path, package: str = "aiforge") -> Tree:
        """Every ``.py`` file under ``src/package``; kinds are the sub-packages of ``package.tasks``."""
        modules: dict[str, Path] = {}
        for path in sorted((src / package).rglob("*.py")):
            parts = path.relative_to(src).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        tasks = src / package / "tasks"
        kinds = frozenset(f"{package}.tasks.{p.name}" for p in tasks.iterdir() if (p / "__init__.py").is_file()) \
            if tasks.is_dir() else frozenset()
        return cls(src, modules, kinds)

    def kind_of(self, module: str) -> str | None:
        """The kind package ``module`` belongs to, or None for an engine module."""
        return next((k for k in self.kinds if module == k or module.startswith(k + ".")), None)

    def owner(self, dotted: str) -> str | None:
        """The longest module of the tree that ``dotted`` names or lies inside."""
        while dotted and dotted not in self.modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None


def _imported_names(module: str, path: Path, tree: ast.Module) -> list[tuple[str, int]]:
    """Every dotted name an import statement anywhere in the module reaches, with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names.append((base, node.lineno))
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def edges(tree: Tree) -> list[Edge]:
    """Every import between two modules of the tree (imports of a module's own parent packages left out)."""
    found: dict[tuple[str, str], Edge] = {}
    for module, path in tree.modules.items():
        for name, line in _imported_names(module, path, ast.parse(path.read_text(encoding="utf-8"))):
            target = tree.owner(name)
            if target and target != module and not module.startswith(target + "."):
                found.setdefault((module, target), Edge(module, target, path, line))
    return sorted(found.values(), key=lambda e: (e.importer, e.target))


def cycles(tree: Tree) -> list[list[Edge]]:
    """One closed path of imports per strongly connected group of modules (Tarjan)."""
    graph: dict[str, list[Edge]] = {m: [] for m in tree.modules}
    for edge in edges(tree):
        graph[edge.importer].append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in graph[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in graph:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return [_closed_path(graph, group) for group in groups]


def _closed_path(graph: dict[str, list[Edge]], group: set[str]) -> list[Edge]:
    """A shortest cycle through the group's first module, as the import edges that make it."""
    start = min(group)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph[v]:
                if e.target == start:
                    return [*paths[v], e]
                if e.target in group and e.target not in paths:
                    paths[e.target] = [*paths[v], e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")  # a strongly connected group has one


def engine_imports_of_kinds(tree: Tree) -> list[Edge]:
    """Imports of a kind package by an engine module."""
    return [e for e in edges(tree) if tree.kind_of(e.importer) is None and tree.kind_of(e.target) is not None]


def kind_imports_of_kinds(tree: Tree) -> list[Edge]:
    """Imports of one kind package by another."""
    found = []
    for e in edges(tree):
        importer, target = tree.kind_of(e.importer), tree.kind_of(e.target)
        if importer is not None and target is not None and importer != target:
            found.append(e)
    return found


def engine_strings_naming_kinds(tree: Tree, *, table: str) -> list[str]:
    """String constants in engine modules other than the kinds table that name a kind module
    (what ``importlib.import_module("aiforge.tasks.x...")`` would need); docstrings left out."""
    kinds = "|".join(re.escape(k) for k in sorted(tree.kinds))
    pattern = re.compile(rf"^({kinds})(\.\w+)*(:\w+)?$")
    found = []
    for module, path in tree.modules.items():
        if module == table or tree.kind_of(module) is not None or not tree.kinds:
            continue
        parsed = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(parsed)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found += [f"{path}:{n.lineno}: {module} names {n.value!r}" for n in ast.walk(parsed)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
                  and pattern.match(n.value)]
    return found


def kind_inits_with_code(tree: Tree) -> list[str]:
    """Kind ``__init__.py`` files holding anything but (at most) a docstring."""
    found = []
    for kind in sorted(tree.kinds):
        path = tree.modules[kind]
        body = ast.parse(path.read_text(encoding="utf-8")).body
        code = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        if code:
            found.append(f"{path}:{code[0].lineno}: {kind}/__init__.py must stay empty (it runs on every import "
                         f"of the kind's modules, runtime.py included)")
    return found


def _lines(items: list[object]) -> str:
    return "\n".join(str(i) for i in items)


# --- the rules on aiforge ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aiforge_tree() -> Tree:
    return Tree.read(SRC)


def test_the_tree_is_read(aiforge_tree: Tree) -> None:
    assert {"aiforge.spec", "aiforge.tasks.registry", "aiforge.bundle.runtime"} <= set(aiforge_tree.modules)
    assert {k.rpartition(".")[2] for k in aiforge_tree.kinds} >= {"text", "tabular", "image", "recommend", "chat"}
    assert len(edges(aiforge_tree)) > 100  # imports were found, so the empty results below mean something


def test_no_import_cycles(aiforge_tree: Tree) -> None:
    found = cycles(aiforge_tree)
    assert not found, "import cycles:\n" + "\n\n".join(_lines(list(c)) for c in found)


def test_the_engine_imports_no_kind(aiforge_tree: Tree) -> None:
    found = engine_imports_of_kinds(aiforge_tree)
    assert not found, ("engine modules import kind packages (reach a kind through tasks/registry.py's "
                       "\"module:attr\" strings and resolve() instead):\n" + _lines(list(found)))


def test_the_engine_names_kind_modules_only_in_the_kinds_table(aiforge_tree: Tree) -> None:
    found = engine_strings_naming_kinds(aiforge_tree, table="aiforge.tasks.registry")
    assert not found, "kind modules named outside tasks/registry.py:\n" + _lines(list(found))


def test_no_kind_imports_another(aiforge_tree: Tree) -> None:
    found = kind_imports_of_kinds(aiforge_tree)
    assert not found, ("kinds import each other (move the shared code down into the engine):\n"
                       + _lines(list(found)))


def test_kind_init_files_are_empty(aiforge_tree: Tree) -> None:
    found = kind_inits_with_code(aiforge_tree)
    assert not found, _lines(list(found))


# --- the checkers can fail ---------------------------------------------------------------------


def _write(src: Path, files: dict[str, str]) -> Tree:
    for rel, text in files.items():
        path = src / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Tree.read(src, "pkg")


GOOD = {
    "__init__.py": "",
    "errors.py": "class Error(Exception): ...\n",
    "tasks/__init__.py": "",
    "tasks/registry.py": "KINDS = ('pkg.tasks.a.runtime:Runtime',)\n",
    "tasks/a/__init__.py": '"""Kind a."""\n',
    "tasks/a/runtime.py": "from pkg.errors import Error\nfrom . import spec\n",
    "tasks/a/spec.py": "import pkg.errors\n",
    "tasks/b/__init__.py": "",
    "tasks/b/runtime.py": "from ..registry import KINDS\n",
}


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    tree = _write(tmp_path, GOOD)
    assert tree.kinds == {"pkg.tasks.a", "pkg.tasks.b"}
    assert {(e.importer, e.target) for e in edges(tree)} == {
        ("pkg.tasks.a.runtime", "pkg.errors"), ("pkg.tasks.a.runtime", "pkg.tasks.a.spec"),
        ("pkg.tasks.a.spec", "pkg.errors"), ("pkg.tasks.b.runtime", "pkg.tasks.registry")}
    assert cycles(tree) == []
    assert engine_imports_of_kinds(tree) == [] and kind_imports_of_kinds(tree) == []
    assert engine_strings_naming_kinds(tree, table="pkg.tasks.registry") == []
    assert kind_inits_with_code(tree) == []


def test_a_cycle_through_a_type_checking_import_is_found_and_named(tmp_path: Path) -> None:
    tree = _write(tmp_path, {**GOOD, "errors.py": "def f():\n    from pkg import audit\n",
                             "audit.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from pkg.errors import Error\n"})
    [cycle] = cycles(tree)
    assert [str(e) for e in cycle] == [f"{tmp_path}/pkg/audit.py:3: pkg.audit imports pkg.errors",
                                       f"{tmp_path}/pkg/errors.py:2: pkg.errors imports pkg.audit"]


def test_an_engine_import_of_a_kind_is_found_and_named(tmp_path: Path) -> None:
    tree = _write(tmp_path, {**GOOD, "serve.py": "import os\n\ndef app():\n    from pkg.tasks.a import runtime\n"})
    assert [str(e) for e in engine_imports_of_kinds(tree)] == [
        f"{tmp_path}/pkg/serve.py:4: pkg.serve imports pkg.tasks.a",
        f"{tmp_path}/pkg/serve.py:4: pkg.serve imports pkg.tasks.a.runtime"]


def test_an_engine_string_naming_a_kind_module_is_found(tmp_path: Path) -> None:
    tree = _write(tmp_path, {**GOOD, "cli.py": '"""Mentions pkg.tasks.a in prose: fine."""\n'
                                               'import importlib\nimportlib.import_module("pkg.tasks.a.runtime")\n'})
    assert engine_strings_naming_kinds(tree, table="pkg.tasks.registry") == [
        f"{tmp_path}/pkg/cli.py:3: pkg.cli names 'pkg.tasks.a.runtime'"]


def test_a_kind_importing_another_is_found_and_named(tmp_path: Path) -> None:
    tree = _write(tmp_path, {**GOOD, "tasks/b/task.py": "from pkg.tasks.a.spec import X\n"})
    assert [str(e) for e in kind_imports_of_kinds(tree)] == [
        f"{tmp_path}/pkg/tasks/b/task.py:1: pkg.tasks.b.task imports pkg.tasks.a.spec"]


def test_a_kind_init_with_code_is_found(tmp_path: Path) -> None:
    tree = _write(tmp_path, {**GOOD, "tasks/b/__init__.py": '"""Kind b."""\nfrom .runtime import KINDS\n'})
    [found] = kind_inits_with_code(tree)
    assert found.startswith(f"{tmp_path}/pkg/tasks/b/__init__.py:2: pkg.tasks.b/__init__.py must stay empty")
