"""Reading the residual stream at chosen positions, batched and memory-bounded.

Instead of caching whole ``[batch, pos, d_model]`` activations for every hook, a
forward hook on each requested layer keeps only the reduced read position(s) and
moves them to the CPU; the forward pass stops after the last requested layer.
Memory therefore grows with prompts x layers x d_model, not with sequence length.

`read_layers` is the reader underneath: it runs token lists in left-padded batches
with a hook on each layer, stops after the deepest one, and hands every batch's
activation at each layer, with its attention mask, to a callback that keeps what it
needs (`read_tokens` keeps the read position; ``analyses.geometry.residual_norms``
keeps the norms of the non-pad positions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model import kv
from workbench.model.hooks import check_hooks, hooks_held, refuse_under_per_row_steer
from workbench.model.info import check_model
from workbench.model.prompts import check_context, encode_prompts, pad_left
from workbench.options import (
    RESID_HOOK,
    check_bool,
    check_hook_template,
    check_int,
    check_read_position,
    int_list,
)


class _StopForward(Exception):
    """Raised by the hook of the last needed layer to skip the rest of the model."""


def check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    """Validate layer indices against the model (None means every layer).

    Example:
        >>> check_layers(model, [2, 0])
        [2, 0]
    """
    n_layers = check_model(model).cfg.n_layers
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, Sequence) and not isinstance(layers, (str, bytes)) and not layers:
        raise InvalidArgumentError("layers is empty; pass None for every layer")
    layers = int_list("layers", layers, "layer")
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InvalidArgumentError(
                f"layer {layer!r} is out of range: the model has {n_layers} layers (0..{n_layers - 1})"
            )
    return layers


def reduce_positions(
    x: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
    position: str | int,
) -> Float[Tensor, "batch d_model"]:
    """Reduce left-padded activations to one vector per row at the read position."""
    if position == "last":
        return x[:, -1]
    if position == "mean":
        m = attention_mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1)
    return x[:, -position:].mean(1)


def shared_prefix_length(token_lists: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Length of the token prefix common to all lists, leaving >= `keep` tokens in each."""
    first = token_lists[0]
    n = min(len(t) for t in token_lists) - keep
    for i in range(max(n, 0)):
        tok = first[i]
        if any(t[i] != tok for t in token_lists):
            return i
    return max(n, 0)


