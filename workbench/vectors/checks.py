"""Each vector checked against each model once per command or sweep: `checks_once`.

`InstructionVector.check_model` runs wherever a vector meets a model: the command
line checks a vector file before it steers, `sweep` before it starts, and every
steering call (one `generate` per batch) before it adds hooks. Inside a
``checks_once()`` block a (vector, model) pair is checked the first time only, so a
vector from other weights warns once; outside a block each call checks on its own.

Kept apart from `instruction_vector` (which imports torch) so the command line can
open the block before it knows whether its command loads a model.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

# (id(vector), id(model)) -> (vector, model) for the pairs checked in the open block;
# holding the objects keeps their ids from being reused while the block is open.
_CHECKED: contextvars.ContextVar[dict[tuple[int, int], tuple[Any, Any]] | None] = (
    contextvars.ContextVar("workbench_vector_checks", default=None)
)


@contextlib.contextmanager
def checks_once() -> Iterator[None]:
    """Check each (vector, model) pair once inside the block (a nested block joins the
    outer one).

    Example:
        >>> with checks_once():
        ...     vec.check_model(model)
        ...     already_checked(vec, model)
        True
        >>> already_checked(vec, model)
        False
    """
    if _CHECKED.get() is not None:
        yield
        return
    token = _CHECKED.set({})
    try:
        yield
    finally:
        _CHECKED.reset(token)


def already_checked(vector: Any, model: Any) -> bool:
    """True inside a `checks_once` block once `vector` passed its check against `model`."""
    checked = _CHECKED.get()
    return checked is not None and (id(vector), id(model)) in checked


def mark_checked(vector: Any, model: Any) -> None:
    """Record that `vector` passed its check against `model` (inside a block only)."""
    checked = _CHECKED.get()
    if checked is not None:
        checked[(id(vector), id(model))] = (vector, model)
