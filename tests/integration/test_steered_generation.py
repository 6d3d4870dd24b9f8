"""Steered generation on the embedded model equals the reference method's slow loop."""

from __future__ import annotations

import pytest

from workbench import SteeringTerm, base_queries, compute_instruction_vector, generate, make_pairs
from workbench.steering.reference import reference_generate

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


def test_one_sentence_vector_shortens_answers(smol, vectors, prompts):
    one, _ = vectors
    plain = generate(smol, prompts, max_new_tokens=48)
    steered = generate(
        smol, prompts, steering=SteeringTerm(one, layer=14, mode="add"), max_new_tokens=48
    )

    def sentences(t):
        return sum(t.count(c) for c in ".!?")

    assert sum(map(sentences, steered)) < sum(map(sentences, plain))
