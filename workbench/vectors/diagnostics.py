"""How trustworthy is an instruction vector? Stability and separability.

(The norm of the mean difference per layer is `InstructionVector.norms()`.)

All functions return plain tensors, pandas DataFrames or frozen dataclasses of them;
figures live in `analyses`. `project_pairs` is the one place pairs are read the
vector's way and projected on its directions: `separability` returns its table and
``analyses.projections`` draws its projections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import as_float, as_list, check_distinct, check_int, int_list

from .extraction import pair_activations
from .instruction_vector import InstructionVector
from .pairs import Pair, as_pairs


def _pair_diffs(source: InstructionVector | Tensor) -> Float[Tensor, "n_pairs n_layers d_model"]:
    if isinstance(source, InstructionVector):
        if source.pair_diffs is None:
            raise InvalidArgumentError(
                "this vector has no per-pair differences; compute it with keep_pair_diffs=True"
            )
        return source.pair_diffs
    if not isinstance(source, Tensor):
        raise ArgumentTypeError(
            "source must be an InstructionVector or a [n_pairs, n_layers, d_model] tensor, "
            f"got {type(source).__name__}"
        )
    if source.ndim != 3 or not source.is_floating_point():
        raise InvalidArgumentError(
            f"pair diffs must be a float [n_pairs, n_layers, d_model] tensor, got "
            f"{tuple(source.shape)} of {source.dtype}"
        )
    return source


def _layers(source: InstructionVector | Tensor, n_layers: int) -> list[int]:
    return list(source.layers) if isinstance(source, InstructionVector) else list(range(n_layers))


def stability_curve(
    source: InstructionVector | Tensor,
    *,
    sizes: Sequence[int] | None = None,
    n_draws: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Split-half stability of the direction as a function of the number of pairs.

    For each size k, draw two *disjoint* random subsets of k pairs `n_draws` times and
    take the cosine between their mean differences, per layer. The largest size
    possible (half the pairs) is the classic split-half stability.

    Args:
        source: a vector computed with ``keep_pair_diffs=True``, or per-pair
            differences ``[n_pairs, n_layers, d_model]``.
        sizes: subset sizes (default: 1, 2, 4, … up to half the pairs).

    Returns:
        DataFrame with columns ``layer``, ``n_pairs`` (k), ``cosine`` (mean over
        draws) and ``cosine_std``.

    Example:
        >>> curve = stability_curve(torch.randn(8, 3, 32), n_draws=4)
        >>> sorted(set(curve.n_pairs))  # split-half at 4, half of 8 pairs
        [1, 2, 4]
    """
    diffs = _pair_diffs(source)
    n, n_layers, _ = diffs.shape
    if n < 2:
        raise InvalidArgumentError(f"stability needs at least 2 pairs, got {n}")
    half = n // 2
    n_draws = check_int("n_draws", n_draws, low=2)
    seed = check_int("seed", seed, low=0)
    if sizes is None:
        sizes = sorted({min(2**i, half) for i in range(half.bit_length() + 1)})
    sizes = as_list("sizes", sizes, "[1, 2, 4]")
    if not sizes:
        raise InvalidArgumentError("sizes is empty; give at least one subset size, or None")
    sizes = check_distinct("sizes", [check_int("subset size", k) for k in sizes])
    bad = [k for k in sizes if not 1 <= k <= half]
    if bad:
        raise InvalidArgumentError(
            f"subset sizes {bad} must be between 1 and {half} (half of {n} pairs)"
        )
    gen = torch.Generator().manual_seed(seed)
    layers = _layers(source, n_layers)
    rows = []
    for k in sizes:
        cos = torch.empty(n_draws, n_layers)
        for d in range(n_draws):
            perm = torch.randperm(n, generator=gen)
            a = diffs[perm[:k]].mean(0)
            b = diffs[perm[k : 2 * k]].mean(0)
            cos[d] = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        for i, layer in enumerate(layers):
            rows.append(
                {
                    "layer": layer,
                    "n_pairs": k,
                    "cosine": float(cos[:, i].mean()),
                    "cosine_std": float(cos[:, i].std()),
                }
            )
    return pd.DataFrame(rows)


