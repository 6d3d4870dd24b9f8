"""Gated steering terms: a term that steers a prompt only if the prompt does not
already carry the instruction, as read off the instruction vector's own direction.

A `Gate` on a `SteeringTerm` is read once per prompt, before any of that call's
steering: the unsteered residual at ``hook_name.format(layer=gate layer)`` at the last
prompt token, projected on the gate vector's unit direction u. With ``side="below"``
(the default) the term steers the prompt's whole generation when that projection is
strictly below the threshold, and not at all otherwise; ``side="above"`` is the
reverse. The default threshold is midway between the vector's mean with- and
without-instruction projections at the gate's layer, ``(z̄_with + z̄_without) / 2``,
which is where a prompt is as close to one mean as to the other.

Only `generate` (and what is built on it: sweeps, the protocol) reads gates; a gated
term under `steer()` is refused, since a plain forward pass has no "prompt" to read.
Enclosing `steer()` blocks apply to the gate's read as to every forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError, VectorMismatchError
from workbench.options import GateSide, as_float, check_choice, check_int
from workbench.vectors.activations import read_tokens
from workbench.vectors.instruction_vector import InstructionVector

from .directions import unit_direction


@dataclass(frozen=True, eq=False)
class Gate:
    """When a `SteeringTerm` acts: per prompt, on its last token's unsteered projection.

    Attributes:
        vector: the direction's source: an `InstructionVector`, or a ``[d_model]``
            tensor (then `threshold` is needed); None is the term's own vector.
        layer: where to read; None is the term's layer.
        threshold: the projection (x . u) that divides the two sides; None is midway
            between the vector's mean with- and without-instruction projections there.
        side: ``"below"`` steers prompts whose projection is strictly below the
            threshold (those that do not carry the instruction); ``"above"`` those
            strictly above it.

    Example:
        >>> from workbench.steering.gates import Gate
        >>> term = SteeringTerm(vec, layer=1, mode="project", gate=Gate())
        >>> out = generate(model, ["Hi", "Name a colour."], steering=term, max_new_tokens=2,
        ...     return_tokens=True)
        >>> [len(g) for g in out.gates]  # one decision per gated term, per prompt
        [1, 1]
    """

    vector: InstructionVector | Tensor | None = None
    layer: int | None = None
    threshold: float | None = None
    side: GateSide = "below"

    def __post_init__(self) -> None:
        check_choice("gate side", self.side, GateSide)
        if self.layer is not None:
            object.__setattr__(self, "layer", check_int("gate layer", self.layer, low=0))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", as_float("gate threshold", self.threshold))
        vec = self.vector
        if isinstance(vec, Tensor):
            if vec.ndim != 1 or not vec.is_floating_point():
                raise InvalidArgumentError(
                    "a gate's tensor vector must be a 1-D [d_model] float tensor, got shape "
                    f"{tuple(vec.shape)} of {vec.dtype}"
                )
            if not bool(torch.isfinite(vec).all()):
                raise InvalidArgumentError(
                    "a gate's tensor vector holds NaN or inf: no prompt's projection could be "
                    "compared with the threshold"
                )
            if self.threshold is None:
                raise InvalidArgumentError(
                    "a gate with a tensor vector needs threshold= (there are no mean "
                    "projections to put it between)"
                )
        elif vec is not None and not isinstance(vec, InstructionVector):
            raise ArgumentTypeError(
                f"gate vector must be an InstructionVector, a tensor or None, got "
                f"{type(vec).__name__}"
            )


@dataclass(frozen=True, eq=False)
class ResolvedGate:
    """A gate checked against a model: the hook template and layer read, u, threshold."""

    hook_template: str
    layer: int
    direction: Float[Tensor, " d_model"]  # float32, CPU
    threshold: float
    side: str

    def is_on(self, residual: Float[Tensor, " d_model"]) -> bool:
        """Whether the term steers a prompt whose last token's residual is `residual`."""
        proj = float(residual.float() @ self.direction)
        return proj < self.threshold if self.side == "below" else proj > self.threshold


def default_threshold(vec: InstructionVector, layer: int) -> float:
    """The default gate threshold at `layer`: midway between the vector's mean with- and
    without-instruction projections there (its training pairs, read at their last token).

    Example:
        >>> row = vec.row(1)
        >>> default_threshold(vec, 1) == float((vec.mean_proj_with[row] + vec.mean_proj_without[row]) / 2)
        True
    """
    row = vec.row(layer)
    return float((vec.mean_proj_with[row] + vec.mean_proj_without[row]) / 2)


