"""Reading the residual stream at chosen positions, batched and memory-bounded.

Instead of caching whole ``[batch, pos, d_model]`` activations for every hook, a
forward hook on each requested layer keeps only the reduced read position(s) and
moves them to the CPU; the forward pass stops after the last requested layer.
Memory therefore grows with prompts x layers x d_model, not with sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .prompts import tokenize_prompts

RESID_HOOK = "blocks.{layer}.hook_resid_post"


def check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    """Validate layer indices against the model (None means every layer)."""
    n_layers = model.cfg.n_layers
    if layers is None:
        return list(range(n_layers))
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty; pass None for every layer")
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
            raise ValueError(
                f"layer {layer!r} is out of range: the model has {n_layers} layers (0..{n_layers - 1})"
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} contain duplicates")
    return layers


def check_position(position: str | int) -> str | int:
    """`"last"`, `"mean"` (all real prompt tokens), or an int k (mean of the last k tokens)."""
    if position in ("last", "mean"):
        return position
    if isinstance(position, int) and not isinstance(position, bool) and position >= 1:
        return position
    raise ValueError(
        f"position {position!r} is not 'last', 'mean' or a positive int k (mean of last k tokens)"
    )


def reduce_positions(
    x: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
    position: str | int,
) -> Float[Tensor, "batch d_model"]:
    """Reduce left-padded activations to one vector per row at the read position."""
    if position == "last":
        return x[:, -1]
    if position == "mean":
        m = attention_mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1)
    return x[:, -position:].mean(1)


def read_residuals(
    model: Any,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    hook_name: str = RESID_HOOK,
    progress: bool = False,
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """Residual stream of formatted prompts at one read position, for several layers.

    Args:
        prompts: already formatted prompts (see `format_prompt`).
        layers: layer indices (default: all), in the order of the output's second axis.
        position: ``"last"`` (the token right before the answer), ``"mean"``, or an
            int k for the mean over the last k tokens.
        hook_name: hook template with ``{layer}``; ``blocks.{layer}.hook_resid_post``.

    Returns:
        float32 CPU tensor ``[n_prompts, len(layers), d_model]``.

    Example:
        >>> acts = read_residuals(model, [format_prompt(model, "Hi")], layers=[3, 5])  # doctest: +SKIP
        >>> acts.shape  # doctest: +SKIP
        torch.Size([1, 2, 576])
    """
    layers = check_layers(model, layers)
    position = check_position(position)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    names = [hook_name.format(layer=layer) for layer in layers]
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook name(s) {unknown} for this model")
    out = torch.empty(len(prompts), len(layers), model.cfg.d_model, dtype=torch.float32)
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc="reading activations", disable=not progress, leave=False):
        chunk = prompts[start : start + batch_size]
        input_ids, mask = tokenize_prompts(model, chunk)
        if isinstance(position, int) and int(mask.sum(1).min()) < position:
            raise ValueError(
                f"position={position} reads the last {position} tokens but a prompt in "
                f"this batch has only {int(mask.sum(1).min())}"
            )
        rows = slice(start, start + len(chunk))

        def store(
            x: Tensor, hook: Any, col: int, _rows: slice = rows, _mask: Tensor = mask
        ) -> None:
            # Bridge hooks report their canonical name (blocks.l.hook_out), not the
            # alias we registered, so the column is bound per hook instead.
            out[_rows, col] = reduce_positions(x, _mask, position).float().cpu()

        hooks = [(n, partial(store, col=i)) for i, n in enumerate(names)]
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
            model(input_ids, attention_mask=mask, stop_at_layer=max(layers) + 1)
    return out
