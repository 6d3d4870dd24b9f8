"""KV caches for both backends behind one small interface.

`TransformerBridge` runs Hugging Face modules, so it takes a transformers
`DynamicCache`; `HookedTransformer` has its own `TransformerLensKeyValueCache`.
Both take the *full* attention mask (cached positions + new ones) through `forward`.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .info import model_info


def is_hooked(model: Any) -> bool:
    """Whether `model` runs on the HookedTransformer backend (not the bridge)."""
    return model_info(model).backend == "hooked"


def new_cache(model: Any, batch: int) -> Any:
    """An empty KV cache for `batch` rows."""
    if is_hooked(model):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)
    from transformers import DynamicCache

    return DynamicCache()


def forward(
    model: Any,
    new_ids: Int[Tensor, "batch new"],
    full_mask: Int[Tensor, "batch total"],
    cache: Any,
    *,
    last_only: bool = False,
) -> Any:
    """Run `new_ids` after the cached positions; returns logits ``[batch, new, d_vocab]``.

    Position ids come from the mask on both backends, so left padding and gaps
    between a shared prefix and padded suffixes do not shift positions. With
    `last_only`, the bridge unembeds only the last position (``[batch, 1, d_vocab]``).
    """
    if is_hooked(model):
        # HookedTransformer keeps the mask of cached positions inside its cache.
        return model(new_ids, attention_mask=full_mask[:, -new_ids.shape[1] :], past_kv_cache=cache)
    # Passing positions skips the bridge's per-call signature inspection; they equal
    # its own derivation from the mask on every real (unmasked) token.
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1] :]
    extra = {"logits_to_keep": 1} if last_only else {}
    return model(
        new_ids,
        attention_mask=full_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        **extra,
    )


def next_token_logits(
    model: Any,
    new_ids: Int[Tensor, "batch new"],
    full_mask: Int[Tensor, "batch total"],
    cache: Any,
) -> Float[Tensor, "batch d_vocab"]:
    """The last position's logits in float32 (the bridge unembeds only that position)."""
    return forward(model, new_ids, full_mask, cache, last_only=True)[:, -1].float()


def expand_cache(model: Any, cache: Any, batch: int, n_layers: int) -> Any:
    """A cache holding `cache`'s single row repeated `batch` times.

    Only the first `n_layers` layers are copied (a prefix pass may stop early).
    The result can be extended by a forward pass without touching `cache`.
    """
    if is_hooked(model):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        out = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)
        for src, dst in zip(cache.entries[:n_layers], out.entries, strict=False):
            dst.past_keys = src.past_keys.expand(batch, -1, -1, -1)
            dst.past_values = src.past_values.expand(batch, -1, -1, -1)
        out.previous_attention_mask = cache.previous_attention_mask.expand(batch, -1)
        # Frozen: suffix passes attend to the prefix without appending to it, so one
        # expanded view serves every batch and nothing is copied.
        out.freeze()
        return out
    from transformers import DynamicCache

    out = DynamicCache()
    for layer in range(n_layers):
        keys, values = cache.layers[layer].keys, cache.layers[layer].values
        out.update(
            keys.expand(batch, -1, -1, -1).contiguous(),
            values.expand(batch, -1, -1, -1).contiguous(),
            layer,
        )
    return out


# Refill (`generate(refill=True)`) takes rows out of a running cache and puts newly
# prefilled ones in. transformers' caches can drop rows (`batch_select_indices`) but not
# take new ones, and TransformerLens' cannot do either, so both are edited here: a
# cache is a list of per-layer key and value tensors, left-padded like the mask.


def _tensors(model: Any, cache: Any) -> list[tuple[Any, str, int]]:
    """(holder, attribute, sequence dim) of every tensor of `cache` that has one per row."""
    if is_hooked(model):
        slots = [(e, name, 1) for e in cache.entries for name in ("past_keys", "past_values")]
        return [*slots, (cache, "previous_attention_mask", 1)]
    return [(layer, name, 2) for layer in cache.layers for name in ("keys", "values")]


def can_refill(model: Any, cache: Any) -> bool:
    """Whether rows can be moved in and out of `cache`: TransformerLens' cache, or a
    transformers `DynamicCache` of full-attention layers only (a sliding-window layer
    drops old positions itself, which the left-padded layout cannot follow)."""
    if is_hooked(model):
        return True
    from transformers.cache_utils import DynamicLayer

    return bool(cache.layers) and all(
        type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers
    )


def keep_rows(model: Any, cache: Any, index: Int[Tensor, " rows"]) -> None:
    """Keep only the rows `index` of `cache` (in that order), in place."""
    for holder, name, _ in _tensors(model, cache):
        setattr(holder, name, getattr(holder, name)[index])


def drop_columns(model: Any, cache: Any, n: int) -> None:
    """Drop the first `n` (padding) positions of every row of `cache`, in place."""
    if n <= 0:
        return
    for holder, name, dim in _tensors(model, cache):
        setattr(
            holder, name, getattr(holder, name).narrow(dim, n, getattr(holder, name).shape[dim] - n)
        )


def append_rows(model: Any, cache: Any, new: Any) -> None:
    """Put the rows of `new` after those of `cache`, in place, left-padding whichever is
    narrower with zeros (masked positions, so their values are never read)."""
    ours, theirs = _tensors(model, cache), _tensors(model, new)
    width = max(getattr(h, n).shape[d] for h, n, d in ours[:1] + theirs[:1])
    for (holder, name, dim), (other, other_name, _) in zip(ours, theirs, strict=True):
        a, b = (
            _pad_to(getattr(holder, name), dim, width),
            _pad_to(getattr(other, other_name), dim, width),
        )
        setattr(holder, name, torch.cat([a, b]))


def _pad_to(tensor: Tensor, dim: int, width: int) -> Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
