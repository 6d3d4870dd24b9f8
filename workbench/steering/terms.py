"""What to steer with: `SteeringTerm`, and `PerRow` for one entry per batch row.

A steering argument (`steer`, `generate`, and everything built on them) means one
of exactly two things, and the user says which:

- a `SteeringTerm`, or a list of them: terms shared by every row;
- a `PerRow([...])`: one entry per row (None, a term, or a list of terms).

A plain list is never read per row, whatever it holds; a list holding a None or a
nested list is refused with a pointer to `PerRow`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import (
    TARGET_MODES,
    Mode,
    Positions,
    as_float,
    check_choice,
    check_hook_template,
    check_int,
)
from workbench.vectors.instruction_vector import InstructionVector

from .gates import Gate

SteerFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class SteeringTerm:
    """One steering intervention at one layer.

    Every built-in mode is one formula, per row and position: with u the unit
    direction, ``x <- x + (a + c * (x . u)) * u``.

    - ``"add"``: a = `weight`, c = 0. `weight` is in residual-stream units along u;
      the default is the norm of the mean difference, so the default adds the mean
      difference itself. A negative weight subtracts.
    - ``"project"``: a = `target`, c = -1: the component along u is set to `target`,
      by default the vector's mean with-instruction projection at that layer.
    - ``"clamp"``: one-sided ``"project"``, ``x <- x + max(0, target - x . u) * u``:
      a position whose component along u is below `target` is raised to it; one at
      or past it is left exactly as it was (the prompt already carries the
      instruction there).
    - ``"ablate"``: a = 0, c = -1: the component along u is removed.
    - a function ``f(x [rows, pos, d_model], u [d_model]) -> x``.

    Args:
        vector: an `InstructionVector`, or a ``[d_model]`` tensor used as a mean
            difference (direction v/|v|; ``project`` then needs an explicit target).
        layer: the layer to steer (an int or numpy integer); None means the vector's
            `selected_layer`.
        mode: ``"add"``, ``"project"``, ``"clamp"``, ``"ablate"``, or a function. None means
            ``"project"``, except in ``SteeringTerm(vec)`` with nothing else given
            on a vector that holds a selection (`workbench.evaluation.selection.select`):
            that steers with the selected layer, mode and coefficient (and, for a
            setting chosen gated, under its stored gate unless `gate` is given).
        weight: only for ``"add"``; a real number (numpy and 0-d tensor scalars are
            stored as the Python float they hold).
        target: only for ``"project"`` and ``"clamp"``; likewise.
        positions: ``"all"`` (default); ``"prompt"`` or ``"generated"`` restrict the
            term to the prompt's tokens or the generated ones, which only
            `generate` can tell apart (elsewhere they raise `PositionsError`).
        hook_name: hook template with ``{layer}``; defaults to the vector's hook.
        gate: a `workbench.steering.gates.Gate`: the term steers a prompt only on
            the gate's side of its threshold, decided once per prompt by `generate`
            (recorded in `Generation.gates`); None (default) steers every prompt.

    Example:
        >>> SteeringTerm(vec, layer=1, mode="add", weight=4.0).weight
        4.0
        >>> SteeringTerm(vec, layer=1, mode="project", weight=4.0)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: weight=4.0 is used only by mode='add'; mode='project' takes target= (the value its component along u is set to)
    """

    vector: InstructionVector | Tensor
    layer: int | None = None
    mode: Mode | SteerFn | None = None
    weight: float | None = None
    target: float | None = None
    positions: Positions = "all"
    hook_name: str | None = None
    gate: Gate | None = None

    def __post_init__(self) -> None:
        if self.gate is not None and not isinstance(self.gate, Gate):
            raise ArgumentTypeError(
                f"gate must be a Gate or None, got {type(self.gate).__name__} {self.gate!r:.60}"
            )
        if self.mode is not None and not callable(self.mode):
            check_choice("mode", self.mode, Mode)
        check_choice("positions", self.positions, Positions)
        if self.layer is not None:
            object.__setattr__(self, "layer", check_int("layer", self.layer, low=0))
        self._check_coefficients()
        if isinstance(self.vector, Tensor):
            if self.vector.ndim != 1 or not self.vector.is_floating_point():
                raise InvalidArgumentError(
                    "a tensor vector must be a 1-D [d_model] float tensor, got shape "
                    f"{tuple(self.vector.shape)} of {self.vector.dtype}"
                )
            if self.layer is None:
                raise InvalidArgumentError("a tensor vector needs an explicit layer=")
            if self.mode in (*TARGET_MODES, None) and self.target is None:
                shown = self.mode or "project"
                raise InvalidArgumentError(
                    f"mode={shown!r} with a tensor vector needs target= (there is no "
                    "mean with-instruction projection to default to)"
                )
        elif not isinstance(self.vector, InstructionVector):
            raise ArgumentTypeError(
                f"vector must be an InstructionVector or a tensor, got {type(self.vector).__name__}"
            )
        if self.hook_name is not None:
            check_hook_template(self.hook_name)

    def uses_selection(self) -> bool:
        """True when nothing but the vector was given, and the vector holds a selection."""
        unset = (self.layer, self.mode, self.weight, self.target) == (None,) * 4
        return (
            unset
            and isinstance(self.vector, InstructionVector)
            and self.vector.selection is not None
        )

    def concrete(self) -> SteeringTerm:
        """This term with its mode (and, from a selection, layer and coefficient) filled in.

        Example:
            >>> SteeringTerm(vec, layer=1).concrete().mode
            'project'
        """
        if not self.uses_selection():
            return self if self.mode is not None else replace(self, mode="project")
        sel = self.vector.selection
        if sel["layer"] is None:
            raise InvalidArgumentError(
                "this vector's selection is not to steer (the unsteered baseline was best on "
                "validation); pass layer= and mode= to steer anyway"
            )
        # A selection stores its coefficient (strength × default, from the sweep): used as is.
        fields = coefficient_fields(sel["mode"], sel["coefficient"])
        stored = sel.get("gate")
        if self.gate is None and stored is not None:
            # Chosen under a gate (a gated protocol): steered under the same gate.
            fields["gate"] = Gate(threshold=stored["threshold"], side=stored["side"])
        return replace(self, layer=sel["layer"], mode=sel["mode"], **fields)

    @property
    def coefficient(self) -> float | None:
        """The coefficient this term was given: its weight (``add``) or target
        (``project``, ``clamp``), at most one of which is set; None when neither was given
        (``ablate``, a function, or a coefficient left to its default or the selection).

        Example:
            >>> SteeringTerm(vec, layer=1, mode="add", weight=4.0).coefficient
            4.0
        """
        return self.weight if self.weight is not None else self.target

    def _check_coefficients(self) -> None:
        mode = "project" if self.mode is None else self.mode
        mode = mode if isinstance(mode, str) else "a function"
        for name, value, owners in [
            ("weight", self.weight, ("add",)),
            ("target", self.target, TARGET_MODES),
        ]:
            if value is None:
                continue
            if mode not in owners:
                takes = "takes neither"
                if mode == "add":
                    takes = "takes weight= (the amount added along u)"
                elif mode == "clamp":
                    takes = "takes target= (the value its component along u is raised to)"
                elif mode in TARGET_MODES:
                    takes = "takes target= (the value its component along u is set to)"
                shown = f"mode={mode!r}" if mode != "a function" else "a function mode"
                owner = " or ".join(f"mode={o!r}" for o in owners)
                raise InvalidArgumentError(
                    f"{name}={value!r} is used only by {owner}; {shown} {takes}"
                )
            # Stored as a float, so numpy and tensor scalars behave as the float they hold.
            object.__setattr__(self, name, as_float(name, value))


def coefficient_fields(mode: Any, coefficient: float | None) -> dict[str, float]:
    """The `SteeringTerm` keyword that carries `coefficient` for `mode`: ``weight`` for
    ``"add"``, ``target`` for ``"project"`` and ``"clamp"``, none for ``"ablate"``.

    Example:
        >>> coefficient_fields("add", 2.0), coefficient_fields("ablate", None)
        ({'weight': 2.0}, {})
    """
    if coefficient is None:
        return {}
    if mode == "add":
        return {"weight": coefficient}
    if mode in TARGET_MODES:
        return {"target": coefficient}
    raise InvalidArgumentError(
        f"coefficient {coefficient!r} has no meaning for mode {mode!r}; only 'add' (weight), "
        "'project' and 'clamp' (target) take one"
    )


def steering_limit(dtype: torch.dtype) -> tuple[float, str]:
    """How much steering may add to one position's residual stream in `dtype`, and why.

    Measured on both backends (a tiny Llama; `x + w * u` at layer 0, u one-hot or
    spread): in float16 the logits break once a component of the residual passes
    float16's largest value, at |w| near 6.5e4, because the normalisations (Hugging
    Face's RMSNorm and TransformerLens' norms alike) upcast to float32 before
    squaring. In bfloat16, float32 and float64 the squared norm overflows first, at
    |w| = sqrt(max) (1.84e19 in float32): the norm's scale becomes inf, the
    normalised residual 0, and every logit equal. Half of the smaller bound is left
    to the steering; the other half is the model's own residual stream's.

    Example:
        >>> steering_limit(torch.float16)[0], f"{steering_limit(torch.float32)[0]:.3g}"
        (32752.0, '9.22e+18')
    """
    norm_dtype = torch.float32 if torch.finfo(dtype).bits < 32 else dtype
    stored, squared = torch.finfo(dtype).max, torch.finfo(norm_dtype).max ** 0.5
    if stored < squared:
        why = f"half of {dtype}'s largest value {stored:.5g}; the other half is the model's own"
    else:
        why = f"half of sqrt({norm_dtype}'s largest value): the norm squares it in {norm_dtype}"
    return min(stored, squared) / 2, why


def check_magnitude(labels: list[str], magnitude: float, outer: float, dtype: torch.dtype) -> None:
    """Raise unless `magnitude` (the terms `labels`) plus `outer` (enclosing blocks)
    stays below `steering_limit(dtype)`."""
    total = magnitude + outer
    limit, why = steering_limit(dtype)
    if total < limit:
        return
    parts = labels + ([f"{outer:.3g} from the enclosing steer() blocks"] if outer else [])
    what = parts[0] + " overflows" if len(parts) == 1 else " + ".join(parts) + " overflow"
    raise InvalidArgumentError(
        f"{what} the model's dtype {dtype}: steering that reaches one position adds up to "
        f"{total:.3g} along the residual stream, which must stay below {limit:.3g} ({why}); "
        "lower the coefficients or use fewer terms"
    )


class PerRow:
    """One steering entry per batch row: None, a `SteeringTerm`, or a list of terms.

    Example:
        >>> rows = PerRow([SteeringTerm(vec, layer=1), None])
        >>> len(rows), rows[1]
        (2, ())
    """

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[SteeringTerm | Sequence[SteeringTerm] | None]) -> None:
        if isinstance(rows, (str, bytes, PerRow)) or not isinstance(rows, Sequence):
            raise ArgumentTypeError(
                f"PerRow takes a list with one entry per row, got {type(rows).__name__}"
            )
        out = []
        for i, entry in enumerate(rows):
            if entry is None:
                out.append(())
            elif isinstance(entry, SteeringTerm):
                out.append((entry,))
            elif isinstance(entry, (list, tuple)) and all(
                isinstance(t, SteeringTerm) for t in entry
            ):
                out.append(tuple(entry))
            else:
                raise ArgumentTypeError(
                    f"PerRow entry {i} must be None, a SteeringTerm or a list of them, "
                    f"got {entry!r}"
                )
        if not out:
            raise InvalidArgumentError("PerRow([]) has no rows")
        object.__setattr__(self, "rows", tuple(out))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PerRow is immutable")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[SteeringTerm, ...]:
        return self.rows[index]

    def __repr__(self) -> str:
        return f"PerRow({[list(r) for r in self.rows]!r})"


Steering = SteeringTerm | Sequence[SteeringTerm] | PerRow | None


def split_steering(
    steering: Steering,
) -> tuple[list[SteeringTerm], list[list[SteeringTerm]] | None]:
    """``(shared terms, per-row terms or None)`` from a steering argument.

    Example:
        >>> split_steering(SteeringTerm(vec, layer=1))[1] is None
        True
        >>> split_steering([SteeringTerm(vec, layer=1), None])
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: steering is a list, which means terms shared by every row, but item 1 is None; for one entry per row, pass PerRow([...])
    """
    if steering is None:
        return [], None
    if isinstance(steering, SteeringTerm):
        return [steering], None
    if isinstance(steering, PerRow):
        return [], [list(row) for row in steering.rows]
    if isinstance(steering, (str, bytes)) or not isinstance(steering, Sequence):
        raise ArgumentTypeError(
            "steering must be a SteeringTerm, a list of them (shared by every row), "
            f"PerRow([...]) or None, got {type(steering).__name__}"
        )
    terms = list(steering)
    for i, item in enumerate(terms):
        if not isinstance(item, SteeringTerm):
            shown = "None" if item is None else f"a {type(item).__name__}"
            raise ArgumentTypeError(
                f"steering is a list, which means terms shared by every row, but item {i} "
                f"is {shown}; for one entry per row, pass PerRow([...])"
            )
    return terms, None
