"""A quality guard for generated text: what steering breaks.

Per response it records the number of tokens, whether the output is empty, whether
it was cut at the token limit, the share of repeated token n-grams, and the
perplexity of the response under the model as called (outside `steer`, the
unsteered model), from one batched teacher-forced forward pass.

A response is *degenerate* when it is empty, when more than `max_repeated_share`
of its n-grams repeat an earlier one, or when its perplexity is below
`min_perplexity`. The reference method flags degenerate text by low perplexity
under a reference model: a loop ("search/search/search…") is very predictable.
Here the reference model is the unsteered model itself, and greedy answers are its
most likely tokens, so normal greedy text already scores low: measured on
SmolLM2-135M-Instruct, unsteered greedy answers of 8 tokens had perplexity 1.3-3.1.
The threshold (1.2) therefore sits below that, and the repetition share is checked
beside it, since a loop that began late can keep the mean above it; either suffices. Being cut at the token limit is recorded but
is not degenerate by itself (a long answer with a short budget is cut too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model import kv
from workbench.model.hooks import model_lock
from workbench.model.prompts import check_context, encode_prompts, pad_left
from workbench.options import as_float, check_int
from workbench.steering.generation import Generation, eos_ids, generate
from workbench.steering.terms import PerRow


@dataclass(frozen=True)
class QualityThresholds:
    """Where a response counts as degenerate (see the module docstring).

    Attributes:
        ngram: the n of the repeated n-gram share, in tokens.
        max_repeated_share: degenerate above this share of repeated n-grams.
        min_perplexity: degenerate below this perplexity.

    Example:
        >>> QualityThresholds().max_repeated_share
        0.5
    """

    ngram: int = 4
    max_repeated_share: float = 0.5
    min_perplexity: float = 1.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "ngram", check_int("ngram", self.ngram, low=1))
        for name in ("max_repeated_share", "min_perplexity"):
            object.__setattr__(self, name, as_float(name, getattr(self, name)))
        if not 0 <= self.max_repeated_share <= 1:
            raise InvalidArgumentError(
                f"max_repeated_share must be in [0, 1], got {self.max_repeated_share!r}"
            )
        if self.min_perplexity < 1:
            raise InvalidArgumentError(
                f"min_perplexity must be a number >= 1, got {self.min_perplexity!r}"
            )


def _thresholds(thresholds: Any) -> QualityThresholds:
    if thresholds is None:
        return QualityThresholds()
    if not isinstance(thresholds, QualityThresholds):
        raise ArgumentTypeError(
            f"thresholds must be a QualityThresholds or None, got {type(thresholds).__name__} "
            f"{thresholds!r:.60}"
        )
    return thresholds


def repeated_ngram_share(tokens: Sequence[int], n: int = 4) -> float:
    """Share of the response's n-grams that repeat an earlier n-gram (0 for < n+1 tokens).

    Example:
        >>> repeated_ngram_share([1, 2, 3, 4, 5, 6])
        0.0
        >>> repeated_ngram_share([7, 8] * 10, n=2)  # every 2-gram after the first two repeats
        0.8947368421052632
    """
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _token_nll(
    logits: Float[Tensor, "batch pos d_vocab"], targets: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    return torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), targets, reduction="none"
    )


@torch.inference_mode()
def response_perplexity(
    model: Any,
    prompt_tokens: Sequence[Sequence[int]],
    response_tokens: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[float]:
    """Perplexity of each response given its prompt, teacher-forced (nan for empty ones).

    Example:
        >>> ids = [[1, 40, 41], [1, 42]]
        >>> ppl = response_perplexity(model, ids, [[50, 51], [52, 53, 54]])
        >>> len(ppl), all(p > 1 for p in ppl)
        (2, True)
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    if len(prompt_tokens) != len(response_tokens):
        raise InvalidArgumentError(
            f"got {len(prompt_tokens)} prompts and {len(response_tokens)} responses; "
            "they must be one per response"
        )
    check_context(
        model,
        [[*p, *r] for p, r in zip(prompt_tokens, response_tokens, strict=True)],
        "prompt {} with its response".format,
    )
    out: list[float] = []
    for start in range(0, len(prompt_tokens), batch_size):
        prompts = prompt_tokens[start : start + batch_size]
        responses = response_tokens[start : start + batch_size]
        ids, mask = pad_left(model, [[*p, *r] for p, r in zip(prompts, responses, strict=True)])
        # Held so that another thread's steer() block cannot reach this unsteered pass.
        with model_lock(model):
            logits = kv.forward(model, ids, mask, kv.new_cache(model, ids.shape[0]))
        nll = _token_nll(logits[:, :-1], ids[:, 1:])
        for row, response in enumerate(responses):
            if not response:
                out.append(math.nan)
                continue
            # The last len(response) targets are the response's own tokens.
            out.append(float(nll[row, -len(response) :].mean().exp()))
    return out