def read_residuals(
    model: Any,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    hook_name: str = RESID_HOOK,
    prompt_style: str | None = None,
    share_prefix: bool = True,
    progress: bool = False,
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """Residual stream of formatted prompts at one read position, for several layers.

    Args:
        prompts: already formatted prompts (see `format_prompt`).
        layers: layer indices (default: all), in the order of the output's second axis.
        position: ``"last"`` (the token right before the answer), ``"mean"``, or an
            int k for the mean over the last k tokens.
        hook_name: hook template with ``{layer}``; ``blocks.{layer}.hook_resid_post``.
        prompt_style: the style the prompts were formatted in (default: the
            model's); it decides whether a BOS token is added.
        share_prefix: run the token prefix shared by all prompts (typically the chat
            template's system prompt) once and reuse its KV cache. Exact up to float
            rounding; not used for ``position="mean"``, which needs every position.

    Returns:
        float32 CPU tensor ``[n_prompts, len(layers), d_model]``.

    Example:
        >>> acts = read_residuals(model, [format_prompt(model, "Hi")], layers=[0, 2])
        >>> acts.shape
        torch.Size([1, 2, 32])
    """
    refuse_under_per_row_steer("read_residuals")
    token_lists = encode_prompts(model, prompts, style=prompt_style)
    check_context(model, token_lists)
    return read_tokens(
        model,
        token_lists,
        layers=layers,
        position=position,
        batch_size=batch_size,
        hook_name=hook_name,
        share_prefix=share_prefix,
        progress=progress,
    )


def read_tokens(
    model: Any,
    token_lists: list[list[int]],
    *,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    hook_name: str = RESID_HOOK,
    share_prefix: bool = True,
    progress: bool = False,
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """`read_residuals` of prompts already tokenized and checked with `check_context`."""
    refuse_under_per_row_steer("read_residuals")
    layers = check_layers(model, layers)
    position = check_read_position(position)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_bool("share_prefix", share_prefix)
    check_bool("progress", progress)
    names = [check_hook_template(hook_name).format(layer=layer) for layer in layers]
    check_hooks(model, names)
    shortest = min(len(t) for t in token_lists)
    if isinstance(position, int) and shortest < position:
        raise InvalidArgumentError(
            f"position={position} reads the last {position} tokens but a prompt has only {shortest}"
        )
    prefix = 0
    if share_prefix and position != "mean" and len(token_lists) > 1:
        prefix = shared_prefix_length(
            token_lists, keep=position if isinstance(position, int) else 1
        )
    out = torch.empty(len(token_lists), len(layers), model.cfg.d_model, dtype=torch.float32)

    def keep(col: int, x: Tensor, mask: Tensor, rows: slice) -> None:
        out[rows, col] = reduce_positions(x, mask, position).float().cpu()

    read_layers(
        model,
        token_lists,
        keep,
        layers=layers,
        hook_name=hook_name,
        batch_size=batch_size,
        prefix=prefix,
        progress=progress,
        check_names=False,
    )
    return out


def _check_prefix(token_lists: list[list[int]], prefix: Any) -> int:
    prefix = check_int("prefix", prefix, low=0)
    if prefix and prefix > shared_prefix_length(token_lists):
        raise InvalidArgumentError(
            f"prefix={prefix} tokens are not shared by every token list with one token "
            f"left after them (at most {shared_prefix_length(token_lists)} are)"
        )
    return prefix


def read_layers(
    model: Any,
    token_lists: Sequence[Sequence[int]],
    each: Callable[[int, Tensor, Tensor, slice], None],
    *,
    layers: Sequence[int] | None = None,
    hook_name: str = RESID_HOOK,
    batch_size: int = 16,
    prefix: int = 0,
    progress: bool = False,
    check_names: bool = True,
) -> list[int]:
    """Run token lists in left-padded batches, handing each layer's activation to `each`.

    For every batch and every layer, ``each(col, x, mask, rows)`` is called from the
    layer's hook, in the order the model computes the layers: `col` indexes `layers`,
    `x` is the activation ``[batch, pos, d_model]`` at ``hook_name.format(layer=...)``,
    `mask` the batch's attention mask ``[batch, pos]`` (0 on the left padding) and
    `rows` the slice of `token_lists` in the batch. The forward pass stops right after
    the deepest of `layers`, so later layers and the unembedding never run. `x` lives
    on the model's device under ``torch.inference_mode``; keep a reduced copy of it,
    not `x` itself, and memory stays bounded by what `each` keeps.

    Args:
        token_lists: prompts already tokenized and checked with `check_context`.
        layers: layer indices (default: all); `col` is the position in this list.
        prefix: run the first `prefix` tokens, which every list must share, once and
            reuse their KV cache (`shared_prefix_length`); `x` and `mask` then cover
            only the tokens after them. 0 runs every token.
        check_names: check the hook names against the model (`check_hooks`); False
            when the caller just did, since the bridge rebuilds its hook list on
            every look-up.

    Returns:
        The validated `layers`.

    Example:
        >>> ids = encode_prompts(model, [format_prompt(model, "Hi"), format_prompt(model, "Hello")])
        >>> seen = []
        >>> read_layers(model, ids, lambda col, x, mask, rows: seen.append((col, x.shape[0])), layers=[2, 0])
        [2, 0]
        >>> seen  # layer 0 runs first, and the pass stops after layer 2
        [(1, 2), (0, 2)]
    """
    refuse_under_per_row_steer("read_layers")
    layers = check_layers(model, layers)
    batch_size = check_int("batch_size", batch_size, low=1)
    progress = check_bool("progress", progress)
    names = [check_hook_template(hook_name).format(layer=layer) for layer in layers]
    if check_bool("check_names", check_names):
        check_hooks(model, names)
    if not callable(each):
        raise ArgumentTypeError(f"each must be a function, got {type(each).__name__}")
    token_lists = [list(t) for t in token_lists]
    if not token_lists:
        raise InvalidArgumentError("token_lists is empty; pass at least one tokenized prompt")
    prefix = _check_prefix(token_lists, prefix)
    # Hooks are added once for all batches: adding them resolves the bridge's hook
    # aliases, which costs more than a small model's forward pass if done per batch.
    batch: dict[str, Any] = {"rows": None}
    stop_col = layers.index(max(layers))
    n_needed = max(layers) + 1
    d_model = model.cfg.d_model

    def hook(x: Tensor, hook: Any, col: int) -> None:
        # Bridge hooks report their canonical name (blocks.l.hook_out), not the
        # alias we registered, so the column is bound per hook instead.
        if x.ndim != 3 or x.shape[-1] != d_model:
            raise InvalidArgumentError(
                f"reading needs a [batch, pos, d_model={d_model}] activation; hook "
                f"{names[col]!r} carries shape {tuple(x.shape)}"
            )
        if batch["rows"] is not None:
            each(col, x, batch["mask"], batch["rows"])
        if col == stop_col:
            # Neither backend's stop_at_layer skips the unembedding when the last
            # layer is needed; stopping here saves it (a quarter of a small model).
            raise _StopForward

    hooks = [(n, partial(hook, col=i)) for i, n in enumerate(names)]
    device = model.cfg.device
    starts = range(0, len(token_lists), batch_size)
    with torch.inference_mode(), hooks_held(model, hooks):
        if prefix:
            prefix_cache = kv.new_cache(model, 1)
            prefix_ids = torch.tensor([token_lists[0][:prefix]], device=device)
            with contextlib.suppress(_StopForward):
                kv.forward(model, prefix_ids, torch.ones_like(prefix_ids), prefix_cache)
        for start in tqdm(starts, desc="reading activations", disable=not progress, leave=False):
            chunk = [t[prefix:] for t in token_lists[start : start + batch_size]]
            input_ids, mask = pad_left(model, chunk)
            batch.update(rows=slice(start, start + len(chunk)), mask=mask)
            with contextlib.suppress(_StopForward):
                if prefix:
                    cache = kv.expand_cache(model, prefix_cache, len(chunk), n_needed)
                    ones = torch.ones(len(chunk), prefix, dtype=mask.dtype, device=device)
                    kv.forward(model, input_ids, torch.cat([ones, mask], dim=1), cache)
                else:
                    model(input_ids, attention_mask=mask)
    return layers
