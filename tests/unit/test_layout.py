"""The project's import graph, read from source with `ast`: no import circles, and the
wings of `workbench` import only downwards.

Wing order, lowest first: the root (``errors``, ``options``, ``files``, ``_version``)
< ``model`` < ``vectors`` < ``steering`` < ``evaluation`` < ``cli``. A module never
imports a higher wing. By design the public API (``workbench/__init__.py``) names
lazily what every library wing exports, so it sits above ``evaluation`` and below
``cli``; ``workbench/__main__.py`` runs the command line, so it sits above ``cli``.

Every import counts: at module level, inside a function, under ``TYPE_CHECKING``,
relative or absolute. An import inside a function still ties the two modules
together (it runs on the first call), and a ``TYPE_CHECKING`` one is what a type
checker and a reader follow, so either can hide a circle or an upward reach.
The installed packages are `workbench` and `analyses`; `benchmarks` and
`experiments` are repository tools the installed packages may not import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("workbench", "analyses", "benchmarks", "experiments")
INSTALLED = ("workbench", "analyses")
WINGS = ("root", "model", "vectors", "steering", "evaluation", "api", "cli", "main")
ROOT_MODULES = {"errors", "options", "files", "_version"}


@dataclass(frozen=True)
class Import:
    """One project module importing another, where and how."""

    source: str
    target: str
    path: str
    line: int
    in_function: bool
    statement: str

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "at module level"
        return f"{self.path}:{self.line} `{self.statement}` ({where})"


def modules(root: Path, packages: Sequence[str] = PACKAGES) -> dict[str, Path]:
    """Every module of `packages` under `root`, by dotted name."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _project_module(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, known: dict[str, Path], root: Path) -> None:
        self.source, self.known, self.root = source, known, root
        self.package = source if known[source].name == "__init__.py" else source.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, node: ast.stmt, targets: Iterable[str]) -> None:
        for target in dict.fromkeys(t for t in targets if t is not None):
            if target != self.source:
                self.found.append(
                    Import(
                        self.source,
                        target,
                        self.known[self.source].relative_to(self.root).as_posix(),
                        node.lineno,
                        self.depth > 0,
                        ast.unparse(node),
                    )
                )

    def visit_Import(self, node: ast.Import) -> None:
        # `import a.b.c` also runs a/__init__ and a/b/__init__; those parents are left
        # out, or every module would reach the public API and through it everything.
        self._add(node, (_project_module(a.name, self.known) for a in node.names))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        # `from pkg import name`: name is a submodule when one exists, else pkg's own.
        targets = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.append(
                _project_module(submodule if submodule in self.known else base, self.known)
            )
        self._add(node, targets)


def project_imports(root: Path, packages: Sequence[str] = PACKAGES) -> list[Import]:
    """Every import of one project module by another under `root`."""
    known = modules(root, packages)
    found = []
    for name, path in known.items():
        collector = _Collector(name, known, root)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found += collector.found
    return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def import_circles(imports: Sequence[Import]) -> list[str]:
    """One message per set of modules that reach each other (a strongly connected
    component of the graph): its members, and a shortest path from the first member
    back to itself with the import that makes each step."""
    graph: dict[str, set[str]] = {}
    by_edge: dict[tuple[str, str], Import] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        by_edge.setdefault((imp.source, imp.target), imp)
    messages = []
    for group in _strongly_connected(graph):
        members, start = set(group), group[0]
        parent: dict[str, str | None] = {start: None}
        queue, end = [start], None
        for v in queue:  # breadth first, so the circle found is a shortest one
            if start in graph[v]:
                end = v
                break
            for w in sorted(graph[v] & members - parent.keys()):
                parent[w] = v
                queue.append(w)
        path = []
        while end is not None:
            path.append(end)
            end = parent[end]
        path.reverse()
        hops = zip(path, path[1:] + [start], strict=True)
        steps = "; ".join(f"{a} -> {b}: {by_edge[a, b]}" for a, b in hops)
        circle = " -> ".join([*path, start])
        messages.append(f"import circle among {group}: {circle} ({steps})")
    return messages


def wing(module: str) -> str | None:
    """The wing a `workbench` module belongs to; None outside `workbench` or for a
    module in no known wing."""
    parts = module.split(".")
    if parts[0] != "workbench":
        return None
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":
        return "main"
    if len(parts) == 2 and parts[1] in ROOT_MODULES:
        return "root"
    return parts[1] if parts[1] in WINGS[1:5] + ("cli",) else None


def upward_imports(imports: Sequence[Import]) -> list[str]:
    """Imports from a `workbench` wing into a higher one."""
    rank = {name: i for i, name in enumerate(WINGS)}
    return [
        f"{imp.source} ({wing(imp.source)}) imports {imp.target} ({wing(imp.target)}), "
        f"a higher wing: {imp}"
        for imp in imports
        if wing(imp.source) and wing(imp.target) and rank[wing(imp.target)] > rank[wing(imp.source)]
    ]


