"""Steering hooks: terms resolved against a model, applied through ``model.hooks()``.

Where steering applies, for every way of running the model:

- ``positions="all"`` (the default) steers every position of every forward pass:
  a plain ``model(tokens)``, ``run_with_cache``, TransformerLens' ``model.generate``
  and `generate` alike. Under a KV cache each position is computed once, in the pass
  that first sees it, so this equals a full recompute with the hook everywhere.
- ``positions="prompt"`` / ``"generated"`` need to know where the prompt ends.
  Only `generate` (and the reference loop) tell the hooks, per forward pass; any
  other forward pass with such a term raises `PositionsError` instead of guessing.

Every term is checked against the model (vector shape, layers, hook) before any
hook is added, and so is what the terms do together: the coefficients of all the
terms that reach one position (over every layer, and enclosing `steer()` blocks)
must fit the model's dtype (`steering_limit`).

Threads: hooks live on the model, so `generate` and each `steer()` block hold the
model's reentrant `model_lock`; another thread's call on that model waits for them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import InvalidArgumentError, PositionsError, VectorMismatchError
from workbench.model.hooks import check_hooks, model_lock, per_row_steer_open
from workbench.model.info import check_model
from workbench.options import RESID_HOOK
from workbench.vectors.checks import checks_once
from workbench.vectors.instruction_vector import InstructionVector

from .directions import unit_direction
from .gates import ResolvedGate, resolve_gate
from .settings import default_coefficient
from .terms import SteerFn, Steering, SteeringTerm, check_magnitude, split_steering

# (absolute column of the pass's first position, number of prompt columns), set by
# `generate` around each forward pass; None everywhere else.
_WINDOW: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "workbench_steering_window", default=None
)

# (id(model), magnitude) of each `steer()` block open in this thread (`check_fits`).
_OPEN: contextvars.ContextVar[tuple[tuple[int, float], ...]] = contextvars.ContextVar(
    "workbench_open_steering", default=()
)


@contextlib.contextmanager
def position_window(offset: int, prompt_width: int) -> Iterator[None]:
    """Tell steering hooks which absolute columns the next forward passes cover."""
    token = _WINDOW.set((offset, prompt_width))
    try:
        yield
    finally:
        _WINDOW.reset(token)


@dataclass(frozen=True, eq=False)
class ResolvedTerm:
    """A term checked against a model: hook name, unit direction and coefficients."""

    hook_name: str
    direction: Float[Tensor, " d_model"]
    a: float
    c: float
    positions: str
    fn: SteerFn | None
    label: str = ""
    # clamp: the coefficient a + c (x . u) is kept at or above 0 (never pulls back).
    floor: bool = False
    gate: ResolvedGate | None = None


def _source(model: Any, term: SteeringTerm) -> tuple[int, Tensor, str]:
    """The term's layer, mean difference and hook template."""
    vec = term.vector
    if isinstance(vec, InstructionVector):
        layer = term.layer if term.layer is not None else vec.selected_layer
        if layer is None:
            raise InvalidArgumentError(
                "SteeringTerm has layer=None and the vector has no selected layer; "
                f"pass layer= (one of {list(vec.layers)}) or use vector.select_layer(...)"
            )
        return layer, vec.diff(layer), term.hook_name or vec.hook_name
    if vec.shape[0] != model.cfg.d_model:
        raise VectorMismatchError(
            f"vector has d_model={vec.shape[0]}; the model has d_model={model.cfg.d_model}"
        )
    if not bool(torch.isfinite(vec).all()):
        raise InvalidArgumentError(f"the vector for layer {term.layer} contains NaN or inf")
    return term.layer, vec, term.hook_name or RESID_HOOK


