"""The quality guard on the embedded model: steering that turns every answer into
gibberish is flagged, and the model's own answers are not."""

from __future__ import annotations

import pytest

from workbench import base_queries, compute_instruction_vector, format_prompt, make_pairs
from workbench.evaluation.quality import generate_with_quality
from workbench.steering.settings import Setting
from workbench.steering.terms import PerRow

N_NEW = 64
MIDDLE = 15  # of SmolLM2-135M's 30 layers


@pytest.fixture(scope="module")
def formatted(smol):
    return [format_prompt(smol, q.text) for q in base_queries("test")]


def _flagged(smol, formatted, term):
    out, quality = generate_with_quality(
        smol, formatted, PerRow([term] * len(formatted)), max_new_tokens=N_NEW, batch_size=24
    )
    return int(quality.degenerate.sum()), out.texts


def test_unsteered_answers_are_rarely_flagged(smol, formatted):
    """Measured (bridge, greedy, CPU, 2026-12), on the 24 test queries at 64 new tokens:
    1 flagged, an answer that repeats its first sentence twice over; at 96 tokens 2 of
    24, both real loops (docs/evaluation.md has the long-budget figures)."""
    flagged, texts = _flagged(smol, formatted, None)
    assert flagged <= 0.10 * len(formatted), [t for t in texts]


@pytest.mark.parametrize("name", ["lowercase", "bullets"])
def test_add_at_six_times_in_a_middle_layer_is_flagged(smol, formatted, name):
    """Issue 17's gibberish setting: ``add`` at 6x the mean difference's norm at layer
    15. Measured: 24 of 24 flagged for lowercase, no_comma, bullets and one_sentence."""
    vec = compute_instruction_vector(smol, make_pairs(name, n=24), layers=[MIDDLE], progress=False)
    flagged, texts = _flagged(smol, formatted, Setting(MIDDLE, "add", 6.0).term(vec))
    assert flagged >= 0.90 * len(formatted), texts
