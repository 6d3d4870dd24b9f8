"""Instruction vectors: the aggregation, backends, persistence, GGUF export, bad input."""

from __future__ import annotations

import json
import warnings

import gguf
import numpy as np
import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from workbench import (
    InstructionVector,
    PromptFormatError,
    VectorFileError,
    VectorMismatchError,
    compute_instruction_vector,
    difference_stats,
    load_model,
    make_pairs,
)

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


def test_save_load_round_trip(tiny_model, tmp_path):
    vec = compute_instruction_vector(
        tiny_model, make_pairs("bullets", n=4), keep_pair_diffs=True
    ).select_layer(1)
    path = vec.save(tmp_path / "sub" / "bullets.safetensors")
    loaded = InstructionVector.load(path, model=tiny_model)
    for name in ("diffs", "directions", "mean_proj_with", "mean_proj_without", "pair_diffs"):
        assert torch.equal(getattr(loaded, name), getattr(vec, name)), name
    assert loaded.kwargs == {"num_bullets": 3}
    assert loaded.instruction_id == "detectable_format:number_bullet_lists"
    assert (loaded.layers, loaded.selected_layer, loaded.n_pairs) == ((0, 1, 2), 1, 4)
    # Metadata lives in the safetensors header as JSON; no pickle anywhere.
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["workbench"])
    assert meta["hook_names"] == [f"blocks.{layer}.hook_resid_post" for layer in range(3)]
    assert meta["d_model"] == 32 and meta["fingerprint"] == vec.fingerprint
    assert [p.name for p in path.parent.iterdir()] == ["bullets.safetensors"]


@pytest.fixture
def saved(tiny_model, tmp_path):
    return compute_instruction_vector(tiny_model, PAIRS).save(tmp_path / "v.safetensors")


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_file_is_a_clear_error(saved, cut):
    data = saved.read_bytes()
    saved.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(VectorFileError, match="not a readable workbench vector"):
        InstructionVector.load(saved)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(VectorFileError, match="not a readable workbench vector|not a workbench"):
        InstructionVector.load(path)


def test_mismatched_model_is_refused(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deeper = load_model(str(make_tiny_checkpoint(tmp_path / "deep", n_layers=4)))
    with pytest.raises(VectorMismatchError, match="3-layer model"):
        InstructionVector.load(saved, model=deeper)


def test_mismatched_width_is_refused(saved, smol_like_width):
    with pytest.raises(VectorMismatchError, match="d_model=32"):
        InstructionVector.load(saved, model=smol_like_width)


def test_other_weights_warn_but_load(saved, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = load_model(str(make_tiny_checkpoint(tmp_path / "other", seed=7)))
    with pytest.warns(UserWarning, match="transfer"):
        vec = InstructionVector.load(saved, model=other)
    assert vec.d_model == 32


def test_gguf_control_vector_round_trip(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    path = vec.to_gguf(tmp_path / "cv.gguf", layers=[1, 2], scale=2.0)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2"]
    for layer in (1, 2):
        data = tensors[f"direction.{layer}"].reshape(-1)
        assert data.shape == (32,)
        np.testing.assert_allclose(data, 2.0 * vec.diff(layer).numpy(), rtol=1e-6)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = reader.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 2


def test_gguf_refuses_layer_zero_and_writes_nothing(tiny_model, tmp_path):
    vec = compute_instruction_vector(tiny_model, PAIRS)
    with pytest.raises(ValueError, match="layer 0"):
        vec.to_gguf(tmp_path / "cv.gguf", layers=[0, 1])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("pairs", "kwargs", "match"),
    [
        ([], {}, "no pairs"),
        ([("same text", "same text")], {}, "identical"),
        (PAIRS, {"layers": [5]}, "layer 5 is out of range"),
        (PAIRS, {"position": "middle"}, "position 'middle'"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_model, tmp_path, pairs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_instruction_vector(tiny_model, pairs, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_chat_format_without_template_is_refused(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    with pytest.raises(PromptFormatError, match="no chat template"):
        compute_instruction_vector(model, PAIRS, prompt_style="chat")
    # The plain format works on the same model.
    assert compute_instruction_vector(model, PAIRS).diffs.shape == (3, 32)
