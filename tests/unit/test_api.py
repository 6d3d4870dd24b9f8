"""The library's shape as a user meets it: a short public API, errors with one base,
no import-time side effects, docstrings with examples, and shape annotations checked
under test.

Every guard walks `workbench` and `analyses` recursively (`rglob`), so a module in any
wing (`workbench.model`, `workbench.vectors`, ...) is held to the same rules as one at
the root; the layering of those wings is `test_layout`'s.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from jaxtyping import TypeCheckError

import workbench
import workbench.errors as errors
from workbench.vectors.activations import reduce_positions

PACKAGE = Path(workbench.__file__).parent
ROOT = PACKAGE.parent
LIBRARY = ("workbench", "analyses")
# Names of jaxtyping's array annotations (``Float[Tensor, "batch d_model"]``, ...).
ARRAY_KINDS = {"Float", "Int", "Bool", "Shaped", "Num", "Integer", "Real", "Inexact"}


def _files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# `__main__` modules run the command line when imported; they are entry points, not
# library modules, and are left out of the import-time checks.
IMPORTABLE = [_module_name(p) for p in _files(*LIBRARY) if p.stem != "__main__"]


def test_the_guards_walk_every_wing():
    names = set(IMPORTABLE)
    for wing in ("model", "vectors", "steering", "evaluation", "cli"):
        assert any(n.startswith(f"workbench.{wing}.") for n in names), wing
    assert {"workbench.errors", "analyses.geometry"} <= names


def test_the_public_api_is_short_and_every_name_resolves():
    assert len(workbench.__all__) <= 25
    for name in workbench.__all__:
        assert hasattr(workbench, name), name
    # Plumbing lives in submodules.
    assert not {"cache_dir", "ensure_checkpoint", "difference_stats"} & set(workbench.__all__)


def test_every_public_name_is_defined_in_the_module_the_api_names():
    exports = workbench._EXPORTS
    assert set(exports) | {"__version__"} == set(workbench.__all__)
    for name, relative in exports.items():
        target = "workbench" + relative
        assert target in IMPORTABLE, f"{name}: no module {target}"
        value = getattr(workbench, name)
        assert getattr(value, "__module__", None) == target, (name, value.__module__, target)
    # The TYPE_CHECKING block (what editors and type checkers read) names the same places.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {
        alias.name: "." + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
        if alias.name != "__version__"
    }
    assert typed == exports


@pytest.mark.parametrize("module", IMPORTABLE)
def test_every_module_all_lists_names_it_has(module):
    mod = importlib.import_module(module)
    missing = [n for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
    assert missing == [], f"{module}.__all__ names {missing}, which it lacks"


def test_every_error_type_is_a_workbench_error_and_a_builtin():
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.WorkbenchError), cls
        if cls is not errors.WorkbenchError:
            builtins = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not object]
            assert any(b is not Exception and b is not BaseException for b in builtins), cls


def test_unknown_name_errors_read_as_written():
    err = errors.UnknownNameError("unknown instruction 'x'; bundled: ['a']")
    assert str(err) == "unknown instruction 'x'; bundled: ['a']"
    assert isinstance(err, KeyError)


def _raised_builtins(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = getattr(call, "id", None)
            if name in {"ValueError", "TypeError", "KeyError", "RuntimeError", "AssertionError"}:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} raises {name}")
    return found


def test_library_code_raises_only_workbench_errors():
    offenders = [hit for path in _files(*LIBRARY) for hit in _raised_builtins(path)]
    assert offenders == []


def _asserts(path: Path, root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root).as_posix()}:{node.lineno} asserts"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]


def test_library_code_has_no_assert_statements():
    assert [hit for path in _files(*LIBRARY) for hit in _asserts(path)] == []


def test_the_source_guards_find_what_they_look_for(tmp_path):
    bad = tmp_path / "wing" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from jaxtyping import Float\n"
        "def f(x: Float[Tensor, 'n']):\n    assert x\n    raise ValueError(x)\n"
        "class C:\n    def g(self) -> 'str':\n        raise KeyError\n"
    )
    assert _raised_builtins(bad, tmp_path) == [
        "wing/bad.py:4 raises ValueError",
        "wing/bad.py:7 raises KeyError",
    ]
    assert _asserts(bad, tmp_path) == ["wing/bad.py:3 asserts"]
    assert _array_annotated(bad) == ["f"]


def test_importing_the_library_has_no_side_effects():
    code = (
        "import os, sys; before = dict(os.environ); import workbench, analyses; "
        "assert dict(os.environ) == before; "
        "heavy = {'transformer_lens', 'transformers', 'benchmarks'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Imports every module in a fresh interpreter and reports what importing changed.
_IMPORT_ALL = """
import importlib, json, logging, os, sys
env = dict(os.environ)
import torch
def state():
    return [torch.is_grad_enabled(), str(torch.get_default_dtype()),
            torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
            logging.getLogger().level, len(logging.getLogger().handlers)]
