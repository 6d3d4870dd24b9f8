"""Loading models into TransformerLens: embedded names, local checkpoints, hub ids.

Two backends expose the same TransformerLens API (`run_with_cache`, `hooks()`,
`blocks.{l}.hook_resid_post`, `cfg`, `tokenizer`):

- ``"bridge"`` (default): `TransformerBridge`, which wraps the Hugging Face modules.
  About 1.3x Hugging Face's own cost on CPU and works for any architecture
  TransformerLens has an adapter for.
- ``"hooked"``: `HookedTransformer`, re-implemented in TransformerLens. Decodes
  several times slower on CPU, but is what much existing interpretability code expects.

Both are loaded with the checkpoint's raw weights (no LayerNorm folding, no
centering) so that activations agree between them and with Hugging Face.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .embedded import EMBEDDED_MODELS, ensure_checkpoint
from .errors import UnknownModelError, UnsupportedBackendError

BACKENDS: tuple[str, ...] = ("bridge", "hooked")
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


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a torch floating-point dtype name")
    return resolved


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_source(name: str | Path) -> tuple[str, bool | None, str | None]:
    """Map a user-given name to a loadable path or hub id, its instruct flag if known,
    and its TransformerLens official name if it has one."""
    if not isinstance(name, (str, Path)):
        raise UnknownModelError(f"model name must be a string or path, got {name!r}")
    name = str(name)
    if name in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name]
        return str(ensure_checkpoint(name)), embedded.instruct, embedded.tl_name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownModelError(
                f"{str(path)!r} is a directory but holds no config.json, so it is not a "
                "Hugging Face checkpoint (save one with model.save_pretrained(dir))"
            )
        return str(path), None, None
    looks_like_path = name.startswith((".", "/", "~")) or path.suffix != ""
    if looks_like_path or "/" not in name or name.count("/") > 1:
        raise UnknownModelError(
            f"unknown model {name!r}: not an embedded model, not an existing checkpoint "
            f"directory, and not a Hugging Face id of the form 'org/name'. "
            f"Embedded models: {sorted(EMBEDDED_MODELS)}"
        )
    return name, None, None


def _embedding_fingerprint(weight: torch.Tensor) -> str:
    # A strided sample of rows is enough to tell checkpoints apart and costs
    # microseconds even for 256k-token vocabularies.
    rows = weight[:: max(1, weight.shape[0] // 64)].detach().to("cpu", torch.float32)
    h = hashlib.sha256(str(tuple(weight.shape)).encode())
    h.update(rows.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_bridge(
    source: str, device: torch.device, dtype: torch.dtype, tl_name: str | None = None
) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    except (ValueError, NotImplementedError, KeyError) as e:
        raise UnsupportedBackendError(
            f"backend='bridge' cannot load {source!r}: {e}. TransformerBridge needs an "
            "architecture TransformerLens has an adapter for."
        ) from e
    weight = model.original_model.get_input_embeddings().weight
    return model, _embedding_fingerprint(weight)


def _load_hooked(
    source: str, device: torch.device, dtype: torch.dtype, tl_name: str | None = None
) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import (
        convert_hf_model_config,
        get_pretrained_state_dict,
    )

    is_local = Path(source).is_dir()
    try:
        if not is_local:
            model = HookedTransformer.from_pretrained_no_processing(
                source, device=device, dtype=dtype
            )
            # No Hugging Face module here; TransformerLens may rescale W_E for some
            # architectures (Gemma), so this fingerprint can differ from the bridge's.
            fingerprint = _embedding_fingerprint(model.W_E)
        else:
            # HookedTransformer.from_pretrained only takes TransformerLens' list of
            # official names; its config and weight converters work on any supported
            # architecture, so build the model from them directly.
            from transformers import AutoModelForCausalLM, AutoTokenizer

            cfg_dict = convert_hf_model_config(tl_name or source)
            cfg = HookedTransformerConfig(**cfg_dict, dtype=dtype, device=str(device))
            hf = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            state_dict = get_pretrained_state_dict(tl_name or source, cfg, hf_model=hf)
            model = HookedTransformer(
                cfg, tokenizer=AutoTokenizer.from_pretrained(source), move_to_device=False
            )
            model.load_and_process_state_dict(
                state_dict,
                fold_ln=False,
                center_writing_weights=False,
                center_unembed=False,
                fold_value_biases=False,
                refactor_factored_attn_matrices=False,
            )
            model.to(device, print_details=False)
            # Fingerprint the checkpoint's own embedding, as the bridge does, so both
            # backends of one checkpoint agree (HookedTransformer rescales Gemma's W_E).
            fingerprint = _embedding_fingerprint(hf.get_input_embeddings().weight)
            del hf
    except (ValueError, NotImplementedError, KeyError, AttributeError) as e:
        raise UnsupportedBackendError(
            f"backend='hooked' cannot load {source!r}: {type(e).__name__}: {e}. "
            "HookedTransformer only supports architectures TransformerLens re-implements; "
            "use backend='bridge', which wraps the Hugging Face modules directly."
        ) from e
    return model, fingerprint


def load_model(
    name: str | Path = "smollm2-135m-instruct",
    *,
    backend: str = "bridge",
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    prompt_style: str | None = None,
) -> Any:
    """Load a model as a TransformerLens model, offline for embedded names.

    Args:
        name: an embedded model (``"smollm2-135m-instruct"``, ``"gemma-3-270m"``),
            a local Hugging Face checkpoint directory, or a hub id such as
            ``"google/gemma-2-2b-it"`` (downloads unless already in the HF cache).
        backend: ``"bridge"`` (TransformerBridge, default) or ``"hooked"``
            (HookedTransformer).
        device: defaults to CUDA when available, else CPU.
        dtype: torch dtype or its name; defaults to float32.
        prompt_style: ``"chat"`` or ``"plain"``; defaults to chat for instruction-tuned
            models with a chat template and plain otherwise.

    Returns:
        A `TransformerBridge` or `HookedTransformer` in eval mode; `model_info(model)`
        returns its `ModelInfo`.

    Example:
        >>> model = load_model()  # doctest: +SKIP
        >>> _, cache = model.run_with_cache("Hi", names_filter="blocks.3.hook_resid_post")  # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if prompt_style not in (None, "chat", "plain"):
        raise ValueError(f"prompt_style {prompt_style!r} is not one of (None, 'chat', 'plain')")
    torch_dtype = _resolve_dtype(dtype)
    torch_device = _resolve_device(device)
    source, instruct, tl_name = _resolve_source(name)
    with warnings.catch_warnings():
        # TransformerLens warns at length about features we do not use
        # (e.g. weight processing we deliberately skip).
        warnings.simplefilter("ignore", UserWarning)
        loader = _load_bridge if backend == "bridge" else _load_hooked
        model, fingerprint = loader(source, torch_device, torch_dtype, tl_name)
    model.eval()
    tokenizer = model.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_style is None:
        prompt_style = "chat" if has_template and instruct is not False else "plain"
    attach_info(model, ModelInfo(str(name), backend, prompt_style, fingerprint))
    return model


def attach_info(model: Any, info: ModelInfo) -> None:
    """Record `info` on `model` (used by `load_model`, and for models built by hand)."""
    object.__setattr__(model, _INFO_ATTR, info)


def model_info(model: Any) -> ModelInfo:
    """The `ModelInfo` of a model, derived on the fly for models not from `load_model`.

    Example:
        >>> model_info(model).prompt_style  # doctest: +SKIP
        'chat'
    """
    info = getattr(model, _INFO_ATTR, None)
    if info is not None:
        return info
    from transformer_lens import HookedTransformer

    backend = "hooked" if isinstance(model, HookedTransformer) else "bridge"
    weight = (
        model.W_E if backend == "hooked" else model.original_model.get_input_embeddings().weight
    )
    tokenizer = getattr(model, "tokenizer", None)
    style = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    name = getattr(model.cfg, "model_name", "unknown")
    info = ModelInfo(str(name), backend, style, _embedding_fingerprint(weight))
    attach_info(model, info)
    return info
