"""Hook points and who may hold them: the checks every hook-adding caller shares.

- `check_hooks`: the hook names exist on this model (nearest names otherwise).
- `model_lock` / `hooks_held`: hooks live on the model, so whoever adds them holds
  the model's reentrant lock while they are there.
- `refuse_under_per_row_steer`: code that batches its own inputs refuses to run
  inside a `steer(model, PerRow(...))` block, whose rows would not match.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from workbench.errors import InvalidArgumentError, VectorMismatchError, nearest

from .info import check_model

# Set while a `steer(model, PerRow(...))` block runs: its rows are the rows of each
# forward pass, which code that batches on its own cannot honour.
_PER_ROW_STEER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "workbench_per_row_steer", default=False
)

# Kept beside the model rather than on it: no submodule for TransformerLens to see, and
# a copied or pickled model (an RLock can be neither) gets a lock of its own.
_LOCKS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> Any:
    """The model's reentrant lock, held by `generate` and every `steer()` block (and
    by any code with hooks of its own, `hooks_held`, that other steering must not reach)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(check_model(model), threading.RLock())


@contextlib.contextmanager
def hooks_held(model: Any, fwd_hooks: Sequence[tuple[str, Callable[..., Any]]]) -> Iterator[Any]:
    """``model.hooks(fwd_hooks=...)`` while holding `model_lock`: the forward passes
    inside see these hooks and no other thread's."""
    with model_lock(model), model.hooks(fwd_hooks=list(fwd_hooks)):
        yield model


def refuse_under_per_row_steer(caller: str) -> None:
    """Raise if a `steer(model, PerRow(...))` block is open: `caller` (`generate`,
    `read_residuals`) batches on its own and would apply the per-row terms to every batch."""
    if _PER_ROW_STEER.get():
        raise InvalidArgumentError(
            f"{caller} runs inside steer(model, PerRow(...)), whose rows are the rows of each "
            f"forward pass; {caller} batches and reorders its own inputs, so the rows would not "
            "match. Pass the per-row steering to generate(steering=PerRow(...)) instead."
        )


def check_hooks(model: Any, names: list[str], known: list[str] | None = None) -> None:
    """Raise `VectorMismatchError` for hook names the model lacks, naming the nearest.

    `known` is ``list(model.hook_dict)`` when the caller already has it: the bridge
    rebuilds hook_dict on every access.
    """
    known = list(model.hook_dict) if known is None else known
    for name in names:
        if name not in known:
            raise VectorMismatchError(
                f"unknown hook name {name!r} for this model; nearest valid names: "
                f"{nearest(name, known)}"
            )


@contextlib.contextmanager
def per_row_steer_open(active: bool) -> Iterator[None]:
    """Mark a `steer(model, PerRow(...))` block as open (when `active`) while it runs."""
    token = _PER_ROW_STEER.set(active or _PER_ROW_STEER.get())
    try:
        yield
    finally:
        _PER_ROW_STEER.reset(token)
