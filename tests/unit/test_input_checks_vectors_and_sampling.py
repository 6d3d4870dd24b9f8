"""Input checks on vectors and generation options: a layer outside the vector, bad
difference or stability input, and bad `generate` / `Sampling` options, each a clear
error naming the value."""

from __future__ import annotations

import pytest
import torch

from workbench import Sampling, compute_instruction_vector, generate, stability_curve
from workbench.errors import ArgumentTypeError, InvalidArgumentError, VectorMismatchError
from workbench.vectors.extraction import difference_stats

PAIRS = [
    ("Tell me about owls. Be brief.", "Tell me about owls."),
    ("Describe rain. Be brief.", "Describe rain."),
]


def test_select_layer_outside_the_vector(tiny_model):
    vec = compute_instruction_vector(tiny_model, PAIRS, layers=[1, 2])
    with pytest.raises(VectorMismatchError, match=r"holds layers \[1, 2\], not layer 0"):
        vec.select_layer(0)
    assert vec.select_layer(2).selected_layer == 2


def test_difference_stats_rejects_mismatched_or_empty_input():
    # Our own check in normal use; jaxtyping's shape check when tests enable it.
    with pytest.raises((ValueError, TypeError), match=r"differ in shape|acts_without"):
        difference_stats(torch.ones(2, 1, 4), torch.ones(3, 1, 4))
    with pytest.raises(ValueError, match="zero rows"):
        difference_stats(torch.ones(0, 1, 4), torch.ones(0, 1, 4))
    with pytest.raises(ValueError, match="exactly zero"):
        difference_stats(torch.ones(2, 1, 4), torch.ones(2, 1, 4))


def test_stability_curve_rejects_bad_shapes_and_too_few_pairs():
    with pytest.raises(ValueError, match=r"got \(4, 8\)"):
        stability_curve(torch.ones(4, 8))
    with pytest.raises(ValueError, match="at least 2 pairs, got 1"):
        stability_curve(torch.ones(1, 2, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size 0 is out of range"),
        ({"stop": [""]}, "non-empty strings"),
        ({"prompts": []}, "non-empty list of str, got an empty one"),
    ],
)
def test_generate_rejects_bad_options(tiny_model, kwargs, match):
    kwargs = dict(kwargs)  # parametrize shares the dict across backends
    prompts = kwargs.pop("prompts", ["hi"])
    with pytest.raises(ValueError, match=match):
        generate(tiny_model, prompts, max_new_tokens=2, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": 0.0}, InvalidArgumentError, "temperature must be > 0, got 0.0"),
        ({"temperature": float("nan")}, InvalidArgumentError, "temperature must be > 0"),
        ({"top_p": 0.0}, InvalidArgumentError, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, InvalidArgumentError, "top_p must be in"),
        ({"seed": -1}, InvalidArgumentError, "seed -1 is out of range"),
        ({"seed": 1.5}, ArgumentTypeError, "seed must be an int, got float 1.5"),
    ],
)
def test_sampling_options_are_checked_once_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        Sampling(**kwargs)
