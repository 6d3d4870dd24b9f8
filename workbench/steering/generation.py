"""Steered sampling: batched, left-padded, KV-cached generation on both backends."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError, NumericalError
from workbench.model import fast_decode, kv
from workbench.model.hooks import model_lock, refuse_under_per_row_steer
from workbench.model.info import check_model, model_info
from workbench.model.prompts import (
    check_context,
    check_prompts,
    encode_prompts,
    format_prompt,
    pad_left,
)
from workbench.options import PromptStyle, as_float, check_bool, check_choice, check_int

from .plan import SteeringPlan, position_window
from .terms import Steering

PLAIN_STOP = "\nQ:"


@dataclass(frozen=True)
class Sampling:
    """Sampling options for `generate` (no `Sampling` means greedy decoding).

    Attributes:
        temperature: softmax temperature, > 0 (however small: the logits' maximum is
            subtracted before dividing, so a tiny temperature samples the argmax).
        top_p: nucleus mass in (0, 1]; 1 keeps every token.
        seed: seeds one generator per prompt (``seed + prompt index``), so a
            prompt's sample does not depend on its batch. None draws a fresh seed,
            reported in `Generation.seed` so the run can be repeated.

    Numbers may be numpy or 0-d tensor scalars; they are stored as Python numbers.

    Example:
        >>> Sampling(temperature=0.7, seed=3).top_p
        1.0
    """

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, ok, rule in [
            ("temperature", lambda t: t > 0, "> 0"),
            ("top_p", lambda p: 0 < p <= 1, "in (0, 1]"),
        ]:
            value = getattr(self, name)
            try:
                number = as_float(name, value)
            except InvalidArgumentError:
                number = None  # not finite
            if number is None or not ok(number):
                raise InvalidArgumentError(f"{name} must be {rule}, got {value!r}")
            object.__setattr__(self, name, number)
        if self.seed is not None:
            # torch generators take 64-bit seeds; prompt i uses seed + i.
            object.__setattr__(self, "seed", check_int("seed", self.seed, low=0, high=2**62))


@dataclass(frozen=True)
class Generation:
    """Output of `generate` with ``return_tokens=True``.

    Attributes:
        texts: decoded completions (prompt excluded), cut at EOS or a stop string.
        tokens: the generated token ids of each prompt, EOS included if produced.
        seed: the base seed used when sampling (None for greedy decoding).
    """

    texts: list[str]
    tokens: list[list[int]]
    seed: int | None = None


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
    sampling: Sampling | None,
    generators: list[torch.Generator],
) -> Int[Tensor, " batch"]:
    if sampling is None:
        return logits.argmax(-1)
    # Relative to each row's maximum, in float32: the best token is exactly 0 for any
    # temperature, so even a tiny one gives finite probabilities (logits / 1e-45 would be
    # inf, and softmax NaN). A row that is not finite is replaced by zeros here only to
    # keep multinomial from raising; `_generate_batch` refuses it at this step's check.
    logits = logits.float()
    logits = torch.where(torch.isfinite(logits).all(-1, keepdim=True), logits, 0.0)
    shifted = logits - logits.max(-1, keepdim=True).values
    scaled = torch.where(shifted == 0, 0.0, shifted / sampling.temperature)
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
        # A top_p below float32's smallest number compares as 0: the top token stays.
        drop[..., 0] = False
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.stack(
        [torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators, strict=True)]
    )


def _generator(model: Any, seed: int) -> torch.Generator:
    return torch.Generator(device=model.cfg.device).manual_seed(seed)


def _stops(stop: Any, style: str, formatted: bool) -> list[str]:
    if stop is None:
        return [PLAIN_STOP] if style == "plain" and not formatted else []
    if not isinstance(stop, (str, list, tuple)):
        raise ArgumentTypeError(f"stop must be a string or a list of strings, got {stop!r}")
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stops):
        raise InvalidArgumentError(f"stop strings must be non-empty strings, got {stop!r}")
    return stops


def generate(
    model: Any,
    prompts: str | Sequence[str],
    *,
    steering: Steering = None,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    batch_size: int = 16,
    stop: str | Sequence[str] | None = None,
    formatted: bool = False,
    prompt_style: PromptStyle | None = None,
    return_tokens: bool = False,
) -> list[str] | Generation:
    """Generate completions, optionally steered, batched with a KV cache.

    Args:
        prompts: user messages (formatted with `format_prompt` unless `formatted`).
        steering: a `SteeringTerm` or a list of them, applied to every prompt; or
            `PerRow([...])` with one entry (None, a term, or a list) per prompt.
        max_new_tokens: tokens to generate at most per prompt.
        sampling: a `Sampling`; None (default) decodes greedily.
        stop: string(s) that end a completion (the stop string is cut off). The
            default is ``"\nQ:"`` for plain ``Q: …\nA:`` prompts (a base model's next
            question) and nothing for chat prompts; pass ``[]`` for no stop string.
        prompt_style: ``"chat"`` or ``"plain"``; defaults to the model's.

    Returns:
        The completions, or a `Generation` with token ids when `return_tokens`.

    Example:
        >>> rows = PerRow([SteeringTerm(vec, layer=1, mode="add", weight=4.0), None])
        >>> out = generate(model, ["Name a colour.", "Hi"], steering=rows, max_new_tokens=4)
        >>> len(out)
        2
    """
    refuse_under_per_row_steer("generate")
    check_model(model)
    prompts = check_prompts([prompts] if isinstance(prompts, str) else prompts)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("formatted", formatted)
    check_bool("return_tokens", return_tokens)
    if sampling is not None and not isinstance(sampling, Sampling):
        raise ArgumentTypeError(f"sampling must be a Sampling or None, got {sampling!r}")
    style = check_choice(
        "prompt_style",
        model_info(model).prompt_style if prompt_style is None else prompt_style,
        PromptStyle,
    )
    stops = _stops(stop, style, formatted)
    texts = prompts if formatted else [format_prompt(model, p, style=style) for p in prompts]
    token_lists = encode_prompts(model, texts, style=style)
    check_context(model, token_lists, new_tokens=max_new_tokens)
    seed = None
    if sampling is not None:
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(48)
    out_tokens: list[list[int]] = []
    # Another thread's steer() block or generate would put its hooks on this model's
    # forward passes: hold the model until done (reentrant, so nesting in one thread
    # works). The plan is checked inside, against the steer() blocks open around it.
    with model_lock(model):
        plan = SteeringPlan(model, steering)
        if plan.n_rows is not None and plan.n_rows != len(prompts):
            raise InvalidArgumentError(
                f"PerRow steering has {plan.n_rows} entries for {len(prompts)} prompts"
            )
        for start in range(0, len(texts), batch_size):
            rows = slice(start, start + batch_size)
            indices = range(start, min(start + batch_size, len(texts)))
            gens = [] if seed is None else [_generator(model, seed + i) for i in indices]
            hooks = plan.hooks(rows)
            out_tokens += _generate_batch(
                model, token_lists[rows], hooks, max_new_tokens, sampling, gens, stops, start
            )
    out_texts = [_decode(model, row, stops) for row in out_tokens]
    return Generation(out_texts, out_tokens, seed) if return_tokens else out_texts


def _decode(model: Any, tokens: list[int], stops: list[str]) -> str:
    text = model.tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


@torch.inference_mode()
def _generate_batch(
    model: Any,
    token_lists: list[list[int]],
    hooks: list[Any],
    max_new_tokens: int,
    sampling: Sampling | None,
    generators: list[torch.Generator],
    stops: list[str],
    first: int = 0,
) -> list[list[int]]:
    """Token ids per prompt; `first` is the batch's first prompt index (for errors)."""
    input_ids, mask = pad_left(model, token_lists)
    batch, width = input_ids.shape
    device = input_ids.device
    stop_ids = torch.tensor(sorted(eos_ids(model)), device=device)
    pad = model.tokenizer.pad_token_id
    # On the bridge, the plain Hugging Face model sharing its weights decodes at Hugging
    # Face's speed with the same steering functions (see workbench.model.fast_decode).
    fast = fast_decode.decoder_for(model, hooks)
    if fast is None:
        cache = kv.new_cache(model, batch)
        steering = model.hooks(fwd_hooks=hooks)
    else:
        cache = fast.new_cache()
        steering = fast.steering(hooks)

    def step_logits(new_ids: Tensor, full_mask: Tensor) -> Tensor:
        if fast is None:
            return kv.next_token_logits(model, new_ids, full_mask, cache)
        return fast.next_token_logits(new_ids, full_mask, cache)

    generated = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # Kept on the device: one host sync per step (the all-done test), as in Hugging Face.
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    tail_len = max((len(s) for s in stops), default=0) + 1
    with steering:
        with position_window(0, width):
            logits = step_logits(input_ids, mask)
        for step in range(max_new_tokens):
            # NaN or inf logits would decode to '' (greedy) or fail inside multinomial:
            # flagged on the device, raised at this step's one host sync.
            broken = ~(torch.isfinite(logits).all(-1) | done)
            nxt = _sample(logits, sampling, generators)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            generated[:, step] = nxt
            finished_now = ~done & torch.isin(nxt, stop_ids)
            lengths = torch.where(finished_now, step + 1, lengths)
            done |= finished_now
            if stops:
                # A stop string that ends in the newest token lies within the last
                # (longest stop + 1) tokens, since every token decodes to >= 1 char.
                for i in torch.nonzero(~done).flatten().tolist():
                    tail = generated[i, max(0, step + 1 - tail_len) : step + 1].tolist()
                    if any(s in model.tokenizer.decode(tail) for s in stops):
                        lengths[i] = step + 1
                        done[i] = True
            all_done, any_broken = torch.stack([done.all(), broken.any()]).tolist()
            if any_broken:
                rows = [first + i for i in torch.nonzero(broken).flatten().tolist()]
                raise NumericalError(
                    f"the logits of prompts {rows} are NaN or inf at generated token {step} "
                    f"(model dtype {model.cfg.dtype}); refusing to return their text. Steering "
                    "or a dtype the model does not run in are the usual causes"
                )
            if step == max_new_tokens - 1 or all_done:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            with position_window(width + step, width):
                logits = step_logits(nxt[:, None], mask)
    return [row[:n] for row, n in zip(generated.tolist(), lengths.tolist(), strict=True)]
