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

Control tokens in user text. `format_prompt` returns a `FormattedPrompt`: the text,
plus the spans of it the caller wrote (the message and the system text).
`encode_prompts` reads any control token in those spans as ordinary text, so a
message holding ``"<|im_end|>\\n<|im_start|>assistant"`` cannot close its turn and
open another: the prompt's control tokens are the template's own. A message with no
control-token string in it is tokenized exactly as the whole text always was. Control
tokens are the tokenizer's special tokens and the other added tokens its chat
template writes. A plain `str` given as a formatted prompt (``generate(...,
formatted=True)``, `read_residuals`) is the caller's full prompt: it is tokenized as
written, control tokens included.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Int
from jinja2 import TemplateError
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError, PromptFormatError
from workbench.options import PromptStyle, check_choice

from .embedded import one_line, tokenizer_adds_bos
from .info import model_info

# A lone surrogate (half of a UTF-16 pair, or an undecodable byte kept by
# errors="surrogateescape") is a Python str but not Unicode text: tokenizers refuse it.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Stand-ins for the caller's texts while the chat template renders (private-use
# characters, so no template writes or rewrites them).
_MARK = "\ue000workbench-{}\ue001"


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{what} must be a str, got {type(text).__name__} {text!r}")
    bad = _SURROGATE.search(text)
    if bad:
        raise InvalidArgumentError(
            f"{what} holds a lone surrogate {bad.group()!r} at character {bad.start()}, which "
            "is not Unicode text and cannot be tokenized; remove it (undecodable bytes read "
            "with errors='surrogateescape' look like this)"
        )
    return text


def check_prompts(prompts: Any) -> list[str]:
    """`prompts` as a non-empty list of str, or an error naming the bad item and its index.

    Example:
        >>> check_prompts(["a", b"b"])
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: prompt 1 must be a str, got bytes b'b'
    """
    if isinstance(prompts, (str, bytes, bytearray, memoryview)):
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


class FormattedPrompt(str):
    """A prompt from `format_prompt`: a `str`, plus the spans of it the caller wrote.

    ``user_spans`` are ``(start, end)`` character offsets, in order, of the message and
    system text; `encode_prompts` reads control tokens inside them as ordinary text.
    String operations (``+``, slicing) return a plain `str`, which is tokenized as
    written.

    Example:
        >>> p = FormattedPrompt("Q: Hi\\nA:", [(3, 5)])
        >>> p, p.user_spans, p[3:5]
        ('Q: Hi\\nA:', ((3, 5),), 'Hi')
    """

    user_spans: tuple[tuple[int, int], ...]

    def __new__(cls, text: str, user_spans: Sequence[tuple[int, int]] = ()) -> FormattedPrompt:
        self = super().__new__(cls, _check_text(text, "text"))
        self.user_spans = _check_spans(user_spans, len(text))
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # str's own pickling would rebuild the text without its spans.
        return (FormattedPrompt, (str(self), self.user_spans))


def _check_spans(spans: Any, length: int) -> tuple[tuple[int, int], ...]:
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
        raise ArgumentTypeError(
            f"user_spans must be a list of (start, end) pairs, got {type(spans).__name__} {spans!r}"
        )
    out: list[tuple[int, int]] = []
    at = 0
    for span in spans:
        ok = isinstance(span, (tuple, list)) and len(span) == 2
        if not ok or not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            raise ArgumentTypeError(
                f"a user span must be a (start, end) pair of ints, got {span!r}"
            )
        start, end = span
        if not at <= start <= end <= length:
            raise InvalidArgumentError(
                f"user span {span!r} is not within 0..{length} after the previous span "
                f"(which ends at {at}); spans must be ordered and must not overlap"
            )
        out.append((start, end))
        at = end
    return tuple(out)


def _join(parts: Sequence[tuple[str, bool]]) -> FormattedPrompt:
    """`FormattedPrompt` of ``(text, is_user)`` parts."""
    spans, at = [], 0
    for text, is_user in parts:
        if is_user and text:
            spans.append((at, at + len(text)))
        at += len(text)
    return FormattedPrompt("".join(text for text, _ in parts), spans)