def pairs_to_settle(curve: pd.DataFrame, threshold: float = 0.9) -> pd.DataFrame:
    """Smallest subset size whose split-half cosine reaches `threshold`, per layer.

    Returns a DataFrame with ``layer`` and ``n_pairs`` (NA where it never settles
    within the pairs given; then more pairs are needed).
    """
    if not isinstance(curve, pd.DataFrame) or not {"layer", "n_pairs", "cosine"} <= set(curve):
        raise ArgumentTypeError(
            "curve must be a stability_curve table (columns layer, n_pairs, cosine), "
            f"got {type(curve).__name__}"
        )
    threshold = as_float("threshold", threshold)
    if not -1 <= threshold <= 1:
        raise InvalidArgumentError(f"threshold must be a cosine in [-1, 1], got {threshold!r}")
    rows = []
    for layer, group in curve.groupby("layer", sort=True):
        ok = group[group["cosine"] >= threshold]
        rows.append({"layer": layer, "n_pairs": int(ok["n_pairs"].min()) if len(ok) else pd.NA})
    return pd.DataFrame(rows).astype({"n_pairs": "Int64"})


def auc(
    pos: Float[Tensor, "n_pos n_layers"], neg: Float[Tensor, "n_neg n_layers"]
) -> Float[Tensor, " n_layers"]:
    """Area under the ROC curve per column: P(pos > neg), ties counting one half."""
    greater = (pos[:, None, :] > neg[None, :, :]).float()
    ties = (pos[:, None, :] == neg[None, :, :]).float()
    return (greater + 0.5 * ties).mean(dim=(0, 1))


def d_prime(
    pos: Float[Tensor, "n_pos n_layers"], neg: Float[Tensor, "n_neg n_layers"]
) -> Float[Tensor, " n_layers"]:
    """Sensitivity index: mean gap over the pooled standard deviation, per column."""
    pooled = ((pos.var(0) + neg.var(0)) / 2).sqrt()
    return (pos.mean(0) - neg.mean(0)) / pooled


def separability_from_activations(
    directions: Float[Tensor, "n_layers d_model"],
    acts_with: Float[Tensor, "n_pairs n_layers d_model"],
    acts_without: Float[Tensor, "n_pairs n_layers d_model"],
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """AUC and d' of with vs without activations projected on each layer's direction."""
    if not isinstance(directions, Tensor) or directions.ndim != 2:
        raise InvalidArgumentError("directions must be a [n_layers, d_model] tensor")
    for name, acts in (("acts_with", acts_with), ("acts_without", acts_without)):
        if not isinstance(acts, Tensor) or acts.ndim != 3 or acts.shape[1:] != directions.shape:
            shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
            raise InvalidArgumentError(
                f"{name} must be [n_pairs, {directions.shape[0]}, {directions.shape[1]}] "
                f"to match directions, got {shape}"
            )
    if layers is not None and len(layers) != directions.shape[0]:
        raise InvalidArgumentError(
            f"layers {list(layers)} do not match the {directions.shape[0]} direction rows"
        )
    proj_with = torch.einsum("nld,ld->nl", acts_with, directions)
    proj_without = torch.einsum("nld,ld->nl", acts_without, directions)
    layers = list(layers) if layers is not None else list(range(directions.shape[0]))
    return _table(proj_with, proj_without, layers)


def _table(
    proj_with: Float[Tensor, "n_with n_layers"],
    proj_without: Float[Tensor, "n_without n_layers"],
    layers: list[int],
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": layers,
            "auc": auc(proj_with, proj_without).tolist(),
            "d_prime": d_prime(proj_with, proj_without).tolist(),
            "mean_proj_with": proj_with.mean(0).tolist(),
            "mean_proj_without": proj_without.mean(0).tolist(),
        }
    )


