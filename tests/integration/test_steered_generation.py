"""Steered generation on the embedded model equals the reference method's slow loop, and
the one-sentence vector makes answers that follow the instruction without degenerating."""

from __future__ import annotations

import pytest

from workbench import (
    SteeringTerm,
    base_queries,
    compute_instruction_vector,
    format_prompt,
    generate,
    make_pairs,
    score,
)
from workbench.evaluation.quality import generate_with_quality
from workbench.steering.reference import reference_generate
from workbench.steering.terms import PerRow

N_NEW = 16


@pytest.fixture(scope="module")
def prompts():
    return [q.text for q in base_queries("test")[:8]]


@pytest.fixture(scope="module")
def vectors(smol):
    one = compute_instruction_vector(smol, make_pairs("one_sentence", n=24), layers=[10, 14])
    caps = compute_instruction_vector(smol, make_pairs("capitals", n=24), layers=[10, 14])
    return one, caps


@pytest.mark.parametrize("setting", ["add", "project", "two_terms"])
def test_greedy_steered_generation_matches_reference_loop(smol, vectors, prompts, setting):
    one, caps = vectors
    terms = {
        "add": SteeringTerm(one, layer=14, mode="add"),
        "project": SteeringTerm(one, layer=14, mode="project"),
        "two_terms": [
            SteeringTerm(one, layer=14, mode="add"),
            SteeringTerm(caps, layer=10, mode="add", weight=8.0),
        ],
    }[setting]
    ours = generate(smol, prompts, steering=terms, max_new_tokens=N_NEW, return_tokens=True)
    oracle = [reference_generate(smol, p, terms, N_NEW) for p in prompts]
    assert ours.tokens == oracle


def test_unsteered_generation_matches_reference_loop_on_hooked(embedded_models, prompts):
    model = embedded_models["hooked"]
    ours = generate(model, prompts[:3], max_new_tokens=N_NEW, return_tokens=True)
    assert ours.tokens == [reference_generate(model, p, None, N_NEW) for p in prompts[:3]]


def test_one_sentence_vector_makes_answers_that_follow_it_and_stay_sound(smol, vectors, prompts):
    """Scored by the instruction's own checker (IFEval's sentence count, under 2) and
    the quality guard (empty, looping or too predictable is degenerate), steered
    answers against the unsteered ones, 48 new tokens each.

    Measured (SmolLM2-135M-Instruct, bridge, greedy, CPU, 2026-12), answers that follow
    the instruction and are not degenerate, on the first 8 / 16 / all 24 test queries:
    unsteered 1 / 1 / 2, steered at layer 14 (add, the mean difference itself) 7 / 14 /
    21; no answer of either run degenerate (steered perplexity under the unsteered
    model 2.5-13, repeated 4-gram share at most 0.40). The bounds leave a prompt of
    margin each way.
    """
    one, _ = vectors
    formatted = [format_prompt(smol, p) for p in prompts]

    def sound_and_following(term):
        rows = PerRow([term] * len(prompts))
        out, quality = generate_with_quality(
            smol, formatted, rows, max_new_tokens=48, batch_size=len(prompts)
        )
        follows = [score(text, one.instruction_id, one.kwargs) for text in out.texts]
        good = [f and not d for f, d in zip(follows, quality.degenerate, strict=True)]
        return sum(good), int(quality.degenerate.sum()), out.texts

    plain, plain_degenerate, plain_texts = sound_and_following(None)
    steered, steered_degenerate, steered_texts = sound_and_following(
        SteeringTerm(one, layer=14, mode="add")
    )
    n = len(prompts)
    assert steered >= n - 2, steered_texts
    assert plain <= 2, plain_texts
    assert steered_degenerate <= 1 and plain_degenerate <= 1, (steered_texts, plain_texts)
