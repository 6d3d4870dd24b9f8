"""Bad input to the smaller entry points: each a clear error naming the value."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workbench import (
    InstructionVector,
    VectorFileError,
    compute_instruction_vector,
    difference_stats,
    generate,
    stability_curve,
)

PAIRS = [
    ("Tell me about owls. Be brief.", "Tell me about owls."),
    ("Describe rain. Be brief.", "Describe rain."),
]


def _rewrite(path, change_meta=None, change_tensors=None):
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["workbench"])
    tensors = st_load(raw)
    if change_meta:
        change_meta(meta)
    if change_tensors:
        change_tensors(tensors)
    path.write_bytes(st_save(tensors, metadata={"workbench": json.dumps(meta)}))


@pytest.fixture
def saved(tiny_model, tmp_path):
    return compute_instruction_vector(tiny_model, PAIRS).save(tmp_path / "v.safetensors")


def test_newer_format_version_is_refused(saved):
    _rewrite(saved, change_meta=lambda m: m.update(format_version=99))
    with pytest.raises(VectorFileError, match="format version 99"):
        InstructionVector.load(saved)


def test_missing_metadata_key_is_a_file_error(saved):
    _rewrite(saved, change_meta=lambda m: m.pop("layers"))
    with pytest.raises(VectorFileError, match=r"missing \['layers'\]"):
        InstructionVector.load(saved)


def test_tensor_shape_contradicting_metadata_is_refused(saved):
    _rewrite(saved, change_tensors=lambda t: t.update(diffs=t["diffs"][:2]))
    with pytest.raises(VectorFileError, match=r"'diffs': \(2, 32\).*contradict its metadata"):
        InstructionVector.load(saved)


def test_select_layer_outside_the_vector(tiny_model):
    vec = compute_instruction_vector(tiny_model, PAIRS, layers=[1, 2])
    with pytest.raises(ValueError, match="not layer 0"):
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
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"stop": [""]}, "non-empty strings"),
        ({"prompts": []}, "prompts is empty"),
    ],
)
def test_generate_rejects_bad_options(tiny_model, kwargs, match):
    kwargs = dict(kwargs)  # parametrize shares the dict across backends
    prompts = kwargs.pop("prompts", ["hi"])
    with pytest.raises(ValueError, match=match):
        generate(tiny_model, prompts, max_new_tokens=2, **kwargs)
