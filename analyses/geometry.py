"""Vector geometry: how instruction vectors relate to each other, across layers, and in size.

Three questions, each answered by a data function whose result a drawing function in
`analyses.geometry_figures` plots without recomputing anything:

- Which instructions point the same way? `cosine_table`: cosines between the unit
  directions of several vectors at one layer, rows and columns in clustered order
  (`cluster_order`) so related instructions sit next to each other.
- Does one instruction's direction drift with depth? `layer_cosine_table`: cosines
  between the rows of one vector's directions.
- Is the vector large or small for its layer? `residual_norms` measures the typical
  ``blocks.{l}.hook_resid_post`` norm on real prompts and `relative_norm_table` divides
  the vector's norm by it, since raw norms grow with depth and are not comparable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError, VectorMismatchError
from workbench.model.hooks import refuse_under_per_row_steer
from workbench.model.prompts import check_context, check_prompts, encode_prompts, format_prompt
from workbench.options import RESID_HOOK, check_bool, check_int
from workbench.vectors.activations import check_layers, read_layers
from workbench.vectors.instruction_vector import InstructionVector

from .style import labelled

__all__ = [
    "cluster_order",
    "cosine_table",
    "layer_cosine_table",
    "relative_norm_table",
    "residual_norms",
]


def _check_vector(vec: Any, what: str = "vec") -> InstructionVector:
    if not isinstance(vec, InstructionVector):
        raise ArgumentTypeError(f"{what} must be an InstructionVector, got {type(vec).__name__}")
    return vec


def _cosines(directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n n"]:
    unit = torch.nn.functional.normalize(directions.double(), dim=-1)
    # Rounding can push |cos| a hair past 1; the figures' colour scale is exactly -1..1.
    return (unit @ unit.T).clamp(-1.0, 1.0)


def cluster_order(distance: Float[Tensor, "n n"]) -> list[int]:
    """Leaf order of an average-linkage agglomerative clustering of a distance matrix.

    Repeatedly merges the two clusters with the smallest mean pairwise distance
    (ties: the pair met first, scanning clusters in their current order), so the
    result is deterministic. Each merge joins the two clusters' leaf orders in the
    orientation (either may be reversed) that puts the closest pair of end leaves
    side by side; this keeps near neighbours adjacent across merges, not only
    inside them. O(n^3) in the number of items, meant for tens of vectors.

    Args:
        distance: symmetric ``[n, n]`` distances, e.g. ``1 - cosine``.

    Returns:
        A permutation of ``range(n)``.

    Example:
        >>> d = torch.tensor([[0.0, 9.0, 1.0], [9.0, 0.0, 8.0], [1.0, 8.0, 0.0]])
        >>> cluster_order(d)  # 0 and 2 are close, 1 is far from both
        [0, 2, 1]
    """
    if not isinstance(distance, Tensor) or distance.ndim != 2:
        raise ArgumentTypeError("distance must be a square [n, n] tensor")
    n = int(distance.shape[0])
    if n != distance.shape[1] or n == 0:
        raise InvalidArgumentError(
            f"distance must be a non-empty square matrix, got shape {tuple(distance.shape)}"
        )
    d = distance.detach().double().cpu().numpy()
    if not np.isfinite(d).all():
        raise InvalidArgumentError("distance contains NaN or inf; linkage needs finite distances")
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, a, b = math.inf, 0, 1
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                link = float(d[np.ix_(clusters[i], clusters[j])].mean())
                # The margin makes float noise between equal links resolve to the first pair.
                if link < best - 1e-12:
                    best, a, b = link, i, j
        clusters[a] = _join(clusters[a], clusters[b], d)
        del clusters[b]
    return clusters[0]


def _join(left: list[int], right: list[int], d: np.ndarray) -> list[int]:
    options = [
        left + right,
        left + right[::-1],
        left[::-1] + right,
        left[::-1] + right[::-1],
    ]
    seams = [d[o[len(left) - 1], o[len(left)]] for o in options]
    # min() keeps the first of equal seams, so plain left + right wins ties.
    return options[min(range(4), key=lambda i: (seams[i], i))]


def _shared_layers(vectors: Mapping[str, InstructionVector]) -> list[int]:
    sets = [set(v.layers) for v in vectors.values()]
    return sorted(set.intersection(*sets))


def cosine_table(
    vectors: Mapping[str, InstructionVector] | Sequence[InstructionVector],
    layer: int,
    *,
    cluster: bool = True,
    centred: bool = False,
) -> pd.DataFrame:
    """Cosine similarity between the directions of several vectors at one layer.

    Args:
        vectors: ``{label: vector}``, or a sequence of vectors (labelled by
            `analyses.style.labelled`: the bundled instruction's name).
        layer: a layer every vector holds.
        cluster: order rows and columns by `cluster_order` on ``1 - cosine`` so
            related instructions sit together; False keeps the order given.
        centred: subtract the mean of the unit directions before taking cosines.
            Instruction vectors share an "an instruction is present" component
            (every cosine positive); centring removes it, leaving how the
            instructions differ from one another. Needs at least 3 vectors (two
            centred directions are always opposite).

    Returns:
        Square ``[n, n]`` DataFrame of cosines in ``[-1, 1]``; index and columns are
        the labels in the same order, the diagonal is 1. ``attrs["layer"]`` holds
        `layer` and ``attrs["centred"]`` `centred` (for the figure's title).

    Example:
        >>> table = cosine_table({"a": vec, "b": vec}, layer=1)
        >>> table.round(6).values.tolist()
        [[1.0, 1.0], [1.0, 1.0]]
        >>> table.attrs["layer"]
        1
    """
    if isinstance(vectors, (str, bytes)) or not isinstance(vectors, (Mapping, Sequence)):
        raise ArgumentTypeError(
            "vectors must be a {label: InstructionVector} mapping or a list of vectors, "
            f"got {type(vectors).__name__}"
        )
    items = vectors.items() if isinstance(vectors, Mapping) else enumerate(vectors)
    for key, value in items:
        _check_vector(value, f"vectors[{key!r}]")
    if not vectors:
        raise InvalidArgumentError("vectors is empty; pass at least one InstructionVector")
    named = labelled(vectors)
    layer = check_int("layer", layer)
    first_label, first = next(iter(named.items()))
    for label, vec in named.items():
        if vec.d_model != first.d_model:
            raise VectorMismatchError(
                f"vectors {first_label!r} (d_model={first.d_model}) and {label!r} "
                f"(d_model={vec.d_model}) come from models of different widths; their "
                "cosines are undefined"
            )
    shared = _shared_layers(named)
    if layer not in shared:
        lacking = [label for label, vec in named.items() if layer not in vec.layers]
        raise InvalidArgumentError(
            f"layer {layer} is not held by {lacking}; the layers every vector holds are "
            f"{shared if shared else 'none (the vectors share no layer)'}"
        )
    labels = list(named)
    directions = torch.stack([named[label].direction(layer) for label in labels])
    check_bool("centred", centred)
    check_bool("cluster", cluster)
    if centred:
        if len(labels) < 3:
            raise InvalidArgumentError(
                f"centred=True needs at least 3 vectors, got {len(labels)} ({labels}): "
                "two directions minus their mean are always opposite"
            )
        directions = directions - directions.mean(dim=0, keepdim=True)
        flat = [label for label, d in zip(labels, directions, strict=True) if d.norm() < 1e-6]
        if flat:
            raise InvalidArgumentError(
                f"vectors {flat} equal the mean direction at layer {layer}; after "
                "centring they have no direction left (pass centred=False)"
            )
    cos = _cosines(directions)
    order = cluster_order(1.0 - cos) if cluster else list(range(len(labels)))
    ordered = [labels[i] for i in order]
    values = cos[order][:, order].numpy()
    table = pd.DataFrame(values, index=pd.Index(ordered), columns=pd.Index(ordered))
    table.attrs["layer"] = layer
    table.attrs["centred"] = centred
    return table


def layer_cosine_table(vec: InstructionVector) -> pd.DataFrame:
    """Cosine between one vector's directions at every pair of its layers.

    Returns:
        Square ``[n_layers, n_layers]`` DataFrame of cosines in ``[-1, 1]``; index and
        columns are ``vec.layers`` in the vector's order, the diagonal is 1.

    Example:
        >>> table = layer_cosine_table(vec)
        >>> table.shape, list(table.columns)
        ((3, 3), [0, 1, 2])
    """
    vec = _check_vector(vec)
    layers = pd.Index(list(vec.layers), name="layer")
    return pd.DataFrame(_cosines(vec.directions).numpy(), index=layers, columns=layers)


def residual_norms(
    model: Any,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    prompt_style: str | None = None,
) -> pd.DataFrame:
    """Typical norm of the residual stream (``blocks.{l}.hook_resid_post``) per layer.

    Each prompt is a user message, formatted with `format_prompt` in `prompt_style`
    (default: the model's; pass ``vec.prompt_style`` to match a vector), run in
    left-padded batches, and the norm of the residual at every non-pad token position
    is pooled over all prompts. Every position counts, including the first; because a
    few "attention sink" positions (BOS, the first chat-template tokens) can be many
    times larger than the rest and drag the mean up, the median is the typical norm
    that `relative_norm_table` divides by (on SmolLM2-135M the mean jumps at layer 11).

    Args:
        prompts: user messages, e.g. the queries of `make_pairs`' pairs.
        layers: layer indices (default: all), in the order of the rows.

    Returns:
        DataFrame with one row per layer: ``layer``, ``median_norm``, ``mean_norm``,
        ``std_norm`` (population standard deviation over the positions) and ``n_tokens``.

    Example:
        >>> norms = residual_norms(model, ["Name a colour.", "Hi"], layers=[0, 2])
        >>> norms.columns.tolist(), norms.layer.tolist()
        (['layer', 'median_norm', 'mean_norm', 'std_norm', 'n_tokens'], [0, 2])
    """
    refuse_under_per_row_steer("residual_norms")
    layers = check_layers(model, layers)
    batch_size = check_int("batch_size", batch_size, low=1)
    texts = [format_prompt(model, p, style=prompt_style) for p in check_prompts(prompts)]
    token_lists = encode_prompts(model, texts, style=prompt_style)
    check_context(model, token_lists)
    chunks: list[list[Tensor]] = [[] for _ in layers]

    def keep(col: int, x: Tensor, mask: Tensor, rows: slice) -> None:
        chunks[col].append(x.detach().double().norm(dim=-1)[mask.bool()].cpu())

    read_layers(model, token_lists, keep, layers=layers, batch_size=batch_size)
    rows = []
    for layer, parts in zip(layers, chunks, strict=True):
        norms = torch.cat(parts)
        rows.append(
            {
                "layer": layer,
                "median_norm": float(norms.quantile(0.5)),
                "mean_norm": float(norms.mean()),
                "std_norm": float(norms.std(correction=0)),
                "n_tokens": int(norms.numel()),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["hook_name"] = RESID_HOOK
    return table


def relative_norm_table(vec: InstructionVector, norms: pd.DataFrame) -> pd.DataFrame:
    """The vector's norm at each of its layers over the typical residual norm there.

    Args:
        vec: the instruction vector.
        norms: `residual_norms` of the vector's model, covering every layer of `vec`.

    Returns:
        DataFrame with one row per layer of `vec` (in its order): ``layer``, ``norm``
        (‖diff_l‖), ``residual_norm`` (``median_norm`` from `norms`) and ``relative``
        (norm / residual_norm).

    Example:
        >>> norms = residual_norms(model, ["Name a colour.", "Hi"])
        >>> table = relative_norm_table(vec, norms)
        >>> table.columns.tolist()
        ['layer', 'norm', 'residual_norm', 'relative']
        >>> bool((table.relative == table.norm / table.residual_norm).all())
        True
    """
    vec = _check_vector(vec)
    if not isinstance(norms, pd.DataFrame):
        raise ArgumentTypeError(
            f"norms must be the DataFrame of residual_norms(), got {type(norms).__name__}"
        )
    if vec.hook_name != norms.attrs.get("hook_name", RESID_HOOK):
        raise VectorMismatchError(
            f"the vector was read at {vec.hook_name!r} and the norms at "
            f"{norms.attrs.get('hook_name', RESID_HOOK)!r}; a relative norm compares "
            "one hook with itself (residual_norms reads "
            f"{RESID_HOOK!r}; use a vector read there)"
        )
    missing_cols = {"layer", "median_norm"} - set(norms.columns)
    if missing_cols:
        raise InvalidArgumentError(
            f"norms lacks columns {sorted(missing_cols)} (it has {list(norms.columns)}); "
            "build it with residual_norms()"
        )
    have = [int(x) for x in norms["layer"]]
    duplicated = sorted({x for x in have if have.count(x) > 1})
    if duplicated:
        raise InvalidArgumentError(f"norms holds layers {duplicated} more than once")
    missing = [layer for layer in vec.layers if layer not in have]
    if missing:
        raise InvalidArgumentError(
            f"norms lacks layers {missing} of the vector (it holds {list(vec.layers)}; norms "
            f"cover {sorted(have)}); compute residual_norms(model, prompts, layers=...) with them"
        )
    by_layer = dict(zip(have, norms["median_norm"].astype(float), strict=True))
    residual = [by_layer[layer] for layer in vec.layers]
    bad = {
        layer: r
        for layer, r in zip(vec.layers, residual, strict=True)
        if not (r > 0 and math.isfinite(r))
    }
    if bad:
        raise InvalidArgumentError(
            f"residual norms must be positive and finite; got {bad} (layer: median_norm)"
        )
    table = pd.DataFrame(
        {
            "layer": list(vec.layers),
            "norm": vec.norms().double().tolist(),
            "residual_norm": residual,
        }
    )
    table["relative"] = table["norm"] / table["residual_norm"]
    return table
