"""Instruction vectors on the embedded model: backend agreement, padding, diagnostics."""

from __future__ import annotations

import torch

from workbench import compute_instruction_vector, make_pairs, separability


def test_bridge_and_hooked_vectors_agree_per_layer(embedded_models):
    pairs = make_pairs("lowercase", n=8)
    vecs = {b: compute_instruction_vector(m, pairs) for b, m in embedded_models.items()}
    cos = torch.nn.functional.cosine_similarity(vecs["bridge"].diffs, vecs["hooked"].diffs, dim=-1)
    assert float(cos.min()) > 0.999, cos


def test_padding_does_not_change_the_vector(smol):
    pairs = make_pairs("json", n=6)
    batched = compute_instruction_vector(smol, pairs, batch_size=12)
    single = compute_instruction_vector(smol, pairs, batch_size=1)
    rel = (batched.diffs - single.diffs).norm(dim=-1) / single.diffs.norm(dim=-1)
    assert float(rel.max()) < 1e-3, rel


def test_vector_separates_held_out_pairs_in_middle_layers(smol):
    vec = compute_instruction_vector(smol, make_pairs("french", split="train", n=24))
    table = separability(smol, vec, make_pairs("french", split="validation", n=16))
    # The instruction is linearly visible at the last prompt token on unseen queries.
    assert table.set_index("layer").loc[10:20, "auc"].min() > 0.9