def unplaced_modules(names: Iterable[str]) -> list[str]:
    return [
        f"{n} is in no wing (one of {list(WINGS)})"
        for n in names
        if n.startswith("workbench") and wing(n) is None
    ]


def application_imports(imports: Sequence[Import]) -> list[str]:
    """Imports that break the split between the library and what sits on top of it."""
    bad = []
    for imp in imports:
        source, target = wing(imp.source), imp.target.split(".")[0]
        library = source not in (None, "cli", "main")
        if imp.source.split(".")[0] in INSTALLED and target in ("benchmarks", "experiments"):
            bad.append(f"{imp.source} imports {imp.target}, which is not installed: {imp}")
        elif library and (target == "analyses" or wing(imp.target) == "cli"):
            bad.append(f"library module {imp.source} imports {imp.target}: {imp}")
        elif source == "cli" and target == "analyses" and not imp.in_function:
            bad.append(f"{imp.source} imports {imp.target} at module level (only lazily): {imp}")
        elif imp.source.split(".")[0] == "analyses" and wing(imp.target) == "cli":
            bad.append(f"analyses module {imp.source} imports the command line: {imp}")
    return bad


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return project_imports(ROOT)


def _report(messages: list[str]) -> str:
    return "\n" + "\n".join(messages)


def test_every_workbench_module_is_in_a_wing():
    found = modules(ROOT)
    assert {"workbench.errors", "workbench.model.info", "workbench.cli.console"} <= set(found)
    bad = unplaced_modules(found)
    assert bad == [], _report(bad)


def test_the_graph_holds_every_kind_of_import(imports):
    def where(source: str, target: str) -> list[Import]:
        return [i for i in imports if (i.source, i.target) == (source, target)]

    # relative, under TYPE_CHECKING (the public API's block), inside a function
    assert where("workbench", "workbench.steering.generation")
    assert any(i.in_function for i in imports if i.source.startswith("workbench.cli"))
    assert any(i.statement.startswith("from .") for i in imports)
    assert any(i.statement.startswith("from workbench.") for i in imports)


def test_there_are_no_import_circles(imports):
    circles = import_circles(imports)
    assert circles == [], _report(circles)


def test_no_workbench_module_imports_a_higher_wing(imports):
    up = upward_imports(imports)
    assert up == [], _report(up)


def test_the_library_imports_no_application_code(imports):
    """Library wings never import `analyses` or the command line; only the command line
    imports `analyses`, inside the functions that draw; `analyses` never imports the
    command line; and nothing installed imports `benchmarks` or `experiments`."""
    bad = application_imports(imports)
    assert bad == [], _report(bad)


def _plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_guards_report_what_is_planted(tmp_path):
    _plant(
        tmp_path,
        {
            "workbench/__init__.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .steering.s import steer\n",
            "workbench/errors.py": "",
            "workbench/model/__init__.py": "",
            "workbench/model/a.py": "def f():\n    from workbench.vectors import b\n",
            "workbench/vectors/__init__.py": "",
            "workbench/vectors/b.py": "from . import c\n",
            "workbench/vectors/c.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .b import x\n",
            "workbench/steering/__init__.py": "",
            "workbench/steering/s.py": "import analyses\nfrom ..errors import E\n",
            "workbench/cli/__init__.py": "",
            "workbench/cli/x.py": "import analyses.t\nimport benchmarks\n",
            "workbench/oops/y.py": "",
            "analyses/__init__.py": "",
            "analyses/t.py": "def g():\n    from workbench.cli import main\n",
            "benchmarks/__init__.py": "",
        },
    )
    found = project_imports(tmp_path)
    assert import_circles(found) == [
        "import circle among ['workbench.vectors.b', 'workbench.vectors.c']: "
        "workbench.vectors.b -> workbench.vectors.c -> workbench.vectors.b "
        "(workbench.vectors.b -> workbench.vectors.c: workbench/vectors/b.py:1 "
        "`from . import c` (at module level); workbench.vectors.c -> workbench.vectors.b: "
        "workbench/vectors/c.py:3 `from .b import x` (at module level))"
    ]
    assert upward_imports(found) == [
        "workbench.model.a (model) imports workbench.vectors.b (vectors), a higher wing: "
        "workbench/model/a.py:2 `from workbench.vectors import b` (inside a function)"
    ]
    assert sorted(application_imports(found)) == [
        "analyses module analyses.t imports the command line: "
        "analyses/t.py:2 `from workbench.cli import main` (inside a function)",
        "library module workbench.steering.s imports analyses: "
        "workbench/steering/s.py:1 `import analyses` (at module level)",
        "workbench.cli.x imports analyses.t at module level (only lazily): "
        "workbench/cli/x.py:1 `import analyses.t` (at module level)",
        "workbench.cli.x imports benchmarks, which is not installed: "
        "workbench/cli/x.py:2 `import benchmarks` (at module level)",
    ]
    assert unplaced_modules(modules(tmp_path)) == [
        f"workbench.oops.y is in no wing (one of {list(WINGS)})"
    ]
