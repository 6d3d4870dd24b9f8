"""Turning user text into model input: chat templates, plain Q/A format, left padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from .errors import PromptFormatError
from .models import model_info


def format_prompt(
    model: Any, text: str, *, style: str | None = None, system: str | None = None
) -> str:
    """Wrap a user message so the next token is the start of the model's answer.

    ``"chat"`` applies the tokenizer's chat template with the assistant turn opened;
    ``"plain"`` gives ``"Q: {text}\\nA:"`` (for base models). The default is the
    model's `ModelInfo.prompt_style`.

    Example:
        >>> format_prompt(model, "Name a colour.", style="plain")  # doctest: +SKIP
        'Q: Name a colour.\\nA:'
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a string, got {type(text).__name__}: {text!r}")
    style = style or model_info(model).prompt_style
    if style == "plain":
        prefix = f"{system}\n\n" if system else ""
        return f"{prefix}Q: {text}\nA:"
    if style != "chat":
        raise ValueError(f"prompt style {style!r} is not one of ('chat', 'plain')")
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            f"model {model_info(model).name!r} has no chat template, so style='chat' "
            "cannot be used; pass style='plain' or pre-formatted prompts"
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(model: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of formatted prompts, unpadded.

    Special tokens (BOS) are added only for plain prompts: a chat template already
    writes the ones it wants.
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    add_special = model_info(model).prompt_style == "plain"
    return model.tokenizer(list(prompts), add_special_tokens=add_special)["input_ids"]


def pad_left(
    model: Any, token_lists: Sequence[Sequence[int]]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` on the model's device.

    Left padding puts every prompt's last token in the final column, which is where
    reading and generation both happen.
    """
    width = max(len(t) for t in token_lists)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(t)) + list(t) for t in token_lists])
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in token_lists])
    device = model.cfg.device
    return ids.to(device), mask.to(device)


def tokenize_prompts(
    model: Any, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Tokenize formatted prompts, left-padded, on the model's device.

    Returns:
        ``(input_ids, attention_mask)``, both ``[batch, pos]``.

    Example:
        >>> ids, mask = tokenize_prompts(model, [format_prompt(model, "Hi")])  # doctest: +SKIP
    """
    return pad_left(model, encode_prompts(model, prompts))