def resolve(
    model: Any,
    term: SteeringTerm,
    known_hooks: Sequence[str],
    checked_hooks: Collection[str] = (),
) -> ResolvedTerm:
    """Check `term` against `model` and compute its coefficients (no hooks added); whether
    they fit the dtype is checked over all the terms together, by `SteeringPlan`.

    A coefficient left unset is `default_coefficient`. The hook name is checked unless
    it is one of `checked_hooks` (those of a vector already checked against the model).
    """
    term = term.concrete()
    layer, diff, template = _source(model, term)
    n_layers = model.cfg.n_layers
    if not 0 <= layer < n_layers:
        raise InvalidArgumentError(
            f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})"
        )
    hook_name = template.format(layer=layer)
    if hook_name not in checked_hooks:
        check_hooks(model, [hook_name], known_hooks)
    u, _ = unit_direction(diff, layer)
    mode, fn = term.mode, None
    if callable(mode):
        fn, a, c, label = mode, 0.0, 0.0, f"a function at layer {layer}"
    elif mode == "ablate":
        a, c, label = 0.0, -1.0, f"ablate at layer {layer}"
    else:
        a = term.coefficient
        if a is None:
            a = default_coefficient(term.vector, layer, mode)
        c = 0.0 if mode == "add" else -1.0
        kind = "weight" if mode == "add" else "clamp target" if mode == "clamp" else "target"
        label = f"{kind} {a!r} at layer {layer}"
    u = u.to(device=model.cfg.device)
    floor = mode == "clamp"
    gate = (
        None if term.gate is None else resolve_gate(model, term.gate, term.vector, layer, template)
    )
    return ResolvedTerm(hook_name, u, float(a), c, term.positions, fn, label, floor, gate)


