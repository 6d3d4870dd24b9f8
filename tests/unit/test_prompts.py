"""Prompt formatting and left-padded tokenization."""

from __future__ import annotations

import pytest

from workbench import PromptFormatError, format_prompt, load_model, tokenize_prompts


def test_chat_prompt_opens_the_assistant_turn(tiny_model):
    text = format_prompt(tiny_model, "Name a colour.")
    assert "Name a colour." in text
    assert text.endswith("<|im_start|>assistant\n")


def test_plain_prompt_is_q_and_a(tiny_model):
    assert format_prompt(tiny_model, "Name a colour.", style="plain") == "Q: Name a colour.\nA:"


def test_chat_style_without_template_is_a_clear_error(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    with pytest.raises(PromptFormatError, match="no chat template"):
        format_prompt(model, "hi", style="chat")


def test_unknown_style_and_non_string_prompt(tiny_model):
    with pytest.raises(ValueError, match="'yaml'"):
        format_prompt(tiny_model, "hi", style="yaml")
    with pytest.raises(TypeError, match="42"):
        format_prompt(tiny_model, 42)


def test_tokenize_left_pads_and_masks(tiny_model):
    ids, mask = tokenize_prompts(tiny_model, ["a", "a much longer prompt"])
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and bool(mask[1].all())
    n_pad = int((mask[0] == 0).sum())
    assert bool((ids[0, :n_pad] == tiny_model.tokenizer.pad_token_id).all())
    alone, _ = tokenize_prompts(tiny_model, ["a"])
    assert ids[0, n_pad:].tolist() == alone[0].tolist()
    # The tokenizer's own padding side is left as it was.
    assert tiny_model.tokenizer.padding_side == "right"


@pytest.mark.parametrize("bad", [[], "just a string"])
def test_tokenize_rejects_empty_or_bare_string(tiny_model, bad):
    with pytest.raises(ValueError, match="non-empty list"):
        tokenize_prompts(tiny_model, bad)
