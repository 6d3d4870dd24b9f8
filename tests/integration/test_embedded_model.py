"""The embedded SmolLM2-135M-Instruct: offline loading, cache, backend parity, pins."""

from __future__ import annotations

import shutil
from importlib.metadata import version

import pytest
import torch
from packaging.version import Version

from workbench import format_prompt, model_info
from workbench.model.embedded import (
    EMBEDDED_MODELS,
    checkpoint_dir,
    ensure_checkpoint,
    verify_checkpoint,
)
from workbench.model.prompts import tokenize_prompts

PROMPTS = ["Write a haiku about the sea.", "What is the capital of France? Answer in French."]


def test_both_backends_load_the_same_weights(embedded_models):
    bridge, hooked = embedded_models["bridge"], embedded_models["hooked"]
    assert model_info(bridge).fingerprint == model_info(hooked).fingerprint
    assert (bridge.cfg.n_layers, bridge.cfg.d_model) == (30, 576)
    assert (hooked.cfg.n_layers, hooked.cfg.d_model) == (30, 576)
    assert model_info(bridge).prompt_style == "chat"


def test_backends_agree_on_every_layer(embedded_models):
    bridge = embedded_models["bridge"]
    ids, mask = tokenize_prompts(bridge, [format_prompt(bridge, p) for p in PROMPTS])
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(30)]
    caches = {}
    for name, model in embedded_models.items():
        with torch.inference_mode():
            _, caches[name] = model.run_with_cache(
                ids, attention_mask=mask, names_filter=lambda n: n in names
            )
    real = mask.bool()
    for name in names:
        a, b = caches["bridge"][name][real], caches["hooked"][name][real]
        scale = a.abs().max()
        assert float((a - b).abs().max() / scale) < 1e-4, name
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        assert float(cos.min()) > 0.99999, name


def test_transformers_is_within_the_measured_pin():
    # transformers 5.24.0 breaks TransformerBridge's KV-cached generation.
    assert Version("5.9") <= Version(version("transformers")) < Version("5.24")


def test_bridge_kv_cached_generation_matches_full_recompute_and_hf(smol):
    """Guards the transformers pin: 5.24 degenerated cached greedy output to '-----'."""
    ids, mask = tokenize_prompts(smol, [format_prompt(smol, p) for p in PROMPTS])
    hf = smol.original_model
    with torch.inference_mode():
        cached = hf.generate(
            ids, attention_mask=mask, max_new_tokens=20, do_sample=False, use_cache=True
        )
        uncached = hf.generate(
            ids, attention_mask=mask, max_new_tokens=20, do_sample=False, use_cache=False
        )
    assert torch.equal(cached, uncached)
    text = smol.tokenizer.decode(cached[0, ids.shape[1] :], skip_special_tokens=True)
    assert len(set(text)) > 5, f"degenerate output {text!r}"


def test_corrupt_cache_is_rebuilt_not_loaded(tmp_path, monkeypatch, smol):
    good = ensure_checkpoint("smollm2-135m-instruct")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    target = checkpoint_dir(EMBEDDED_MODELS["smollm2-135m-instruct"])
    shutil.copytree(good, target)
    weights = target / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])  # a half-written file
    assert not verify_checkpoint(target)
    rebuilt = ensure_checkpoint("smollm2-135m-instruct")
    assert rebuilt == target and verify_checkpoint(rebuilt)
    assert (rebuilt / "model.safetensors").read_bytes() == original


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_hook_names_follow_transformer_lens(embedded_models, backend):
    model = embedded_models[backend]
    for layer in (0, 29):
        assert f"blocks.{layer}.hook_resid_post" in model.hook_dict
