"""The reference method's generation loop, kept deliberately slow as an oracle.

Batch size 1, no KV cache: every new token re-runs the whole sequence with the
steering hooks on every position, as the reference implementation does. Tests check
that `generate` gives the same tokens; the benchmarks measure how much faster it is.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.model.info import check_model
from workbench.model.prompts import check_context, encode_prompts, format_prompt
from workbench.options import check_bool, check_int

from .decoding import eos_ids
from .plan import position_window, steer
from .terms import Steering


@torch.inference_mode()
def reference_generate(
    model: Any, prompt: str, steering: Steering, max_new_tokens: int, *, stop_at_eos: bool = True
) -> list[int]:
    """Greedy tokens for one user prompt; `steering` is a term, a list of terms, or None.

    With `stop_at_eos=False` it always returns `max_new_tokens` tokens, as TransformerLens'
    `generate(..., stop_at_eos=False)` does.

    Example:
        >>> tokens = reference_generate(model, "Name a colour.", SteeringTerm(vec, layer=1), 3)
        >>> len(tokens) <= 3
        True
    """
    check_model(model)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    check_bool("stop_at_eos", stop_at_eos)
    text = format_prompt(model, prompt)
    token_lists = encode_prompts(model, [text])
    check_context(model, token_lists, lambda _: "the prompt", new_tokens=max_new_tokens)
    ids = torch.tensor(token_lists, device=model.cfg.device)
    width = ids.shape[1]
    stop = eos_ids(model)
    out: list[int] = []
    with steer(model, steering), position_window(0, width):
        for _ in range(max_new_tokens):
            logits = model(ids)
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            if stop_at_eos and nxt in stop:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
    return out
