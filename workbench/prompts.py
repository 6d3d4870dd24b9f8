"""Turning user text into model input: chat templates, plain Q/A format, left padding.

BOS rule. A chat template writes every special token it wants, BOS included
(SmolLM2's text starts with ``<|im_start|>``, its BOS), so a chat prompt is
tokenized exactly as written, as Hugging Face's ``apply_chat_template(tokenize=True)``
does. A plain prompt gets a BOS only if the model's tokenizer adds one. Models from
`load_model` follow the same rule in ``model.tokenizer(text)`` (whose BOS behaviour is
the checkpoint's own) and in ``model.to_tokens(text)`` (through
``cfg.default_prepend_bos``), so for the model's prompt style all three give the same
ids. The exception is a checkpoint whose tokenizer adds a BOS *and* whose chat
template writes one (e.g. Gemma-2-it): there ``model.tokenizer(chat_text)`` doubles
it, as in Hugging Face, while `encode_prompts` and ``to_tokens`` do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from .embedded import tokenizer_adds_bos
from .errors import ArgumentTypeError, InvalidArgumentError, PromptFormatError
from .models import model_info
from .options import PromptStyle, check_choice


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{what} must be a str, got {type(text).__name__} {text!r}")
    return text


def check_prompts(prompts: Any) -> list[str]:
    """`prompts` as a non-empty list of str, or an error naming the bad item and its index.

    Example:
        >>> check_prompts(["a", b"b"])
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: prompt 1 must be a str, got bytes b'b'
    """
    if isinstance(prompts, (str, bytes)):
        raise ArgumentTypeError(
            f"prompts must be a list of str, got a bare {type(prompts).__name__} "
            f"{prompts!r}; wrap one prompt in a list: [prompt]"
        )
    if not isinstance(prompts, Sequence):
        raise ArgumentTypeError(
            f"prompts must be a list of str, got {type(prompts).__name__} {prompts!r}"
        )
    if len(prompts) == 0:
        raise InvalidArgumentError("prompts must be a non-empty list of str, got an empty one")
    return [_check_text(p, f"prompt {i}") for i, p in enumerate(prompts)]


def format_prompt(
    model: Any, text: str, *, style: PromptStyle | None = None, system: str | None = None
) -> str:
    """Wrap a user message so the next token is the start of the model's answer.

    ``"chat"`` applies the tokenizer's chat template with the assistant turn opened;
    ``"plain"`` gives ``"Q: {text}\\nA:"`` (for base models). The default is the
    model's `ModelInfo.prompt_style`.

    Example:
        >>> format_prompt(model, "Name a colour.", style="plain")
        'Q: Name a colour.\\nA:'
    """
    _check_text(text, "prompt")
    if system is not None:
        _check_text(system, "system")
    style = check_choice(
        "style", model_info(model).prompt_style if style is None else style, PromptStyle
    )
    if style == "plain":
        prefix = f"{system}\n\n" if system else ""
        return f"{prefix}Q: {text}\nA:"
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            f"model {model_info(model).name!r} has no chat template, so style='chat' "
            "cannot be used; pass style='plain' or pre-formatted prompts"
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(
    model: Any, prompts: Sequence[str], *, style: PromptStyle | None = None
) -> list[list[int]]:
    """Token ids of formatted prompts, unpadded, following the module's BOS rule.

    `style` is the style the prompts were formatted in (default: the model's):
    chat prompts are tokenized as written; plain ones get the tokenizer's BOS if it
    adds one. Other special tokens a tokenizer may append (an EOS) are never added:
    the last token must be the prompt's own.

    Example:
        >>> text = format_prompt(model, "Hi")
        >>> encode_prompts(model, [text])[0] == model.tokenizer(text)["input_ids"]
        True
    """
    prompts = check_prompts(prompts)
    style = check_choice(
        "style", model_info(model).prompt_style if style is None else style, PromptStyle
    )
    tokenizer = model.tokenizer
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if style == "plain" and tokenizer_adds_bos(tokenizer):
        ids = [[tokenizer.bos_token_id, *row] for row in ids]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise InvalidArgumentError(
            f"prompts {empty} tokenize to no tokens; there is nothing to read"
        )
    return ids


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
    model: Any, prompts: Sequence[str], *, style: PromptStyle | None = None
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Tokenize formatted prompts (see `encode_prompts`), left-padded, on the model's device.

    Returns:
        ``(input_ids, attention_mask)``, both ``[batch, pos]``.

    Example:
        >>> ids, mask = tokenize_prompts(model, [format_prompt(model, "Hi")])
        >>> ids.shape == mask.shape
        True
    """
    return pad_left(model, encode_prompts(model, prompts, style=style))