def resolve_gate(
    model: Any, gate: Gate, vector: InstructionVector | Tensor, layer: int, template: str
) -> ResolvedGate:
    """`gate` against `model`, for a term on `vector` at `layer` through `template`."""
    vec = vector if gate.vector is None else gate.vector
    layer = layer if gate.layer is None else gate.layer
    if isinstance(vec, InstructionVector):
        if gate.vector is not None:
            vec.check_model(model)
            template = vec.hook_name
        if layer not in vec.layers:
            raise VectorMismatchError(
                f"gate layer {layer}: the gate's vector holds layers {list(vec.layers)}"
            )
        diff = vec.diff(layer)
    else:
        if vec.shape[0] != model.cfg.d_model:
            raise VectorMismatchError(
                f"gate vector has d_model={vec.shape[0]}; the model has d_model={model.cfg.d_model}"
            )
        diff = vec
    n_layers = model.cfg.n_layers
    if not 0 <= layer < n_layers:
        raise InvalidArgumentError(
            f"gate layer {layer} is out of range: the model has {n_layers} layers "
            f"(0..{n_layers - 1})"
        )
    threshold = gate.threshold
    if threshold is None:
        if not isinstance(vec, InstructionVector):
            raise InvalidArgumentError(
                "a gate on a tensor vector needs threshold= (there are no mean projections "
                "to put it between)"
            )
        if vec.position != "last":
            raise InvalidArgumentError(
                f"the default gate threshold lies between the vector's mean projections, "
                f"read at position {vec.position!r}; the gate reads the last prompt token, "
                "so pass threshold="
            )
        threshold = default_threshold(vec, layer)
    u, _ = unit_direction(diff, layer)
    return ResolvedGate(template, layer, u.cpu(), threshold, gate.side)


def read_gates(
    model: Any,
    token_lists: Sequence[list[int]],
    gates: Sequence[Sequence[ResolvedGate]],
    batch_size: int,
) -> list[tuple[bool, ...]]:
    """Each prompt's gate decisions, in the order of its `gates` (one list per prompt).

    Each distinct prompt is read once, unsteered by the call's own terms, in batches of
    `batch_size`, the forward pass stopping after the deepest gate layer.

    Example:
        >>> from workbench.model.prompts import encode_prompts
        >>> g = resolve_gate(model, Gate(), vec, 1, vec.hook_name)
        >>> ids = encode_prompts(model, [format_prompt(model, "Hi")])
        >>> read_gates(model, ids, [[g]], 4)[0] in [(True,), (False,)]
        True
    """
    distinct: dict[tuple[int, ...], int] = {}
    for i, tokens in enumerate(token_lists):
        if gates[i]:
            distinct.setdefault(tuple(tokens), len(distinct))
    if not distinct:
        return [() for _ in token_lists]
    lists = [list(t) for t in distinct]
    residuals: dict[tuple[str, int], Tensor] = {}
    templates: dict[str, set[int]] = {}
    for row in gates:
        for g in row:
            templates.setdefault(g.hook_template, set()).add(g.layer)
    for template, layers in templates.items():
        ordered = sorted(layers)
        acts = read_tokens(
            model,
            lists,
            layers=ordered,
            position="last",
            batch_size=batch_size,
            hook_name=template,
            share_prefix=False,  # the full pass, as the oracle reads it
        )
        for col, layer in enumerate(ordered):
            residuals[(template, layer)] = acts[:, col]
    out = []
    for tokens, row in zip(token_lists, gates, strict=True):
        if not row:
            out.append(())
            continue
        k = distinct[tuple(tokens)]
        out.append(tuple(g.is_on(residuals[(g.hook_template, g.layer)][k]) for g in row))
    return out


def describe_gates(decisions: Sequence[tuple[bool, ...]]) -> str:
    """How often the gates opened: ``"gate on for 3 of 24 prompts"``.

    Example:
        >>> describe_gates([(True,), (False,), ()])
        'gate on for 1 of 2 prompts'
    """
    gated = [d for d in decisions if d]
    return gate_count_line(sum(all(d) for d in gated), len(gated))


def gate_count_line(on: int, n: int) -> str:
    """``"gate on for {on} of {n} prompts"``: how every count of a gate is worded."""
    return f"gate on for {on} of {n} prompts"
