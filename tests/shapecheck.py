"""The type checker the test suite runs on `workbench` and `analyses`: shapes only.

pytest installs jaxtyping's import hook with this checker (see ``addopts`` in
pyproject.toml). It keeps the jaxtyping array annotations (``Float[Tensor, "batch
pos d_model"]``) and drops every other one before handing the function to beartype,
so shapes are checked while user-facing values (modes, layers, prompts) reach the
workbench's own validation and its `WorkbenchError`s, exactly as they do outside
the tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_args

from beartype import beartype
from jaxtyping import AbstractArray


def _has_array(hint: Any) -> bool:
    if inspect.isclass(hint) and issubclass(hint, AbstractArray):
        return True
    return any(_has_array(arg) for arg in get_args(hint))


def shapes_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Beartype `fn` on its jaxtyping array annotations alone."""
    fn.__annotations__ = {k: v for k, v in fn.__annotations__.items() if _has_array(v)}
    return beartype(fn)
