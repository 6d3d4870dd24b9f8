"""The quality guard: repetition, perplexity under the model, empty and cut outputs."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import InvalidArgumentError
from workbench.evaluation.quality import (
    QualityThresholds,
    quality_frame,
    repeated_ngram_share,
    response_perplexity,
)

PROMPT = [1, 40, 41, 42]
RESPONSE = [50, 51, 52, 53]


def test_repeated_ngram_share_counts_repeats_of_earlier_ngrams():
    assert repeated_ngram_share(list(range(20))) == 0.0
    assert repeated_ngram_share([5] * 20, n=4) == pytest.approx(16 / 17)
    # "a b c d a b c d": of 5 four-grams, the last one repeats the first.
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repeated_ngram_share([1, 2]) == 0.0


def test_perplexity_is_the_exponent_of_the_mean_response_nll(tiny_model):
    ids = torch.tensor([PROMPT + RESPONSE], device=tiny_model.cfg.device)
    with torch.inference_mode():
        logp = tiny_model(ids).log_softmax(-1)[0]
    targets = ids[0, len(PROMPT) :]
    nll = -logp[len(PROMPT) - 1 : -1].gather(-1, targets[:, None]).mean()
    (ppl,) = response_perplexity(tiny_model, [PROMPT], [RESPONSE])
    assert ppl == pytest.approx(float(nll.exp()), rel=1e-4)


def test_perplexity_does_not_depend_on_the_batch(tiny_model):
    prompts = [PROMPT, [1, 60], [1, 61, 62, 63, 64, 65, 66]]
    responses = [RESPONSE, [70, 71, 72], [80]]
    batched = response_perplexity(tiny_model, prompts, responses, batch_size=3)
    alone = [
        response_perplexity(tiny_model, [p], [r])[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    assert batched == pytest.approx(alone, rel=1e-4)
    assert math.isnan(response_perplexity(tiny_model, [PROMPT], [[]])[0])


def test_degenerate_means_empty_looping_or_too_predictable(tiny_model):
    eos = tiny_model.tokenizer.eos_token_id
    responses = [RESPONSE, [7, 8] * 6, [], [50, 51, 52, eos]]
    texts = ["fine answer", "ab" * 6, " ", "done"]
    table = quality_frame(tiny_model, [PROMPT] * 4, responses, texts, max_new_tokens=4)
    assert table.degenerate.tolist() == [False, True, True, False]
    assert table["empty"].tolist() == [False, False, True, False]
    # Cut at the limit: four tokens without an end-of-sequence token.
    assert table.truncated.tolist() == [True, True, False, False]
    strict = QualityThresholds(min_perplexity=1e9)
    assert quality_frame(
        tiny_model, [PROMPT], [RESPONSE], ["x"], max_new_tokens=9, thresholds=strict
    ).degenerate[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ngram": 0}, "ngram 0 is out of range"),
        ({"max_repeated_share": 1.5}, r"max_repeated_share must be in \[0, 1\]"),
        ({"min_perplexity": 0.5}, "min_perplexity must be a number >= 1"),
    ],
)
def test_thresholds_are_checked(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        QualityThresholds(**kwargs)


def test_one_record_per_response_or_a_clear_error(tiny_model):
    with pytest.raises(InvalidArgumentError, match="one per response"):
        quality_frame(tiny_model, [PROMPT], [RESPONSE, RESPONSE], ["a"], max_new_tokens=4)