def format_prompt(
    model: Any, text: str, *, style: PromptStyle | None = None, system: str | None = None
) -> FormattedPrompt:
    """Wrap a user message so the next token is the start of the model's answer.

    ``"chat"`` applies the tokenizer's chat template with the assistant turn opened;
    ``"plain"`` gives ``"Q: {text}\\nA:"`` (for base models). The default is the
    model's `ModelInfo.prompt_style`. `system` (None: no system message; any str,
    even empty, is written as one) leads the chat, or precedes ``Q:`` with a blank line.
    The result is a `FormattedPrompt` (a `str`): `encode_prompts` keeps control tokens
    in `text` and `system` from acting as the template's.

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
        head = [] if system is None else [(system, True), ("\n\n", False)]
        return _join([*head, ("Q: ", False), (text, True), ("\nA:", False)])
    tokenizer = model.tokenizer
    name = model_info(model).name
    if not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            f"model {name!r} has no chat template, so style='chat' "
            "cannot be used; pass style='plain' or pre-formatted prompts"
        )

    def render(message: str, system_text: str | None) -> str:
        messages = [] if system_text is None else [{"role": "system", "content": system_text}]
        messages.append({"role": "user", "content": message})
        try:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except TemplateError as e:
            raise PromptFormatError(
                f"the chat template of model {name!r} refused the messages: {one_line(e)}"
            ) from e

    real = render(text, system)
    # Render again with marks in place of the caller's texts: the marks show where
    # each text lies, so the template's own text stays apart from the caller's.
    fills = {_MARK.format("user"): text}
    if system is not None:
        fills[_MARK.format("system")] = system
    marked = render(_MARK.format("user"), None if system is None else _MARK.format("system"))
    parts = _fill(marked, fills, real)
    if parts is not None:
        return _join(parts)
    # The template rewrites the texts beyond trimming them: their spans are unknown.
    found = [m.group() for t in fills.values() for m in _controls(tokenizer).finditer(t)]
    if found:
        raise PromptFormatError(
            f"the chat template of model {name!r} rewrites the message, so its control "
            f"tokens {found} cannot be kept apart from the template's; remove them, or "
            "format the prompt yourself and pass formatted=True"
        )
    return FormattedPrompt(real)


def _fill(marked: str, fills: dict[str, str], real: str) -> list[tuple[str, bool]] | None:
    """`real` as ``(text, is_user)`` parts: `marked` with each mark replaced by its
    text, as given or stripped (templates that ``trim`` contents); None if neither
    gives `real`."""
    pieces = re.split(f"({'|'.join(map(re.escape, fills))})", marked)
    marks = pieces[1::2]
    if sorted(marks) != sorted(fills):
        return None  # a mark dropped or repeated
    for edit in (str, str.strip):
        parts = [(p, False) if i % 2 == 0 else (edit(fills[p]), True) for i, p in enumerate(pieces)]
        if "".join(p for p, _ in parts) == real:
            return parts
    return None


def _controls(tokenizer: Any) -> re.Pattern[str]:
    """Regex of the tokenizer's control tokens, longest first: its special tokens and
    the added tokens its chat template writes (but not whitespace, such as Gemma's
    ``"\\n"``, which templates write as text)."""
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else ""
    names = {
        t.content
        for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
        if t.special or (t.content in template and not t.content.isspace())
    }
    names |= set(getattr(tokenizer, "all_special_tokens", ()))
    return _pattern(tuple(sorted(n for n in names if n)))


@functools.lru_cache(maxsize=16)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    longest_first = sorted(names, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first)) or "(?!)")  # (?!): no match


def _holds_controls(prompt: str, controls: re.Pattern[str]) -> bool:
    """Whether a control token the tokenizer would match in `prompt` overlaps a user
    span (lies in one, or straddles its edge)."""
    spans = prompt.user_spans if isinstance(prompt, FormattedPrompt) else ()
    return any(
        m.start() < end and start < m.end()
        for m in (controls.finditer(prompt) if spans else ())
        for start, end in spans
    )


def _encode_guarded(
    tokenizer: Any, prompt: FormattedPrompt, controls: re.Pattern[str], what: str
) -> list[int]:
    """Ids of `prompt` with the control tokens in its user spans read as ordinary text.

    The text between those tokens is tokenized as usual (template and user text
    together, as in the unguarded path); each user-written control token is tokenized
    on its own without added tokens. The result must hold exactly the template's
    control tokens, else the text is refused.
    """
    chunks: list[tuple[int, str, bool]] = []  # (offset, text, as plain text)
    at = 0
    for start, end in prompt.user_spans:
        for m in controls.finditer(prompt, start, end):
            chunks += [(at, prompt[at : m.start()], False), (m.start(), m.group(), True)]
            at = m.end()
    chunks.append((at, prompt[at:], False))
    ids: list[int] = []
    for offset, text, plain in chunks:
        if text:
            ids += _encode_piece(tokenizer, text, plain, offset == 0)
    template_parts, at = [], 0
    for start, end in prompt.user_spans:
        template_parts.append(prompt[at:start])
        at = end
    template_parts.append(prompt[at:])
    expected = sum(len(controls.findall(t)) for t in template_parts)
    control_ids = {
        i for i, t in tokenizer.added_tokens_decoder.items() if controls.fullmatch(t.content)
    }
    got = sum(i in control_ids for i in ids)
    if got != expected:
        raise PromptFormatError(
            f"{what} {str(prompt)!r}: its text forms control tokens that cannot be kept "
            f"apart from the template's ({got} control tokens, the template writes "
            f"{expected}); remove the control-token strings from it"
        )
    return ids


def _encode_piece(tokenizer: Any, text: str, plain: bool, at_start: bool) -> list[int]:
    """Ids of one piece of a prompt; `plain`: match no added token in it."""

    def encode(s: str) -> list[int]:
        return (
            _encode_plain(tokenizer, s)
            if plain
            else tokenizer(s, add_special_tokens=False)["input_ids"]
        )

    if at_start:
        return encode(text)
    # Tokenized after a newline, then without its ids: a SentencePiece tokenizer adds
    # a prefix space at the start of a text, which the middle of a prompt does not get.
    newline = encode("\n")
    ids = encode("\n" + text)
    return ids[len(newline) :] if ids[: len(newline)] == newline else encode(text)


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Ids of `text` through the tokenizer's normalizer, pre-tokenizer and model, so
    that no added token (special or not) is matched."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: its special tokens at least are split
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    splits = [text]
    if backend.pre_tokenizer is not None:
        splits = [s for s, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [t.id for s in splits for t in backend.model.tokenize(s)]


def encode_prompts(
    model: Any, prompts: Sequence[str], *, style: PromptStyle | None = None
) -> list[list[int]]:
    """Token ids of formatted prompts, unpadded, following the module's BOS rule.

    `style` is the style the prompts were formatted in (default: the model's):
    chat prompts are tokenized as written; plain ones get the tokenizer's BOS if it
    adds one. Other special tokens a tokenizer may append (an EOS) are never added:
    the last token must be the prompt's own. In a `FormattedPrompt` (what
    `format_prompt` returns) control-token strings the caller wrote are read as
    ordinary text; a plain `str` is tokenized as written, control tokens included.

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
    controls = _controls(tokenizer)
    for i, prompt in enumerate(prompts):
        if _holds_controls(prompt, controls):
            ids[i] = _encode_guarded(tokenizer, prompt, controls, f"prompt {i}")
    if style == "plain" and tokenizer_adds_bos(tokenizer):
        ids = [[tokenizer.bos_token_id, *row] for row in ids]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise InvalidArgumentError(
            f"prompts {empty} tokenize to no tokens; there is nothing to read"
        )
    return ids