def quality_frame(
    model: Any,
    prompt_tokens: Sequence[Sequence[int]],
    response_tokens: Sequence[Sequence[int]],
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    thresholds: QualityThresholds | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """One quality record per response: ``n_tokens, empty, truncated,
    repeated_ngram_share, perplexity, degenerate``.

    Example:
        >>> out = generate(model, ["Hi", "Name a colour."], max_new_tokens=6, return_tokens=True)
        >>> prompts = [tokenize_prompts(model, [format_prompt(model, p)])[0][0].tolist() for p in ["Hi", "Name a colour."]]
        >>> table = quality_frame(model, prompts, out.tokens, out.texts, max_new_tokens=6)
        >>> list(table.columns)
        ['n_tokens', 'empty', 'truncated', 'repeated_ngram_share', 'perplexity', 'degenerate']
    """
    limits = _thresholds(thresholds)
    if not len(prompt_tokens) == len(response_tokens) == len(texts):
        raise InvalidArgumentError(
            f"got {len(prompt_tokens)} prompts, {len(response_tokens)} token lists and "
            f"{len(texts)} texts; they must be one per response"
        )
    stops = eos_ids(model)
    ppl = response_perplexity(model, prompt_tokens, response_tokens, batch_size=batch_size)
    rows = []
    for tokens, text, p in zip(response_tokens, texts, ppl, strict=True):
        empty = not text.strip()
        share = repeated_ngram_share(tokens, limits.ngram)
        low_ppl = not math.isnan(p) and p < limits.min_perplexity
        rows.append(
            {
                "n_tokens": len(tokens),
                "empty": empty,
                "truncated": len(tokens) >= max_new_tokens
                and (not tokens or tokens[-1] not in stops),
                "repeated_ngram_share": share,
                "perplexity": p,
                "degenerate": empty or share > limits.max_repeated_share or low_ppl,
            }
        )
    return pd.DataFrame(rows)


def generate_with_quality(
    model: Any,
    formatted: Sequence[str],
    steering: PerRow,
    *,
    max_new_tokens: int,
    batch_size: int,
    thresholds: QualityThresholds | None = None,
) -> tuple[Generation, pd.DataFrame]:
    """Generate from already formatted prompts with one steering entry per row, and the
    `quality_frame` of the responses (what sweeps and composition runs both need).

    Example:
        >>> from workbench.steering.terms import PerRow
        >>> texts = [format_prompt(model, "Hi")]
        >>> out, quality = generate_with_quality(model, texts, PerRow([None]), max_new_tokens=3, batch_size=1)
        >>> len(out.texts), len(quality)
        (1, 1)
    """
    out = generate(
        model,
        list(formatted),
        steering=steering,
        formatted=True,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        return_tokens=True,
    )
    quality = quality_frame(
        model,
        encode_prompts(model, list(formatted)),
        out.tokens,
        out.texts,
        max_new_tokens=max_new_tokens,
        thresholds=thresholds,
    )
    return out, quality
