"""Instruction vectors: the aggregation, backends, invariants of the dataclass, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench import compute_instruction_vector, load_model, make_pairs
from workbench.errors import ArgumentTypeError, InvalidArgumentError, PromptFormatError, VectorError
from workbench.vectors.extraction import difference_stats

PAIRS = [
    ("Tell me about owls. Answer in lowercase.", "Tell me about owls."),
    ("Describe rain. Answer in lowercase.", "Describe rain."),
    ("Name a fruit. Use only lowercase letters.", "Name a fruit."),
    ("How do kites fly? Write in lowercase.", "How do kites fly?"),
]


def test_planted_direction_is_recovered():
    gen = torch.Generator().manual_seed(0)
    n, n_layers, d = 200, 3, 64
    planted = torch.randn(n_layers, d, generator=gen) * 2.0
    without = torch.randn(n, n_layers, d, generator=gen) * 3.0
    noise = torch.randn(n, n_layers, d, generator=gen)
    stats = difference_stats(without + planted + noise, without)
    cos = torch.nn.functional.cosine_similarity(stats.directions, planted, dim=-1)
    assert float(cos.min()) > 0.99
    torch.testing.assert_close(stats.directions.norm(dim=-1), torch.ones(n_layers))
    # The gap between mean projections is the norm of the mean difference.
    gap = stats.mean_proj_with - stats.mean_proj_without
    torch.testing.assert_close(gap, stats.diffs.norm(dim=-1), atol=1e-4, rtol=1e-4)


def test_vector_shapes_and_metadata(tiny_model):
    vec = compute_instruction_vector(tiny_model, make_pairs("lowercase", n=6), keep_pair_diffs=True)
    assert vec.diffs.shape == vec.directions.shape == (3, 32)
    assert vec.mean_proj_with.shape == vec.mean_proj_without.shape == (3,)
    assert vec.pair_diffs is not None and vec.pair_diffs.shape == (6, 3, 32)
    torch.testing.assert_close(vec.pair_diffs.mean(0), vec.diffs)
    assert vec.instruction_id == "change_case:english_lowercase" and vec.n_pairs == 6
    assert vec.layers == (0, 1, 2) and vec.model_n_layers == 3


def test_layer_subset_matches_full_vector(tiny_model):
    full = compute_instruction_vector(tiny_model, PAIRS)
    sub = compute_instruction_vector(tiny_model, PAIRS, layers=[1])
    torch.testing.assert_close(sub.diff(1), full.diff(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="holds layers \\[1\\], not layer 2"):
        sub.diff(2)


def test_batching_does_not_change_the_vector(tiny_model):
    a = compute_instruction_vector(tiny_model, PAIRS, batch_size=8)
    b = compute_instruction_vector(tiny_model, PAIRS, batch_size=1)
    torch.testing.assert_close(a.diffs, b.diffs, atol=1e-5, rtol=1e-5)


def test_backends_give_the_same_vector(tiny_models):
    vecs = {b: compute_instruction_vector(m, PAIRS) for b, m in tiny_models.items()}
    cos = torch.nn.functional.cosine_similarity(vecs["bridge"].diffs, vecs["hooked"].diffs, dim=-1)
    assert float(cos.min()) > 0.999
    assert vecs["bridge"].fingerprint == vecs["hooked"].fingerprint


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, hook):
        self.calls += 1


@pytest.mark.parametrize(
    ("pairs", "kwargs", "error", "match"),
    [
        ([], {}, InvalidArgumentError, "no pairs"),
        ([("same text", "same text")], {}, InvalidArgumentError, "identical"),
        (PAIRS, {"layers": [5]}, InvalidArgumentError, "layer 5 is out of range"),
        (PAIRS, {"layers": [1.0]}, ArgumentTypeError, r"layers\[0\] must be an int, got float 1.0"),
        (PAIRS, {"layers": "12"}, ArgumentTypeError, "layers must be a list"),
        (PAIRS, {"position": "middle"}, InvalidArgumentError, r"position 'middle' is not one of"),
        (PAIRS, {"prompt_style": "yaml"}, InvalidArgumentError, "prompt_style 'yaml'"),
    ],
)
def test_bad_input_is_refused_before_any_forward_pass(tiny_model, pairs, kwargs, error, match):
    counter = _Counter()
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", counter)]):
        with pytest.raises(error, match=match):
            compute_instruction_vector(tiny_model, pairs, **kwargs)
    assert counter.calls == 0


def test_chat_format_without_template_is_refused(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    with pytest.raises(PromptFormatError, match="no chat template"):
        compute_instruction_vector(model, PAIRS, prompt_style="chat")
    # The plain format works on the same model.
    assert compute_instruction_vector(model, PAIRS).diffs.shape == (3, 32)


@pytest.fixture(scope="module")
def good(tiny_models):
    return compute_instruction_vector(tiny_models["bridge"], PAIRS, keep_pair_diffs=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"layers": (-1, 0, 1)}, r"layers: \[-1\] are not layer indices of a 3-layer model"),
        ({"layers": (0, 0, 1)}, r"layers: \[0, 0, 1\] contain duplicates"),
        ({"layers": (0, 1)}, r"diffs: has shape \(3, 32\), expected \(2, 32\)"),
        ({"layers": ()}, "layers: must be a non-empty list"),
        ({"layers": (0, 1.0, 2)}, r"layers: \[1.0\] are not layer indices"),
        ({"selected_layer": 99}, "selected_layer: 99 is not one of the layers"),
        (
            {"hook_name": "blocks.{lay}.x"},
            r"hook_name: hook_name 'blocks.\{lay\}.x' must be a template",
        ),
        ({"hook_name": "blocks.{layer}.{x}"}, "and no other field"),
        ({"position": "middle"}, "position: position 'middle' is not one of"),
        ({"prompt_style": "yaml"}, "prompt_style: prompt_style 'yaml'"),
        ({"n_pairs": 0}, "n_pairs: must be a positive int, got 0"),
        ({"model_n_layers": "3"}, "model_n_layers: must be a positive int"),
        ({"kwargs": ["a"]}, "kwargs: must be a mapping"),
        ({"mean_proj_with": torch.full((3,), float("nan"))}, "mean_proj_with: contains NaN"),
        ({"directions": torch.ones(3, 32)}, "directions: rows must be unit vectors"),
        ({"pair_diffs": torch.zeros(5, 3, 32)}, r"pair_diffs: has shape \(5, 3, 32\)"),
    ],
)
def test_a_vector_with_contradicting_fields_cannot_exist(good, change, match):
    with pytest.raises(VectorError, match=match):
        dataclasses.replace(good, **change)


def test_the_vector_records_how_it_was_read(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    vec = compute_instruction_vector(model, PAIRS, position=2, layers=[2])
    assert (vec.prompt_style, vec.position, vec.layers) == ("plain", 2, (2,))
    assert vec.hook_name == "blocks.{layer}.hook_resid_post"
