"""KV caches for both backends behind one small interface.

`TransformerBridge` runs Hugging Face modules, so it takes a transformers
`DynamicCache`; `HookedTransformer` has its own `TransformerLensKeyValueCache`.
Both take the *full* attention mask (cached positions + new ones) through `forward`.
"""

from __future__ import annotations

from typing import Any

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
