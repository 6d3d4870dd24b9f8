"""Steered sampling: batched, left-padded, KV-cached generation on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from . import kv
from .models import model_info
from .prompts import format_prompt, tokenize_prompts
from .steering import SteeringTerm, as_terms, build_hooks, position_window

PLAIN_STOP = "\nQ:"
Steering = SteeringTerm | Sequence[SteeringTerm | Sequence[SteeringTerm] | None] | None


@dataclass(frozen=True)
class Generation:
    """Output of `generate` with ``return_tokens=True``.

    Attributes:
        texts: decoded completions (prompt excluded), cut at EOS or a stop string.
        tokens: the generated token ids of each prompt, EOS included if produced.
    """

    texts: list[str]
    tokens: list[list[int]]


def split_steering(
    steering: Steering, n_prompts: int
) -> tuple[list[SteeringTerm], list[list[SteeringTerm]] | None]:
    """Interpret `steering` as shared terms, or as one entry per prompt.

    A list counts as per-row when it holds a None or a nested list; it must then
    have one entry per prompt. Otherwise its terms apply to every prompt together.
    """
    if steering is None or isinstance(steering, SteeringTerm):
        return as_terms(steering), None
    items = list(steering)
    if any(item is None or isinstance(item, (list, tuple)) for item in items):
        if len(items) != n_prompts:
            raise ValueError(f"per-row steering has {len(items)} entries for {n_prompts} prompts")
        return [], [as_terms(item) for item in items]
    return as_terms(items), None


def eos_ids(model: Any) -> set[int]:
    """Token ids that end a completion: the tokenizer's EOS plus the model's own."""
    ids = {model.tokenizer.eos_token_id}
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    return {i for i in ids if i is not None}


def _sample(
    logits: Float[Tensor, "batch d_vocab"],
    do_sample: bool,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator] | None,
) -> Int[Tensor, " batch"]:
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    # One generator per prompt: a prompt's sample does not depend on its batch.
    return torch.stack(
        [
            torch.multinomial(p, 1, generator=g)[0]
            for p, g in zip(probs, generators or [], strict=True)
        ]
    )


def generate(
    model: Any,
    prompts: str | Sequence[str],
    *,
    steering: Steering = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 16,
    stop: str | Sequence[str] | None = None,
    formatted: bool = False,
    prompt_style: str | None = None,
    return_tokens: bool = False,
) -> list[str] | Generation:
    """Generate completions, optionally steered, batched with a KV cache.

    Args:
        prompts: user messages (formatted with `format_prompt` unless `formatted`).
        steering: a `SteeringTerm`, a list of terms (all applied to every prompt),
            or one entry per prompt (None, a term or a list of terms; the list must
            contain a None or a nested list to be read per-row).
        max_new_tokens: tokens to generate at most per prompt.
        do_sample, temperature, top_p, seed: greedy by default; sampling uses one
            generator per prompt seeded with ``seed + prompt index``.
        stop: string(s) that end a completion (the stop string is cut off). The
            default is ``"\nQ:"`` for plain ``Q: …\nA:`` prompts (a base model's next
            question) and nothing for chat prompts; pass ``[]`` for no stop string.

    Returns:
        The completions, or a `Generation` with token ids when `return_tokens`.

    Example:
        >>> generate(model, ["Name a colour."], steering=SteeringTerm(vec, layer=14))  # doctest: +SKIP
        ['blue.']
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    style = prompt_style or model_info(model).prompt_style
    if stop is None:
        stop = PLAIN_STOP if style == "plain" and not formatted else []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
    shared, per_row = split_steering(steering, len(prompts))
    texts = prompts if formatted else [format_prompt(model, p, style=prompt_style) for p in prompts]
    # Validate everything before any forward pass: steering terms and lengths.
    build_hooks(model, per_row, shared)
    n_ctx = model.cfg.n_ctx
    for i, text in enumerate(texts):
        n = len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
        if n + max_new_tokens > n_ctx:
            raise ValueError(
                f"prompt {i} has {n} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {n_ctx} tokens"
            )
    base_seed = 0 if seed is None else seed
    out_tokens: list[list[int]] = []
    out_texts: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = slice(start, start + batch_size)
        rows = None if per_row is None else per_row[chunk]
        gens = None
        if do_sample:
            gens = []
            for i in range(start, min(start + batch_size, len(texts))):
                g = torch.Generator(device=model.cfg.device)
                g.manual_seed(base_seed + i)
                gens.append(g)
        toks = _generate_batch(
            model,
            texts[chunk],
            shared,
            rows,
            max_new_tokens,
            do_sample,
            temperature,
            top_p,
            gens,
            stops,
        )
        for row in toks:
            out_tokens.append(row)
            out_texts.append(_decode(model, row, stops))
    if return_tokens:
        return Generation(out_texts, out_tokens)
    return out_texts


def _decode(model: Any, tokens: list[int], stops: list[str]) -> str:
    text = model.tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


@torch.inference_mode()
def _generate_batch(
    model: Any,
    texts: list[str],
    shared: list[SteeringTerm],
    per_row: list[list[SteeringTerm]] | None,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generators: list[torch.Generator] | None,
    stops: list[str],
) -> list[list[int]]:
    input_ids, mask = tokenize_prompts(model, texts)
    batch, width = input_ids.shape
    stop_ids = torch.tensor(sorted(eos_ids(model)), device=input_ids.device)
    pad = model.tokenizer.pad_token_id
    cache = kv.new_cache(model, batch)
    generated = torch.empty(batch, 0, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    lengths = [max_new_tokens] * batch
    tail_len = max((len(s) for s in stops), default=0) + 1
    hooks = build_hooks(model, per_row, shared)
    with model.hooks(fwd_hooks=hooks):
        with position_window(0, width):
            logits = kv.next_token_logits(model, input_ids, mask, cache)
        for step in range(max_new_tokens):
            nxt = _sample(logits, do_sample, temperature, top_p, generators)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            finished_now = ~done & torch.isin(nxt, stop_ids)
            for i in torch.nonzero(finished_now).flatten().tolist():
                lengths[i] = step + 1
            done |= finished_now
            if stops:
                # A stop string that ends in the newest token lies within the last
                # (longest stop + 1) tokens, since every token decodes to >= 1 char.
                for i in torch.nonzero(~done).flatten().tolist():
                    tail = model.tokenizer.decode(generated[i, -tail_len:].tolist())
                    if any(s in tail for s in stops):
                        lengths[i] = step + 1
                        done[i] = True
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            with position_window(width + step, width):
                logits = kv.next_token_logits(model, nxt[:, None], mask, cache)
    return [generated[i, : lengths[i]].tolist() for i in range(batch)]