def _position_mask(positions: str, n_pos: int, device: torch.device) -> Tensor | None:
    if positions == "all":
        return None
    window = _WINDOW.get()
    if window is None:
        raise PositionsError(
            f"a SteeringTerm with positions={positions!r} ran in a forward pass that does not "
            "say where the prompt ends (a plain model(...) call, run_with_cache, or "
            "TransformerLens' model.generate). Use workbench.generate(...), which marks "
            "prompt and generated tokens, or positions='all'."
        )
    offset, prompt_width = window
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
        # The lowest coefficient per row: 0 for clamp, -inf (no bound) for the others.
        self.floored = any(r is not None and r.floor for r in rows)
        lows = [0.0 if r is not None and r.floor else -torch.inf for r in rows]
        self.low = torch.tensor(lows, device=device)
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def _in(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """u, a, c, low in the activation's dtype, converted once per slot rather than on
        every forward pass (three kernels per term and step on a half-precision GPU)."""
        if dtype not in self._cast:
            self._cast[dtype] = tuple(t.to(dtype) for t in (self.u, self.a, self.c, self.low))
        return self._cast[dtype]

    def apply(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pmask = _position_mask(self.positions, x.shape[1], x.device)
        if self.custom:
            return self._apply_custom(x, pmask)
        return self._apply_builtin(x, pmask)

    def _apply_builtin(self, x: Tensor, pmask: Tensor | None) -> Tensor:
        u, a, c, low = self._in(x.dtype)
        # Elementwise product + sum keeps each row's arithmetic independent of the
        # batch it sits in, so per-row and one-at-a-time results agree bit for bit.
        proj = (x * u[:, None, :]).sum(-1)
        coef = a[:, None] + c[:, None] * proj
        if pmask is not None:
            coef = coef * pmask.to(x.dtype)[None, :]
        if self.floored:
            # clamp: a position at or past its target is returned as it came, bit for bit
            # (x + 0 * u would turn a -0.0 coordinate into +0.0).
            coef = torch.maximum(coef, low[:, None])
            return torch.where((coef == 0)[..., None], x, x + coef[..., None] * u[:, None, :])
        return x + coef[..., None] * u[:, None, :]

    def _apply_custom(self, x: Tensor, pmask: Tensor | None) -> Tensor:
        # A one-row slot is a shared term: it applies to the whole batch at once.
        chunks = [x] if len(self.fns) == 1 else [x[i : i + 1] for i in range(len(self.fns))]
        # Rows of built-in terms beside the function rows (PerRow, or a plan whose gates
        # opened for some prompts) get their own arithmetic, row by row as always.
        builtin = any(f is None for f in self.fns)
        steered = self._apply_builtin(x, pmask) if builtin else x
        rows = []
        for i, (fn, xi) in enumerate(zip(self.fns, chunks, strict=True)):
            if fn is None:
                xi = steered[i : i + 1]
            else:
                new = fn(xi, self.u[i].to(x.dtype))
                if not isinstance(new, Tensor) or new.shape != xi.shape:
                    shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                    raise InvalidArgumentError(
                        f"custom steering function returned {shape}, expected a tensor of "
                        f"shape {tuple(xi.shape)}"
                    )
                wide = new if torch.finfo(new.dtype).bits >= 32 else new.float()  # as norms do
                if not bool(torch.isfinite(wide.pow(2).sum(-1)).all()):
                    raise InvalidArgumentError(
                        "custom steering function returned NaN or inf, or a residual whose "
                        f"squared norm overflows {wide.dtype}"
                    )
                xi = new if pmask is None else torch.where(pmask[None, :, None], new, xi)
            rows.append(xi)
        return torch.cat(rows)


def _row_slots(rows: list[list[ResolvedTerm]]) -> dict[str, list[_Slot]]:
    """Slot k at a hook holds each row's k-th term there, grouped by positions."""
    keyed: dict[tuple[str, str], list[list[ResolvedTerm | None]]] = {}
    for i, row in enumerate(rows):
        counts: dict[tuple[str, str], int] = {}
        for r in row:
            key = (r.hook_name, r.positions)
            k = counts.get(key, 0)
            counts[key] = k + 1
            slots = keyed.setdefault(key, [])
            while len(slots) <= k:
                slots.append([None] * len(rows))
            slots[k][i] = r
    by_hook: dict[str, list[_Slot]] = {}
    for (hook_name, positions), slots in keyed.items():
        for members in slots:
            by_hook.setdefault(hook_name, []).append(_Slot(members, positions))
    return by_hook


def _hook_fn(x: Tensor, hook: Any, slots: list[_Slot], n_rows: int | None) -> Tensor:
    d_model = slots[0].u.shape[-1]
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise InvalidArgumentError(
            f"steering needs a [batch, pos, d_model={d_model}] activation; hook "
            f"{getattr(hook, 'name', '?')!r} carries shape {tuple(x.shape)}"
        )
    if n_rows is not None and x.shape[0] != n_rows:
        raise InvalidArgumentError(
            f"per-row steering was set up for {n_rows} rows but the batch has {x.shape[0]}"
        )
    for slot in slots:
        x = slot.apply(x)
    return x


class SteeringPlan:
    """A steering argument resolved against a model once; builds hooks for any rows.

    Everything is validated on construction, so a plan that exists can run.

    Example:
        >>> plan = SteeringPlan(model, PerRow([SteeringTerm(vec, layer=1), None]))
        >>> plan.n_rows, [name for name, _ in plan.hooks()]
        (2, ['blocks.1.hook_resid_post'])
    """

    def __init__(self, model: Any, steering: Steering) -> None:
        check_model(model)
        shared, per_row = split_steering(steering)
        known = list(model.hook_dict)  # rebuilt on every access on the bridge
        # Each vector is checked once (its hooks with it); resolve checks only the hook
        # names no vector check covered: a term's own hook_name, or a tensor vector's.
        checked: set[str] = set()
        with checks_once():
            for term in shared + [t for row in per_row or [] for t in row]:
                vec = term.vector
                if isinstance(vec, InstructionVector):
                    vec.check_model(model)
                    checked.update(vec.hook_name.format(layer=layer) for layer in vec.layers)
        self._model_id, self._dtype = id(model), model.cfg.dtype
        self._arrange(
            [resolve(model, t, known, checked) for t in shared],
            None
            if per_row is None
            else [[resolve(model, t, known, checked) for t in row] for row in per_row],
        )
        self.check_fits()

    def _arrange(
        self, shared: list[ResolvedTerm], per_row: list[list[ResolvedTerm]] | None
    ) -> None:
        self.shared, self.per_row = shared, per_row
        self.n_rows = None if per_row is None else len(per_row)
        # x + a u (add), (I - u u^T) x + a u (project, and clamp where it acts) grow the
        # residual's norm by at most |a|: the terms that reach one position, by at most
        # the sum of their |a|.
        rows = [self.shared] if self.per_row is None else [self.shared + r for r in self.per_row]
        reaching = [
            [t for t in row if t.a != 0 and t.positions in ("all", part)]
            for row in rows
            for part in ("prompt", "generated")
        ]
        self._worst = max(reaching, key=lambda terms: sum(abs(t.a) for t in terms))
        self.magnitude = sum(abs(t.a) for t in self._worst)
        self.gated = any(t.gate is not None for row in rows for t in row)

    def gates(self, n_prompts: int) -> list[list[ResolvedGate]]:
        """Each prompt's gates, in the order of its terms (shared ones first)."""
        rows = self.per_row if self.per_row is not None else [[] for _ in range(n_prompts)]
        return [[t.gate for t in self.shared + row if t.gate is not None] for row in rows]

    def open_gates(self, decisions: Sequence[tuple[bool, ...]]) -> SteeringPlan:
        """This plan with each prompt's gated terms kept where its `decisions` (from
        `read_gates`, in the order of `gates`) say on, dropped where off: one entry
        per prompt, nothing gated."""
        rows = self.per_row if self.per_row is not None else [[] for _ in decisions]
        kept = []
        for row, on in zip(rows, decisions, strict=True):
            opened = iter(on)
            kept.append(
                [
                    dataclasses.replace(t, gate=None)
                    for t in self.shared + row
                    if t.gate is None or next(opened)
                ]
            )
        plan = object.__new__(SteeringPlan)
        plan._model_id, plan._dtype = self._model_id, self._dtype
        plan._arrange([], kept)
        return plan

    def check_fits(self) -> None:
        """Raise if this plan's terms, with the enclosing `steer()` blocks of this thread,
        could add more to one position than the model's dtype holds (`steering_limit`)."""
        outer = sum(m for key, m in _OPEN.get() if key == self._model_id)
        check_magnitude([t.label for t in self._worst], self.magnitude, outer, self._dtype)

    def hooks(
        self, rows: slice | Sequence[int] | None = None
    ) -> list[tuple[str, Callable[..., Tensor]]]:
        """TransformerLens forward hooks; per-row plans take the batch's `rows` (a slice,
        or the prompt index of each batch row in order, as refilled batches hold them)."""
        by_hook: dict[str, list[_Slot]] = {}
        for r in self.shared:
            by_hook.setdefault(r.hook_name, []).append(_Slot([r], r.positions))
        n_rows = None
        if self.per_row is not None:
            if rows is None:
                chosen = self.per_row
            elif isinstance(rows, slice):
                chosen = self.per_row[rows]
            else:
                chosen = [self.per_row[i] for i in rows]
            n_rows = len(chosen)
            for name, slots in _row_slots(chosen).items():
                by_hook.setdefault(name, []).extend(slots)
        return [
            (name, partial(_hook_fn, slots=slots, n_rows=n_rows)) for name, slots in by_hook.items()
        ]


class _SteerBlock:
    """What `steer` returns: a context manager that can be entered again, also nested."""

    def __init__(self, model: Any, steering: Steering) -> None:
        self.model = model
        self.plan = SteeringPlan(model, steering)
        if self.plan.gated:
            raise InvalidArgumentError(
                "a gated SteeringTerm (gate=Gate(...)) decides per prompt, from the prompt's "
                "last token, which only generate() (and sweeps built on it) reads; a plain "
                "forward pass under steer() has no prompt to decide on. Use generate(...), "
                "or the term without gate="
            )
        self._open: list[contextlib.ExitStack] = []

    def __enter__(self) -> Any:
        with contextlib.ExitStack() as stack:
            lock = model_lock(self.model)
            lock.acquire()
            stack.callback(lock.release)
            # Checked again here: the enclosing blocks may differ from those at creation.
            self.plan.check_fits()
            stack.enter_context(per_row_steer_open(self.plan.n_rows is not None))
            open_ = _OPEN.set((*_OPEN.get(), (id(self.model), self.plan.magnitude)))
            stack.callback(_OPEN.reset, open_)
            stack.enter_context(self.model.hooks(fwd_hooks=self.plan.hooks()))
            self._open.append(stack.pop_all())
        return self.model

    def __exit__(self, *exc: object) -> bool:
        if not self._open:
            raise InvalidArgumentError("this steer() block was exited more often than entered")
        return bool(self._open.pop().__exit__(*exc))


def steer(model: Any, steering: Steering) -> _SteerBlock:
    """Context manager that steers every forward pass of `model` inside the block.

    Hooks go through the model's own ``hooks()`` context, so they are removed when
    the block exits, also when it raises. Terms are validated here, before any block;
    the result can be entered again, also nested. The block holds `model_lock`:
    another thread's `generate` or `steer()` on this model waits for it to end.

    Args:
        steering: a `SteeringTerm` or a list of them (applied to every row), or
            `PerRow([...])` (one entry per row; batches must have that many rows).

    Example:
        >>> ids, mask = tokenize_prompts(model, [format_prompt(model, "Hi")])
        >>> with steer(model, [SteeringTerm(vec, layer=1), SteeringTerm(vec, layer=2, mode="add")]):
        ...     logits = model(ids, attention_mask=mask)
        >>> logits.shape[:2] == ids.shape
        True
    """
    return _SteerBlock(model, steering)
