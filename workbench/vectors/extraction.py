"""Computing instruction vectors from pairs: read both sides, take mean differences."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model.hooks import refuse_under_per_row_steer
from workbench.model.info import model_info
from workbench.model.prompts import check_context, encode_prompts, format_prompt
from workbench.options import RESID_HOOK, PromptStyle, check_bool, check_choice, check_read_position

from .activations import check_layers, read_tokens
from .ifeval import check_instruction
from .instruction_vector import InstructionVector
from .pairs import Pair, as_pairs


def pair_activations(
    model: Any,
    pairs: Sequence[Pair | tuple[str, str]],
    *,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    prompt_style: str | None = None,
    hook_name: str = RESID_HOOK,
    progress: bool = False,
) -> tuple[Float[Tensor, "n_pairs n_layers d_model"], Float[Tensor, "n_pairs n_layers d_model"]]:
    """Residual stream of both sides of each pair: ``(with, without)``.

    Both sides are formatted with `format_prompt` in `prompt_style` (default: the
    model's); prompts of similar length are batched together to waste less padding.

    Example:
        >>> acts_with, acts_without = pair_activations(model, make_pairs("lowercase", n=2))
        >>> acts_with.shape
        torch.Size([2, 3, 32])
    """
    refuse_under_per_row_steer("pair_activations")
    pairs = as_pairs(pairs)
    style = model_info(model).prompt_style if prompt_style is None else prompt_style
    check_choice("prompt_style", style, PromptStyle)
    texts = [p.with_instruction for p in pairs] + [p.without_instruction for p in pairs]
    prompts = [format_prompt(model, t, style=style) for t in texts]
    token_lists = encode_prompts(model, prompts, style=style)
    n = len(pairs)
    check_context(
        model,
        token_lists,
        lambda i: f"pair {i % n}'s {'with' if i < n else 'without'}-instruction prompt",
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    acts_sorted = read_tokens(
        model,
        [token_lists[i] for i in order],
        layers=layers,
        position=position,
        batch_size=batch_size,
        hook_name=hook_name,
        progress=progress,
    )
    acts = torch.empty_like(acts_sorted)
    acts[torch.tensor(order)] = acts_sorted
    return acts[: len(pairs)], acts[len(pairs) :]


@dataclass(frozen=True, eq=False)
class DifferenceStats:
    """Aggregates of paired activations (see `difference_stats`)."""

    diffs: Float[Tensor, "n_layers d_model"]
    directions: Float[Tensor, "n_layers d_model"]
    mean_proj_with: Float[Tensor, " n_layers"]
    mean_proj_without: Float[Tensor, " n_layers"]


def difference_stats(
    acts_with: Float[Tensor, "n_pairs n_layers d_model"],
    acts_without: Float[Tensor, "n_pairs n_layers d_model"],
) -> DifferenceStats:
    """Mean difference, unit direction and mean projections per layer (pure function).

    Example:
        >>> stats = difference_stats(torch.ones(4, 2, 8), torch.zeros(4, 2, 8))
        >>> [round(x, 4) for x in stats.mean_proj_with.tolist()]  # sqrt(8) at both layers
        [2.8284, 2.8284]
    """
    if acts_with.shape != acts_without.shape:
        raise InvalidArgumentError(
            f"with/without activations differ in shape: {tuple(acts_with.shape)} vs "
            f"{tuple(acts_without.shape)}"
        )
    if acts_with.shape[0] == 0:
        raise InvalidArgumentError("no pairs: activations have zero rows")
    diffs = (acts_with - acts_without).mean(0)
    norms = diffs.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        zero = torch.nonzero(norms[:, 0] == 0).flatten().tolist()
        raise InvalidArgumentError(
            f"the mean difference is exactly zero at layer rows {zero}; no direction"
        )
    directions = diffs / norms
    return DifferenceStats(
        diffs=diffs,
        directions=directions,
        mean_proj_with=torch.einsum("nld,ld->nl", acts_with, directions).mean(0),
        mean_proj_without=torch.einsum("nld,ld->nl", acts_without, directions).mean(0),
    )


def _labels(
    pairs: list[Pair], instruction_id: Any, kwargs: Any
) -> tuple[str | None, dict[str, Any]]:
    """The vector's instruction id and kwargs, checked before any forward pass.

    Given ones override what the pairs carry; pairs of one id must then agree on its
    kwargs, since the vector records one set. The result must be storable as JSON and,
    with an id, accepted by the scorer (a sweep scores with them).
    """
    if instruction_id is not None and not isinstance(instruction_id, str):
        raise ArgumentTypeError(f"instruction_id must be a str or None, got {instruction_id!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ArgumentTypeError(f"kwargs must be a mapping, got {kwargs!r}")
    ids = {p.instruction_id for p in pairs}
    if instruction_id is None:
        instruction_id = pairs[0].instruction_id if len(ids) == 1 else None
    if kwargs is None:
        seen = {json.dumps(dict(p.kwargs), sort_keys=True, default=repr) for p in pairs}
        if instruction_id is not None and len(ids) == 1 and len(seen) > 1:
            raise InvalidArgumentError(
                f"the pairs of {instruction_id!r} carry {len(seen)} different kwargs "
                f"({sorted(seen)[:2]}, ...); the vector records one set: pass kwargs=..."
            )
        kwargs = pairs[0].kwargs
    try:
        json.dumps(dict(kwargs), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"kwargs {kwargs!r} cannot be stored as JSON: {e}") from e
    if instruction_id is not None:
        check_instruction(instruction_id, kwargs)
    return instruction_id, dict(kwargs)


def _architecture(model: Any) -> str:
    cfg = model.cfg
    arch = getattr(cfg, "original_architecture", None) or getattr(cfg, "architecture", None)
    return str(arch or "")


def compute_instruction_vector(
    model: Any,
    pairs: Sequence[Pair | tuple[str, str]],
    *,
    instruction_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    keep_pair_diffs: bool = False,
    prompt_style: str | None = None,
    progress: bool = False,
) -> InstructionVector:
    """Mean residual difference between with- and without-instruction prompts.

    Both sides of each pair are formatted (chat template with the assistant turn
    opened, or plain Q/A), then ``blocks.{l}.hook_resid_post`` is read at `position`
    (default: the last prompt token) for every layer in `layers` (default: all).
    The prompt style and read position are stored in the vector, so diagnostics
    read held-out pairs the same way.

    Args:
        pairs: `Pair`s (e.g. from `make_pairs`, carrying instruction id and kwargs)
            or ``(with, without)`` strings.
        instruction_id, kwargs: override what the pairs carry.
        keep_pair_diffs: keep the per-pair differences (for the diagnostics).

    Returns:
        An `InstructionVector` with ``diffs``/``directions`` of shape
        ``[len(layers), d_model]``.

    Example:
        >>> vec = compute_instruction_vector(model, make_pairs("one_sentence", n=4))
        >>> vec.diffs.shape, vec.prompt_style, vec.position
        (torch.Size([3, 32]), 'chat', 'last')
    """
    pairs = as_pairs(pairs)
    layers = check_layers(model, layers)
    position = check_read_position(position)
    check_bool("keep_pair_diffs", keep_pair_diffs)
    style = model_info(model).prompt_style if prompt_style is None else prompt_style
    instruction_id, kwargs = _labels(pairs, instruction_id, kwargs)
    acts_with, acts_without = pair_activations(
        model,
        pairs,
        layers=layers,
        position=position,
        batch_size=batch_size,
        prompt_style=style,
        progress=progress,
    )
    stats = difference_stats(acts_with, acts_without)
    info = model_info(model)
    return InstructionVector(
        diffs=stats.diffs,
        directions=stats.directions,
        mean_proj_with=stats.mean_proj_with,
        mean_proj_without=stats.mean_proj_without,
        layers=tuple(layers),
        n_pairs=len(pairs),
        model_name=info.name,
        fingerprint=info.fingerprint,
        model_n_layers=model.cfg.n_layers,
        architecture=_architecture(model),
        instruction_id=instruction_id,
        kwargs=kwargs,
        position=position,
        prompt_style=style,
        pair_diffs=(acts_with - acts_without) if keep_pair_diffs else None,
    )
