"""Steering hooks: add, project or ablate a direction in the residual stream.

Every built-in mode is one formula, applied per row and position:

    x <- x + m * (a + c * (x . u)) * u

with u the unit direction and m the position mask:

- ``add``:     a = w, c = 0      (w defaults to the norm of the mean difference, so
  the default adds the mean difference itself; negative w subtracts)
- ``project``: a = z̄, c = -1     (sets the component along u to z̄, the mean
  with-instruction projection, or to w when a weight is given)
- ``ablate``:  a = 0, c = -1     (removes the component along u)

Positions: a forward pass's positions are *prompt* positions unless `generate` says
otherwise. Under a KV cache every position is computed exactly once, in the pass
that first sees it, so steering ``"all"`` positions gives exactly what a full
recompute with the hook on every position gives, and ``"prompt"`` / ``"generated"``
select the prompt tokens / the tokens the model produced.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .activations import RESID_HOOK
from .vectors import InstructionVector, VectorMismatchError

MODES = ("add", "project", "ablate")
POSITIONS = ("all", "prompt", "generated")
SteerFn = Callable[[Tensor, Tensor], Tensor]

# (absolute column of the pass's first position, number of prompt columns).
# Outside `generate` every position is a prompt position.
_WINDOW: contextvars.ContextVar[tuple[int, int | float]] = contextvars.ContextVar(
    "workbench_steering_window", default=(0, math.inf)
)


@contextlib.contextmanager
def position_window(offset: int, prompt_width: int | float) -> Iterator[None]:
    """Tell steering hooks which absolute columns the next forward passes cover."""
    token = _WINDOW.set((offset, prompt_width))
    try:
        yield
    finally:
        _WINDOW.reset(token)


@dataclass(frozen=True, eq=False)
class SteeringTerm:
    """One steering intervention.

    Args:
        vector: an `InstructionVector`, or a ``[d_model]`` tensor used as a mean
            difference (direction = v/|v|; ``project`` then needs an explicit weight).
        layer: the layer to steer; None means the vector's `selected_layer`.
        mode: ``"add"``, ``"project"``, ``"ablate"``, or a function
            ``f(x [rows, pos, d_model], u [d_model]) -> x``.
        weight: see the module docstring; None takes the vector's own statistic.
        positions: ``"all"`` (default), ``"prompt"`` or ``"generated"``.
        hook_name: hook template with ``{layer}``; defaults to the vector's hook.

    Example:
        >>> with steer(model, SteeringTerm(vec, layer=14)):  # doctest: +SKIP
        ...     logits = model(tokens)
    """

    vector: InstructionVector | Tensor
    layer: int | None = None
    mode: str | SteerFn = "project"
    weight: float | int | None = None
    positions: str = "all"
    hook_name: str | None = None

    def __post_init__(self) -> None:
        if not (callable(self.mode) or self.mode in MODES):
            raise ValueError(f"mode {self.mode!r} is not one of {MODES} or a callable")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions {self.positions!r} is not one of {POSITIONS}")
        if self.weight is not None and not math.isfinite(float(self.weight)):
            raise ValueError(f"weight {self.weight!r} is not a finite number")
        if isinstance(self.vector, Tensor):
            if self.vector.ndim != 1:
                raise ValueError(
                    f"a tensor vector must be 1-D [d_model], got shape {tuple(self.vector.shape)}"
                )
            if self.layer is None:
                raise ValueError("a tensor vector needs an explicit layer")
            if self.mode == "project" and self.weight is None:
                raise ValueError("mode='project' with a tensor vector needs weight (the target)")
        elif not isinstance(self.vector, InstructionVector):
            raise TypeError(
                f"vector must be an InstructionVector or a tensor, got {type(self.vector).__name__}"
            )


@dataclass(frozen=True, eq=False)
class ResolvedTerm:
    """A term checked against a model: hook name, unit direction and coefficients."""

    hook_name: str
    direction: Float[Tensor, " d_model"]
    a: float
    c: float
    positions: str
    fn: SteerFn | None


def resolve(model: Any, term: SteeringTerm) -> ResolvedTerm:
    """Check `term` against `model` and compute its coefficients (no hooks added)."""
    d_model, n_layers = model.cfg.d_model, model.cfg.n_layers
    vec = term.vector
    if isinstance(vec, InstructionVector):
        layer = term.layer if term.layer is not None else vec.selected_layer
        if layer is None:
            raise ValueError(
                "SteeringTerm has layer=None and the vector has no selected layer yet; "
                "pass layer=... or call vector.select_layer(...)"
            )
        if vec.d_model != d_model:
            raise VectorMismatchError(
                f"vector has d_model={vec.d_model} (from {vec.model_name!r}); "
                f"the model has d_model={d_model}"
            )
        row = vec.row(layer)
        diff = vec.diffs[row]
        template = term.hook_name or vec.hook_name
        default_a = {"add": float(diff.norm()), "project": float(vec.mean_proj_with[row])}
    else:
        layer, diff, template = term.layer, term.vector, term.hook_name or RESID_HOOK
        if diff.shape[0] != d_model:
            raise VectorMismatchError(
                f"vector has d_model={diff.shape[0]}; the model has d_model={d_model}"
            )
        default_a = {"add": float(diff.norm())}
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} is out of range: the model has {n_layers} layers")
    if not bool(torch.isfinite(diff).all()):
        raise ValueError(f"the vector at layer {layer} contains NaN or inf")
    norm = diff.norm()
    if float(norm) == 0:
        raise ValueError(f"the vector at layer {layer} is zero; it has no direction")
    hook_name = template.format(layer=layer)
    if hook_name not in model.hook_dict:
        raise ValueError(f"unknown hook name {hook_name!r} for this model")
    u = (diff / norm).to(device=model.cfg.device, dtype=torch.float32)
    mode = term.mode
    if callable(mode):
        return ResolvedTerm(hook_name, u, 0.0, 0.0, term.positions, mode)
    if mode == "ablate":
        a, c = 0.0, -1.0
    else:
        a = float(term.weight) if term.weight is not None else default_a[mode]
        c = 0.0 if mode == "add" else -1.0
    return ResolvedTerm(hook_name, u, a, c, term.positions, None)


def as_terms(terms: SteeringTerm | Sequence[SteeringTerm] | None) -> list[SteeringTerm]:
    if terms is None:
        return []
    if isinstance(terms, SteeringTerm):
        return [terms]
    out = list(terms)
    for t in out:
        if not isinstance(t, SteeringTerm):
            raise TypeError(f"expected SteeringTerm, got {type(t).__name__}: {t!r}")
    return out


def _position_mask(positions: str, n_pos: int, device: torch.device) -> Tensor | None:
    if positions == "all":
        return None
    offset, prompt_width = _WINDOW.get()
    cols = torch.arange(offset, offset + n_pos, device=device)
    is_prompt = cols < prompt_width
    return is_prompt if positions == "prompt" else ~is_prompt


class _Slot:
    """One term per row at a hook (rows without a term have zero coefficients).

    A slot built from a single term broadcasts over the whole batch.
    """

    def __init__(self, rows: list[ResolvedTerm | None], positions: str) -> None:
        present = [r for r in rows if r is not None]
        d_model = present[0].direction.shape[0]
        device = present[0].direction.device
        self.positions = positions
        self.u = torch.stack(
            [r.direction if r is not None else torch.zeros(d_model, device=device) for r in rows]
        )
        self.a = torch.tensor([r.a if r is not None else 0.0 for r in rows], device=device)
        self.c = torch.tensor([r.c if r is not None else 0.0 for r in rows], device=device)
        self.fns = [r.fn if r is not None else None for r in rows]
        self.custom = any(f is not None for f in self.fns)

    def apply(self, x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        pmask = _position_mask(self.positions, x.shape[1], x.device)
        if self.custom:
            return self._apply_custom(x, pmask)
        u = self.u.to(x.dtype)
        # Elementwise product + sum keeps each row's arithmetic independent of the
        # batch it sits in, so per-row and one-at-a-time results agree bit for bit.
        proj = (x * u[:, None, :]).sum(-1)
        coef = self.a.to(x.dtype)[:, None] + self.c.to(x.dtype)[:, None] * proj
        if pmask is not None:
            coef = coef * pmask.to(x.dtype)[None, :]
        return x + coef[..., None] * u[:, None, :]

    def _apply_custom(self, x: Tensor, pmask: Tensor | None) -> Tensor:
        # A one-row slot is a shared term: it applies to the whole batch at once.
        chunks = [x] if len(self.fns) == 1 else [x[i : i + 1] for i in range(len(self.fns))]
        rows = []
        for i, (fn, xi) in enumerate(zip(self.fns, chunks, strict=True)):
            if fn is not None:
                new = fn(xi, self.u[i].to(x.dtype))
                if new.shape != xi.shape:
                    raise ValueError(
                        f"custom steering function returned shape {tuple(new.shape)}, "
                        f"expected {tuple(xi.shape)}"
                    )
                xi = new if pmask is None else torch.where(pmask[None, :, None], new, xi)
            rows.append(xi)
        return torch.cat(rows)


def build_hooks(
    model: Any, per_row: Sequence[Sequence[SteeringTerm]] | None, shared: Sequence[SteeringTerm]
) -> list[tuple[str, Callable[..., Tensor]]]:
    """Resolve terms into TransformerLens forward hooks (validates everything first).

    `shared` terms apply to every row; `per_row[i]` applies to row i only, and the
    hooks then require batches of exactly ``len(per_row)`` rows.
    """
    resolved_shared = [resolve(model, t) for t in shared]
    resolved_rows = [[resolve(model, t) for t in row] for row in (per_row or [])]
    by_hook: dict[str, list[_Slot]] = {}
    for r in resolved_shared:
        by_hook.setdefault(r.hook_name, []).append(_Slot([r], r.positions))
    if per_row is not None:
        n_rows = len(resolved_rows)
        # Slot k at a hook holds each row's k-th term at that hook, grouped by positions.
        keyed: dict[tuple[str, str], list[list[ResolvedTerm]]] = {}
        for i, row in enumerate(resolved_rows):
            counts: dict[tuple[str, str], int] = {}
            for r in row:
                key = (r.hook_name, r.positions)
                k = counts.get(key, 0)
                counts[key] = k + 1
                slots = keyed.setdefault(key, [])
                while len(slots) <= k:
                    slots.append([None] * n_rows)
                slots[k][i] = r
        for (hook_name, positions), slots in keyed.items():
            for rows in slots:
                by_hook.setdefault(hook_name, []).append(_Slot(rows, positions))

    def hook_fn(x: Tensor, hook: Any, items: list[_Slot], n_rows: int | None) -> Tensor:
        if n_rows is not None and x.shape[0] != n_rows:
            raise ValueError(
                f"per-row steering was set up for {n_rows} rows but the batch has {x.shape[0]}"
            )
        for slot in items:
            x = slot.apply(x)
        return x

    n_rows = len(per_row) if per_row is not None else None
    return [(name, partial(hook_fn, items=items, n_rows=n_rows)) for name, items in by_hook.items()]


@contextlib.contextmanager
def steer(
    model: Any,
    terms: SteeringTerm | Sequence[SteeringTerm] | None = None,
    *,
    per_row: Sequence[SteeringTerm | Sequence[SteeringTerm] | None] | None = None,
) -> Iterator[Any]:
    """Context manager that steers `model` with one or more terms.

    Hooks go through the model's own ``hooks()`` context, so they are removed when
    the block exits, also when it raises. All terms are validated before any hook is
    added.

    Args:
        terms: a `SteeringTerm` or a list of them, applied to every row.
        per_row: one entry per batch row (None, a term, or a list of terms);
            forward passes must then have exactly that many rows.

    Example:
        >>> with steer(model, [SteeringTerm(fmt, layer=14), SteeringTerm(length, layer=10)]):  # doctest: +SKIP
        ...     logits = model(tokens)
    """
    rows = None
    if per_row is not None:
        rows = [as_terms(r) for r in per_row]
    hooks = build_hooks(model, rows, as_terms(terms))
    with model.hooks(fwd_hooks=hooks):
        yield model