rng, before = torch.random.get_rng_state(), state()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "env": sorted(k for k in env.keys() | os.environ.keys() if env.get(k) != os.environ.get(k)),
    "state": [before, state()],
    "rng_kept": bool(torch.equal(rng, torch.random.get_rng_state())),
    "files": sorted(os.listdir(".")),
}))
"""


def test_importing_any_module_has_no_side_effects(tmp_path):
    """No module sets environment variables, torch's global state, logging or the RNG,
    writes files or prints when imported: only calling it may."""
    # Run from an empty directory (to see what gets written), importing this checkout.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *IMPORTABLE],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    *printed, last = done.stdout.splitlines()
    report = json.loads(last)
    assert printed == [] and report["env"] == [] and report["files"] == [], report
    assert report["state"][0] == report["state"][1] and report["rng_kept"], report


@pytest.mark.parametrize(
    "package",
    [f"workbench.{wing}" for wing in ("model", "vectors", "steering", "evaluation", "cli")],
)
def test_importing_a_wing_package_loads_no_model_library(package):
    """A wing's ``__init__`` holds its docstring (cli: the entry point), so reaching a
    submodule never pays for another's imports, and the console script starts fast."""
    code = (
        f"import sys; import {package}; "
        "print(sorted({'torch', 'transformer_lens', 'transformers', 'analyses'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _public_definitions(path: Path) -> list[ast.FunctionDef | ast.ClassDef]:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n for n in ast.parse(path.read_text()).body if isinstance(n, kinds)]


def test_every_module_and_public_definition_has_a_docstring():
    missing = []
    for path in _files(*LIBRARY):
        if not ast.get_docstring(ast.parse(path.read_text())):
            missing.append(_rel(path))
        missing += [
            f"{_rel(path)}:{node.lineno} {node.name}"
            for node in _public_definitions(path)
            if not node.name.startswith("_") and not ast.get_docstring(node)
        ]
    assert missing == []


def test_every_wing_has_examples_the_doctest_run_collects():
    """pytest runs the examples of every module under `testpaths` (``--doctest-modules``
    walks them recursively); each wing must have some, and pytest must be told to."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "--doctest-modules" in options["ini_options"]["addopts"]
    assert set(LIBRARY) <= set(options["ini_options"]["testpaths"])
    finder = doctest.DocTestFinder()
    examples: dict[str, int] = {}
    for name in IMPORTABLE:
        parts = name.split(".")
        wing = ".".join(parts[:2]) if parts[0] == "workbench" and len(parts) > 2 else parts[0]
        found = finder.find(importlib.import_module(name))
        examples[wing] = examples.get(wing, 0) + sum(len(t.examples) for t in found)
    wings = ["workbench"] + [f"workbench.{w}" for w in ("model", "vectors", "steering")]
    wings += ["workbench.evaluation", "analyses"]
    assert all(examples.get(w, 0) > 0 for w in wings), examples


def test_shape_annotations_are_checked_under_test():
    x = torch.ones(2, 3, 4)
    with pytest.raises(TypeCheckError):
        reduce_positions(x, torch.ones(2, 5, dtype=torch.long), "last")
    assert reduce_positions(x, torch.ones(2, 3, dtype=torch.long), "last").shape == (2, 4)


def _array_annotated(path: Path) -> list[str]:
    """Qualified names of the functions and methods in `path` with a jaxtyping array
    annotation on an argument or the return."""

    def has_array(fn: ast.FunctionDef) -> bool:
        args = fn.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        hints = [a.annotation for a in every if a is not None] + [fn.returns]
        return any(
            isinstance(n, ast.Name) and n.id in ARRAY_KINDS
            for hint in hints
            if hint is not None
            for n in ast.walk(hint)
        )

    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and has_array(node):
            found.append(node.name)
        elif isinstance(node, ast.ClassDef):
            found += [
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef) and has_array(item)
            ]
    return found


def _jaxtyped(fn: object) -> bool:
    """Whether a jaxtyping wrapper is among `fn`'s wrappers (``torch.no_grad`` and
    ``functools.wraps`` leave a ``__wrapped__`` too, so that alone proves nothing)."""
    while fn is not None:
        code = getattr(fn, "__code__", None)
        if code is not None and "jaxtyping" in Path(code.co_filename).parts:
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def test_every_shape_annotation_in_every_module_is_checked_under_test():
    """jaxtyping's import hook (``--jaxtyping-packages``) wraps each function of the
    listed packages and their subpackages; one it missed would go unchecked silently."""
    checked, unchecked = [], []
    for path in _files(*LIBRARY):
        module = _module_name(path)
        for qualname in _array_annotated(path):
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = inspect.getattr_static(obj, part)
            obj = getattr(obj, "__func__", getattr(obj, "fget", obj))
            (checked if _jaxtyped(obj) else unchecked).append(f"{module}.{qualname}")
    assert unchecked == []
    wings = {".".join(name.split(".")[:2]) for name in checked}
    assert {"workbench.model", "workbench.vectors", "workbench.steering"} <= wings, wings
    assert any(name.startswith("analyses.") for name in checked), checked
