"""Token ids of the embedded SmolLM2: one BOS, the same from every path, as its GGUF says.

The GGUF sets ``tokenizer.ggml.add_bos_token = false`` (llama.cpp adds no BOS); the
chat template writes ``<|im_start|>`` (id 1, the BOS) itself. TransformerLens used to
add a second one in ``model.tokenizer(text)`` and ``model.to_tokens(text)``.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from workbench import format_prompt
from workbench.embedded import (
    EMBEDDED_MODELS,
    MANIFEST,
    ensure_checkpoint,
    gguf_add_bos,
    locate_gguf,
)
from workbench.prompts import encode_prompts

SMOL = "smollm2-135m-instruct"
IM_START, SYSTEM, Q = 1, 9690, 65  # "<|im_start|>", "system", "Q"
PROMPTS = ["Write a haiku about the sea.", "What is the capital of France?"]


def three_ways(model, text: str, style: str | None = None):
    return (
        model.tokenizer(text)["input_ids"],
        model.to_tokens(text)[0].tolist(),
        encode_prompts(model, [text], style=style)[0],
    )


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_chat_prompt_ids_agree_and_start_with_exactly_one_bos(embedded_models, backend):
    model = embedded_models[backend]
    for prompt in PROMPTS:
        text = format_prompt(model, prompt)
        from_tokenizer, from_to_tokens, ours = three_ways(model, text)
        assert from_tokenizer == from_to_tokens == ours
        assert ours[:2] == [IM_START, SYSTEM]
        # system, user and assistant turns: one <|im_start|> each, none added.
        assert ours.count(IM_START) == text.count("<|im_start|>") == 3


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_plain_prompt_ids_agree_and_carry_no_bos(embedded_models, backend):
    model = embedded_models[backend]
    text = format_prompt(model, PROMPTS[0], style="plain")
    from_tokenizer, from_to_tokens, ours = three_ways(model, text, style="plain")
    assert from_tokenizer == from_to_tokens == ours
    assert ours[0] == Q and IM_START not in ours


def test_the_cached_checkpoint_follows_the_gguf_add_bos_flag():
    assert gguf_add_bos(locate_gguf(EMBEDDED_MODELS[SMOL])) is False
    path = ensure_checkpoint(SMOL)
    assert AutoTokenizer.from_pretrained(path)("Hi")["input_ids"] == [26843]
    assert json.loads((path / MANIFEST).read_text())["add_bos_token"] == "false"
