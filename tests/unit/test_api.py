"""The library's shape as a user meets it: a short public API, errors with one base,
no import-time side effects, and shape annotations checked under test."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jaxtyping import TypeCheckError

import workbench
import workbench.errors as errors
from workbench.vectors.activations import reduce_positions

PACKAGE = Path(workbench.__file__).parent


def test_the_public_api_is_short_and_every_name_resolves():
    assert len(workbench.__all__) <= 25
    for name in workbench.__all__:
        assert hasattr(workbench, name), name
    # Plumbing lives in submodules.
    assert not {"cache_dir", "ensure_checkpoint", "difference_stats"} & set(workbench.__all__)


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


def _raised_builtins(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = getattr(call, "id", None)
            if name in {"ValueError", "TypeError", "KeyError", "RuntimeError", "AssertionError"}:
                found.append(f"{path.name}:{node.lineno} raises {name}")
    return found


def test_library_code_raises_only_workbench_errors():
    offenders = [hit for path in sorted(PACKAGE.glob("*.py")) for hit in _raised_builtins(path)]
    assert offenders == []


def test_library_code_has_no_assert_statements():
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assert)], path.name


def test_importing_the_library_has_no_side_effects():
    code = (
        "import os, sys; before = dict(os.environ); import workbench, analyses; "
        "assert dict(os.environ) == before; "
        "heavy = {'transformer_lens', 'transformers', 'benchmarks'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shape_annotations_are_checked_under_test():
    x = torch.ones(2, 3, 4)
    with pytest.raises(TypeCheckError):
        reduce_positions(x, torch.ones(2, 5, dtype=torch.long), "last")
    assert reduce_positions(x, torch.ones(2, 3, dtype=torch.long), "last").shape == (2, 4)
