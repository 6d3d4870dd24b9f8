"""What the workbench knows about a loaded model, and the check that an object is one.

`load_model` records a `ModelInfo` on the model it returns; `model_info` reads it,
or derives it for a TransformerLens model built by hand. `check_model` is the one
test that an argument is a TransformerLens model at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import ArgumentTypeError

_INFO_ATTR = "_workbench_info"


@dataclass(frozen=True)
class ModelInfo:
    """What the workbench knows about a loaded model.

    Attributes:
        name: the name the model was loaded by (embedded name, directory or hub id).
        backend: ``"bridge"`` or ``"hooked"``.
        prompt_style: ``"chat"`` (tokenizer's chat template) or ``"plain"`` (``Q: …\\nA:``).
        fingerprint: short hash of the token embedding matrix, identifying the weights.
    """

    name: str
    backend: str
    prompt_style: str
    fingerprint: str


def embedding_fingerprint(weight: torch.Tensor) -> str:
    """A short hash of a token-embedding matrix ``[d_vocab, d_model]``: which weights these are.

    Example:
        >>> len(embedding_fingerprint(torch.zeros(8, 4)))
        16
    """
    # A strided sample of rows is enough to tell checkpoints apart and costs
    # microseconds even for 256k-token vocabularies.
    rows = weight[:: max(1, weight.shape[0] // 64)].detach().to("cpu", torch.float32)
    h = hashlib.sha256(str(tuple(weight.shape)).encode())
    h.update(rows.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def attach_info(model: Any, info: ModelInfo) -> None:
    """Record `info` on `model` (used by `load_model`, and for models built by hand)."""
    object.__setattr__(model, _INFO_ATTR, info)


def recorded_info(model: Any) -> ModelInfo | None:
    """The `ModelInfo` that `load_model` recorded on `model`, or None for one built by hand.

    Example:
        >>> recorded_info(model).backend
        'bridge'
    """
    return getattr(model, _INFO_ATTR, None)


def check_model(model: Any) -> Any:
    """`model` if it is a TransformerLens model (hooks, config, tokenizer), else raise."""
    if not all(hasattr(model, name) for name in ("hooks", "hook_dict", "cfg", "tokenizer")):
        raise ArgumentTypeError(
            "model must be a TransformerLens model from workbench.load_model, got "
            f"{type(model).__name__} {model!r:.60}"
        )
    return model


def model_info(model: Any) -> ModelInfo:
    """The `ModelInfo` of a model, derived on the fly for models not from `load_model`.

    Example:
        >>> model_info(model).prompt_style  # doctest: +SKIP
        'chat'
    """
    info = getattr(model, _INFO_ATTR, None)
    if info is not None:
        return info
    check_model(model)
    from transformer_lens import HookedTransformer

    backend = "hooked" if isinstance(model, HookedTransformer) else "bridge"
    weight = (
        model.W_E if backend == "hooked" else model.original_model.get_input_embeddings().weight
    )
    tokenizer = getattr(model, "tokenizer", None)
    style = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    name = getattr(model.cfg, "model_name", "unknown")
    info = ModelInfo(str(name), backend, style, embedding_fingerprint(weight))
    attach_info(model, info)
    return info
