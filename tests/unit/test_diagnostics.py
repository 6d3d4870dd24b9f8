"""Diagnostics: split-half stability, pairs needed to settle, separability."""

from __future__ import annotations

import pytest
import torch

from workbench import compute_instruction_vector, make_pairs, separability, stability_curve
from workbench.errors import InvalidArgumentError
from workbench.vectors.diagnostics import (
    auc,
    d_prime,
    pairs_to_settle,
    separability_from_activations,
)
from workbench.vectors.extraction import pair_activations


def _planted_diffs(signal: list[float], n: int = 64, d: int = 32):
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(len(signal), d, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    scale = torch.tensor(signal)[:, None]
    return direction * scale + torch.randn(n, len(signal), d, generator=gen)


def test_stability_rises_with_signal_and_pairs():
    # Layer 0: pure noise; layer 1: weak signal; layer 2: strong signal.
    curve = stability_curve(_planted_diffs([0.0, 0.6, 5.0]), n_draws=10)
    split_half = curve[curve.n_pairs == 32].set_index("layer")["cosine"]
    assert split_half[2] > 0.95
    assert split_half[1] > split_half[0] + 0.3
    assert abs(split_half[0]) < 0.3
    weak = curve[curve.layer == 1].sort_values("n_pairs")["cosine"].tolist()
    assert weak[-1] > weak[0]
    settle = pairs_to_settle(curve, threshold=0.9).set_index("layer")["n_pairs"]
    # Expected cosine for k pairs is s^2 / (s^2 + d/k): 0.9 needs k >= 12 at s=5, d=32.
    assert 8 < settle[2] <= 16
    assert settle.isna()[0]
    assert settle.isna()[1] or settle[1] > settle[2]


def test_stability_needs_per_pair_differences(tiny_model):
    vec = compute_instruction_vector(tiny_model, make_pairs("concise", n=4))
    with pytest.raises(InvalidArgumentError, match="keep_pair_diffs=True"):
        stability_curve(vec)
    kept = compute_instruction_vector(tiny_model, make_pairs("concise", n=8), keep_pair_diffs=True)
    curve = stability_curve(kept, n_draws=3)
    assert set(curve.layer) == {0, 1, 2} and curve.n_pairs.max() == 4
    with pytest.raises(InvalidArgumentError, match="between 1 and 4"):
        stability_curve(kept, sizes=[5])


def test_auc_and_d_prime_on_known_distributions():
    pos = torch.tensor([[3.0, 1.0], [4.0, 2.0], [5.0, 3.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    torch.testing.assert_close(auc(pos, neg), torch.tensor([1.0, 0.5]))
    dp = d_prime(pos, neg)
    assert float(dp[0]) == pytest.approx(3.0) and float(dp[1]) == pytest.approx(0.0)


def test_separability_from_planted_activations():
    gen = torch.Generator().manual_seed(2)
    without = torch.randn(40, 2, 16, generator=gen)
    shift = torch.zeros(2, 16)
    shift[0, 0] = 4.0  # layer 0 separates along e0; layer 1 does not move
    table = separability_from_activations(torch.eye(16)[[0, 0]], without + shift, without)
    assert table.loc[0, "auc"] > 0.95 and table.loc[0, "d_prime"] > 2.5
    assert table.loc[1, "auc"] == pytest.approx(0.5)


def test_separability_projects_held_out_pairs_on_the_vector_directions(tiny_model):
    vec = compute_instruction_vector(tiny_model, make_pairs("capitals", split="train", n=8))
    held_out = make_pairs("capitals", split="validation", n=6)
    table = separability(tiny_model, vec, held_out)
    assert list(table.layer) == [0, 1, 2]
    acts_with, acts_without = pair_activations(tiny_model, held_out)
    expected = separability_from_activations(vec.directions, acts_with, acts_without)
    for column in ("auc", "d_prime", "mean_proj_with", "mean_proj_without"):
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-4)
    # On its own training pairs every layer's projection gap is the vector's norm.
    fit = separability(tiny_model, vec, make_pairs("capitals", split="train", n=8))
    gap = torch.tensor((fit.mean_proj_with - fit.mean_proj_without).tolist())
    torch.testing.assert_close(gap, vec.norms(), atol=1e-4, rtol=1e-4)
