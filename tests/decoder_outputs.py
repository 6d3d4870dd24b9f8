"""One forward pass through a bridge and through its fast decoder's plain model."""

from __future__ import annotations

from typing import Any

import torch

from workbench.model.prompts import format_prompt, tokenize_prompts


def both_forwards(model: Any, decoder: Any, prompts: list[str]) -> dict[str, Any]:
    """The bridge's ``hook_resid_post`` cache and logits beside each decoder layer's
    output and the plain model's logits, on the same left-padded batch.

    Returns ``real`` (the mask of real tokens), ``cache``, ``logits``, ``layer_out``
    (hook name -> that decoder layer's output) and ``plain_logits``.
    """
    ids, mask = tokenize_prompts(model, [format_prompt(model, p) for p in prompts])
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    seen: dict[str, torch.Tensor] = {}
    handles = [
        decoder.layers[n].register_forward_hook(lambda m, a, out, n=n: seen.update({n: out}))
        for n in names
    ]
    try:
        with torch.inference_mode():
            logits, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=names)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            plain = decoder.hf(ids, attention_mask=mask, position_ids=positions).logits
    finally:
        for h in handles:
            h.remove()
    return {
        "real": mask.bool(),
        "cache": {n: cache[n] for n in names},
        "logits": logits,
        "layer_out": seen,
        "plain_logits": plain,
    }
