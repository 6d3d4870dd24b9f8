"""Where pairs fall along an instruction vector's directions: projections and PCA.

Data only; `analyses.projection_figures` draws what these functions return.

- `projections`: per layer, the projection of each pair's with- and without-instruction
  residual onto u_l, and the separability (AUC, d') of the two sides.
- `difference_pca`: a PCA of the per-pair differences of one or more vectors at one
  layer, to see whether instructions occupy distinct directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError, VectorMismatchError
from workbench.options import check_int
from workbench.steering.gates import default_threshold
from workbench.vectors.diagnostics import project_pairs
from workbench.vectors.instruction_vector import InstructionVector
from workbench.vectors.pairs import Pair

from .style import labelled, vector_label

__all__ = ["Projections", "difference_pca", "projections"]

SIDES = ("with", "without")


@dataclass(frozen=True)
class Projections:
    """What `projections` returns; `plot_projections` draws it.

    Attributes:
        values: one row per (layer, pair, side): columns ``layer``, ``pair`` (index
            into the pairs given), ``side`` (``"with"``/``"without"``), ``prompt``
            (that side's user text) and ``projection`` (x·u_l, residual units).
        separability: one row per layer, as `workbench.vectors.diagnostics.separability`:
            ``layer``, ``auc``, ``d_prime``, ``mean_proj_with``, ``mean_proj_without``.
        label: the vector's name (`analyses.style.vector_label`), which picks its colour.
        gate_thresholds: the default gate threshold per layer
            (`workbench.steering.gates.default_threshold`, from the vector's training
            means, not from these pairs); empty for a vector not read at the last token,
            which has no default gate.
    """

    values: pd.DataFrame
    separability: pd.DataFrame
    label: str
    gate_thresholds: Mapping[int, float] = field(default_factory=dict)


def projections(
    model: Any,
    vec: InstructionVector,
    pairs: Sequence[Pair | tuple[str, str]],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> Projections:
    """Projections of both sides of each pair onto the vector's directions, per layer.

    The pairs are read and projected by `workbench.vectors.diagnostics.project_pairs`,
    the way the vector was built (its prompt style, read position and hook) and as
    `workbench.separability` reads them, so on the vector's own training pairs the mean
    projections are the vector's ``mean_proj_with``/``mean_proj_without``. Use
    held-out pairs to see how well the direction generalises.

    Args:
        pairs: at least 2 `Pair`s or ``(with, without)`` strings (d' needs a variance).
        layers: a subset of ``vec.layers`` (default: all of them).

    Returns:
        A `Projections` with ``values`` (``len(layers) * n_pairs * 2`` rows) and
        ``separability`` (``len(layers)`` rows).

    Example:
        >>> proj = projections(model, vec, make_pairs("lowercase", split="validation", n=2), layers=[1, 2])
        >>> len(proj.values), list(proj.separability.layer)
        (8, [1, 2])
    """
    read = project_pairs(model, vec, pairs, layers=layers, batch_size=batch_size)
    sides = {
        "with": (read.proj_with, [p.with_instruction for p in read.pairs]),
        "without": (read.proj_without, [p.without_instruction for p in read.pairs]),
    }
    rows = [
        {
            "layer": layer,
            "pair": i,
            "side": side,
            "prompt": texts[i],
            "projection": float(proj[i, col]),
        }
        for col, layer in enumerate(read.layers)
        for side, (proj, texts) in sides.items()
        for i in range(len(read.pairs))
    ]
    thresholds = (
        {layer: default_threshold(vec, layer) for layer in read.layers}
        if vec.position == "last"
        else {}
    )
    return Projections(
        values=pd.DataFrame(rows),
        separability=read.separability,
        label=vector_label(vec),
        gate_thresholds=thresholds,
    )


def _pooled_diffs(
    vectors: dict[str, InstructionVector], layer: int
) -> tuple[list[str], list[int], Float[Tensor, "n_total d_model"]]:
    """Every vector's per-pair differences at `layer`, stacked; their labels and indices."""
    labels: list[str] = []
    index: list[int] = []
    blocks: list[Tensor] = []
    for label, vec in vectors.items():
        if not isinstance(vec, InstructionVector):
            raise ArgumentTypeError(
                f"vector {label!r} must be an InstructionVector, got {type(vec).__name__}"
            )
    widths = {label: vec.d_model for label, vec in vectors.items()}
    if len(set(widths.values())) > 1:
        raise VectorMismatchError(
            f"the vectors have different d_model ({widths}); they come from different models"
        )
    for label, vec in vectors.items():
        if vec.pair_diffs is None:
            raise InvalidArgumentError(
                f"vector {label!r} has no per-pair differences; compute it with "
                "compute_instruction_vector(..., keep_pair_diffs=True)"
            )
        if layer not in vec.layers or isinstance(layer, bool):
            raise VectorMismatchError(
                f"vector {label!r} holds layers {list(vec.layers)}, not layer {layer!r}"
            )
        diffs = vec.pair_diffs[:, vec.row(layer)]
        labels += [label] * diffs.shape[0]
        index += range(diffs.shape[0])
        blocks.append(diffs.to(torch.float64))
    return labels, index, torch.cat(blocks)


def _principal_axes(
    x: Float[Tensor, "n d_model"], k: int
) -> tuple[Float[Tensor, "k d_model"], Float[Tensor, " k"]]:
    """Top-k principal axes of centred `x` and their explained-variance ratios.

    Each axis is signed so that its largest-magnitude loading is positive: an SVD
    may return either sign, and a figure must not flip between runs.
    """
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:k]
    biggest = axes.abs().argmax(dim=1)
    signs = torch.sign(axes.gather(1, biggest[:, None]))
    variance = s**2
    total = variance.sum()
    ratios = variance[:k] / total if total > 0 else torch.zeros(k, dtype=x.dtype)
    return axes * signs, ratios


def difference_pca(
    vectors: Mapping[str, InstructionVector] | Sequence[InstructionVector],
    layer: int,
    *,
    n_components: int = 2,
) -> pd.DataFrame:
    """PCA of the per-pair differences of several vectors at one layer, pooled.

    Each pair's with-minus-without residual at `layer` is one point. The points of
    all vectors are centred on their joint mean and projected on the top principal
    axes (SVD of the centred matrix; each axis is signed so that its largest loading
    is positive, so the result is deterministic). Pairs of an instruction that moves
    the residual its own way form their own cluster.

    Args:
        vectors: ``{label: vector}``, or a list of vectors (labelled with
            `analyses.style.vector_label`). Each must hold ``pair_diffs``
            (``compute_instruction_vector(..., keep_pair_diffs=True)``) and `layer`.
        n_components: how many principal components to keep (at least 1).

    Returns:
        DataFrame with one row per pair of each vector: ``label``, ``pair`` (index
        within that vector's pairs), ``pc1`` … ``pc{n_components}`` (residual units).
        ``df.attrs`` holds ``layer`` and ``explained_variance_ratio`` (one float per
        component, the share of the pooled variance it carries).

    Example:
        >>> pairs = make_pairs("lowercase", n=3)
        >>> table = difference_pca({
        ...     "lowercase": compute_instruction_vector(model, pairs, keep_pair_diffs=True),
        ...     "capitals": compute_instruction_vector(model, make_pairs("capitals", n=3), keep_pair_diffs=True),
        ... }, layer=1)
        >>> table.columns.tolist(), len(table), len(table.attrs["explained_variance_ratio"])
        (['label', 'pair', 'pc1', 'pc2'], 6, 2)
    """
    if isinstance(vectors, InstructionVector):
        raise ArgumentTypeError(
            "vectors must be a mapping {label: vector} or a list of vectors, got one "
            "InstructionVector; wrap it: [vec]"
        )
    if not isinstance(vectors, (Mapping, Sequence)) or isinstance(vectors, (str, bytes)):
        raise ArgumentTypeError(
            f"vectors must be a mapping {{label: vector}} or a list of vectors, got "
            f"{type(vectors).__name__}"
        )
    if not isinstance(vectors, Mapping):
        # vector_label would fail on anything else before the check below could name it.
        for i, vec in enumerate(vectors):
            if not isinstance(vec, InstructionVector):
                raise ArgumentTypeError(
                    f"vector {i} must be an InstructionVector, got {type(vec).__name__}"
                )
    named = labelled(vectors)
    if not named:
        raise InvalidArgumentError("vectors is empty; pass at least one vector")
    n_components = check_int("n_components", n_components, low=1)
    labels, pair_index, x = _pooled_diffs(named, layer)
    most = min(x.shape)
    if n_components > most:
        raise InvalidArgumentError(
            f"n_components {n_components} exceeds what {x.shape[0]} pairs in d_model "
            f"{x.shape[1]} allow (at most {most})"
        )
    centred = x - x.mean(0)
    axes, ratios = _principal_axes(centred, n_components)
    scores = centred @ axes.T
    table = pd.DataFrame({"label": labels, "pair": pair_index})
    for k in range(n_components):
        table[f"pc{k + 1}"] = scores[:, k].tolist()
    table.attrs["layer"] = layer
    table.attrs["explained_variance_ratio"] = ratios.tolist()
    return table