@dataclass(frozen=True, eq=False)
class PairProjections:
    """What `project_pairs` returns: both sides of each pair on the vector's directions.

    Attributes:
        pairs: the pairs read, in order (row i of the tensors is ``pairs[i]``).
        layers: the layers read, in order (column j of the tensors is ``layers[j]``).
        proj_with: x·u_l of each pair's with-instruction residual, ``[n_pairs, n_layers]``.
        proj_without: the same for the without-instruction residual.
        separability: one row per layer, as `separability` returns it: ``layer``,
            ``auc``, ``d_prime``, ``mean_proj_with``, ``mean_proj_without``.
    """

    pairs: tuple[Pair, ...]
    layers: tuple[int, ...]
    proj_with: Float[Tensor, "n_pairs n_layers"]
    proj_without: Float[Tensor, "n_pairs n_layers"]
    separability: pd.DataFrame


def _vector_layers(vec: InstructionVector, layers: Sequence[int] | None) -> list[int]:
    """`layers` checked against the vector (None: all of them), order kept."""
    if layers is None:
        return list(vec.layers)
    if isinstance(layers, (str, bytes)):
        raise ArgumentTypeError(
            f"layers must be a list of the vector's layers {list(vec.layers)} or None, "
            f"got {layers!r}"
        )
    if isinstance(layers, Sequence) and not layers:
        raise InvalidArgumentError(
            f"layers is empty; pass None for all of the vector's layers {list(vec.layers)}"
        )
    layers = int_list("layers", layers, "layer")
    for layer in layers:
        vec.row(layer)  # VectorMismatchError naming the layers the vector holds
    return layers


def project_pairs(
    model: Any,
    vec: InstructionVector,
    pairs: Sequence[Pair | tuple[str, str]],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> PairProjections:
    """Read both sides of each pair the vector's way; project them on its directions.

    The pairs are read as the vector was built (its prompt style, read position and
    hook), so on the vector's own training pairs the mean projections are its
    ``mean_proj_with``/``mean_proj_without``; on held-out pairs the separability
    measures generalisation rather than fit.

    Args:
        pairs: at least 2 `Pair`s or ``(with, without)`` strings (d' needs a variance).
        layers: a subset of ``vec.layers``, in any order (default: all of them).

    Example:
        >>> read = project_pairs(model, vec, make_pairs("lowercase", split="validation", n=2), layers=[2, 0])
        >>> read.layers, tuple(read.proj_with.shape), list(read.separability.layer)
        ((2, 0), (2, 2), [2, 0])
    """
    if not isinstance(vec, InstructionVector):
        raise ArgumentTypeError(f"vec must be an InstructionVector, got {type(vec).__name__}")
    layers = _vector_layers(vec, layers)
    batch_size = check_int("batch_size", batch_size, low=1)
    pairs = as_pairs(pairs)
    if len(pairs) < 2:
        raise InvalidArgumentError(
            f"separability needs at least 2 held-out pairs (d' needs a variance), got {len(pairs)}"
        )
    vec.check_model(model)
    acts_with, acts_without = pair_activations(
        model,
        pairs,
        layers=layers,
        position=vec.position,
        prompt_style=vec.prompt_style,
        hook_name=vec.hook_name,
        batch_size=batch_size,
    )
    directions = vec.directions[[vec.row(layer) for layer in layers]]
    proj_with = torch.einsum("nld,ld->nl", acts_with, directions)
    proj_without = torch.einsum("nld,ld->nl", acts_without, directions)
    return PairProjections(
        pairs=tuple(pairs),
        layers=tuple(layers),
        proj_with=proj_with,
        proj_without=proj_without,
        separability=_table(proj_with, proj_without, layers),
    )


def separability(
    model: Any,
    vec: InstructionVector,
    held_out: Sequence[Pair | tuple[str, str]],
    *,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Per-layer separability of with vs without along the vector's directions.

    Use pairs the vector was *not* computed from (e.g. the validation split), so the
    figure measures generalisation rather than fit. The pairs are read the way the
    vector was built: same prompt style, read position and hook (`project_pairs`).

    Example:
        >>> table = separability(model, vec, make_pairs("lowercase", split="validation", n=4))
        >>> list(table.columns)
        ['layer', 'auc', 'd_prime', 'mean_proj_with', 'mean_proj_without']
    """
    return project_pairs(model, vec, held_out, batch_size=batch_size).separability
