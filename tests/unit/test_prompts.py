"""Prompt formatting and left-padded tokenization."""

from __future__ import annotations

import pytest

from workbench import format_prompt, load_model
from workbench.errors import ArgumentTypeError, InvalidArgumentError, PromptFormatError
from workbench.model.prompts import encode_prompts, tokenize_prompts


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


def test_unknown_style_is_named_with_the_choices(tiny_model):
    with pytest.raises(
        InvalidArgumentError, match=r"style 'yaml' is not one of \('chat', 'plain'\)"
    ):
        format_prompt(tiny_model, "hi", style="yaml")


@pytest.mark.parametrize(
    ("bad", "shown"), [(42, "int 42"), (b"hi", "bytes b'hi'"), (None, "NoneType None")]
)
def test_a_prompt_that_is_not_a_str_is_named_with_its_type(tiny_model, bad, shown):
    with pytest.raises(ArgumentTypeError) as err:
        format_prompt(tiny_model, bad)
    assert str(err.value) == f"prompt must be a str, got {shown}"
    with pytest.raises(ArgumentTypeError) as err:
        encode_prompts(tiny_model, ["fine", bad])
    assert str(err.value) == f"prompt 1 must be a str, got {shown}"
    with pytest.raises(ArgumentTypeError) as err:
        tokenize_prompts(tiny_model, [bad])
    assert str(err.value) == f"prompt 0 must be a str, got {shown}"


def test_a_system_message_that_is_not_a_str(tiny_model):
    with pytest.raises(ArgumentTypeError, match="system must be a str, got bytes"):
        format_prompt(tiny_model, "hi", system=b"be brief")


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


def test_tokenize_rejects_an_empty_list(tiny_model):
    with pytest.raises(InvalidArgumentError, match="non-empty list of str, got an empty one"):
        tokenize_prompts(tiny_model, [])


@pytest.mark.parametrize("bare", ["just a string", b"just bytes"])
def test_a_bare_prompt_where_a_list_belongs_says_to_wrap_it(tiny_model, bare):
    # Iterating a bare str would tokenize every character as its own prompt.
    for call in (tokenize_prompts, encode_prompts):
        with pytest.raises(ArgumentTypeError) as err:
            call(tiny_model, bare)
        message = str(err.value)
        assert f"got a bare {type(bare).__name__} {bare!r}" in message
        assert "wrap one prompt in a list" in message