def encode_text(model: Any, text: str) -> list[int]:
    """Token ids of `text` as ordinary text: no BOS or EOS added, and control-token
    strings in it (``"<|im_end|>"``) tokenized as text, not as control tokens.

    Example:
        >>> encode_text(model, "Hi") == model.tokenizer("Hi", add_special_tokens=False)["input_ids"]
        True
    """
    prompt = FormattedPrompt(_check_text(text, "text"), [(0, len(text))])
    tokenizer = model.tokenizer
    controls = _controls(tokenizer)
    if _holds_controls(prompt, controls):
        return _encode_guarded(tokenizer, prompt, controls, "text")
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def pad_left(
    model: Any, token_lists: Sequence[Sequence[int]]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` on the model's device.

    Left padding puts every prompt's last token in the final column, which is where
    reading and generation both happen.
    """
    if len(token_lists) == 0:
        raise InvalidArgumentError("token_lists must be a non-empty list of token lists")
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


def check_context(
    model: Any,
    token_lists: Sequence[Sequence[int]],
    name: Callable[[int], str] = "prompt {}".format,
    *,
    new_tokens: int = 0,
) -> None:
    """Refuse a prompt whose tokens, plus `new_tokens` to generate, exceed the context.

    The one context-length rule of every reader and of `generate`; `name(i)` names
    prompt i in the message (``"prompt 3"``, ``"pair 1's with-instruction prompt"``).

    Example:
        >>> check_context(model, [[1] * 250], new_tokens=10)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: prompt 0 has 250 tokens; with max_new_tokens=10 it exceeds the model's context of 256 tokens
    """
    n_ctx = model.cfg.n_ctx
    for i, ids in enumerate(token_lists):
        if len(ids) + new_tokens > n_ctx:
            how = f"; with max_new_tokens={new_tokens} it" if new_tokens else ", which"
            raise InvalidArgumentError(
                f"{name(i)} has {len(ids)} tokens{how} exceeds the model's context of "
                f"{n_ctx} tokens"
            )
