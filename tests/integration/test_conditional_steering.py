"""Conditional steering on the embedded model: the default gate tells prompts that
carry the instruction from those that do not, and clamp acts only below its target."""

from __future__ import annotations

import pytest
import torch

from workbench import PerRow, SteeringTerm, compute_instruction_vector, generate, make_pairs, steer
from workbench.model.prompts import tokenize_prompts
from workbench.steering.gates import Gate

LAYER = 14


@pytest.mark.parametrize("name", ["no_comma", "bullets"])
def test_the_default_gate_steers_prompts_without_the_instruction_and_not_those_with_it(smol, name):
    vec = compute_instruction_vector(smol, make_pairs(name, n=32), layers=[LAYER])
    val = make_pairs(name, split="validation")
    prompts = [p.with_instruction for p in val] + [p.without_instruction for p in val]
    term = SteeringTerm(vec, layer=LAYER, gate=Gate())
    out = generate(smol, prompts, steering=term, max_new_tokens=1, return_tokens=True)
    n = len(val)
    on_with = sum(g[0] for g in out.gates[:n])
    on_without = sum(g[0] for g in out.gates[n:])
    print(f"gate {name} L{LAYER}: on for {on_with}/{n} with, {on_without}/{n} without")
    # Measured with 108 train pairs at layers 6, 14, 22 on ten format instructions:
    # 0-3 of 24 with, 20-23 of 24 without (README, "Conditional steering").
    assert on_with <= 3
    assert on_without >= 18


def test_clamp_on_the_embedded_model_sets_projection_to_max_of_natural_and_target(smol):
    vec = compute_instruction_vector(smol, make_pairs("no_comma", n=16), layers=[LAYER])
    ids, _ = tokenize_prompts(smol, ["Describe a forest. Do not use any commas."])
    hook = f"blocks.{LAYER}.hook_resid_post"
    seen = {}

    def grab(x, hook, key):
        seen[key] = x.clone()

    u = vec.direction(LAYER).to(smol.cfg.device)
    target = float(vec.mean_proj_with[0])
    for key, steering in [("plain", None), ("clamp", SteeringTerm(vec, layer=LAYER, mode="clamp"))]:
        with torch.inference_mode(), steer(smol, steering):
            with smol.hooks(fwd_hooks=[(hook, lambda x, hook, key=key: grab(x, hook, key))]):
                smol(ids)
    natural = seen["plain"] @ u
    torch.testing.assert_close(
        seen["clamp"] @ u, torch.clamp(natural, min=target), atol=1e-3, rtol=1e-4
    )
    clear = natural > target + 1e-3
    assert torch.equal(seen["clamp"][clear], seen["plain"][clear])
    assert bool((natural < target).any()), "no position below target: the test would be empty"
    # Per-row clamp and gate decode the same rows as one at a time.
    rows = [SteeringTerm(vec, layer=LAYER, mode="clamp"), None]
    prompts = ["Describe a forest.", "Name three birds."]
    both = generate(smol, prompts, steering=PerRow(rows), max_new_tokens=12)
    alone = [
        generate(smol, [p], steering=r, max_new_tokens=12)[0]
        for p, r in zip(prompts, rows, strict=True)
    ]
    assert both == alone
