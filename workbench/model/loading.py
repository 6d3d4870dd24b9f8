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

BOS: TransformerLens reloads every tokenizer with ``add_bos_token=True``, so on
SmolLM2 (whose tokenizer adds none) ``model.tokenizer(chat_text)`` began
``<|im_start|> <|im_start|>``. `load_model` gives the tokenizer back the checkpoint's
own behaviour and sets ``cfg.default_prepend_bos`` for the prompt style, so
``model.tokenizer(text)``, ``model.to_tokens(text)`` and the workbench's own
tokenization agree (see `workbench.model.prompts`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    UnknownModelError,
    UnsupportedBackendError,
    WorkbenchError,
)
from workbench.options import Backend, Dtype, PromptStyle, check_choice, choices

from .embedded import (
    EMBEDDED_MODELS,
    check_checkpoint,
    ensure_checkpoint,
    one_line,
    tokenizer_adds_bos,
)
from .info import ModelInfo, attach_info, embedding_fingerprint

BACKENDS: tuple[str, ...] = choices(Backend)
_DTYPES: tuple[str, ...] = choices(Dtype)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    resolved = dtype if isinstance(dtype, torch.dtype) else None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or str(resolved).removeprefix("torch.") not in _DTYPES:
        raise InvalidArgumentError(
            f"dtype {dtype!r} is not a torch floating-point dtype; use one of {_DTYPES}"
        )
    return resolved


def available_devices() -> list[str]:
    """Device names this machine can load a model onto, e.g. ``['cpu', 'cuda:0']``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def _resolve_device(device: torch.device | str | None) -> torch.device:
    """The torch device to load onto, refused up front if this machine lacks it.

    Without this check a CUDA request on a CPU-only machine ends deep inside torch
    as a bare AssertionError ("Torch not compiled with CUDA enabled").
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    if not isinstance(device, (str, torch.device)):
        raise ArgumentTypeError(
            f"device must be a str or torch.device, got {type(device).__name__} {device!r}; "
            f"available: {available}"
        )
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise InvalidArgumentError(
            f"device {device!r} is not a torch device name; available: {available}"
        ) from e
    missing_gpu = resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count()
    if resolved.type not in available or missing_gpu:
        raise InvalidArgumentError(
            f"device {str(device)!r} is not available on this machine; available: {available}"
        )
    return resolved


def _resolve_source(name: str | Path) -> tuple[str, bool | None, str | None]:
    """Map a user-given name to a loadable path or hub id, its instruct flag if known,
    and its TransformerLens official name if it has one."""
    if not isinstance(name, (str, Path)):
        raise ArgumentTypeError(
            f"model name must be a str or Path, got {type(name).__name__} {name!r}"
        )
    name = str(name)
    if not name.strip():
        raise InvalidArgumentError(
            f"model name {name!r} is empty; give an embedded model ({sorted(EMBEDDED_MODELS)}), "
            "a checkpoint directory or a hub id"
        )
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
        check_checkpoint(path)
        return str(path), None, None
    looks_like_path = name.startswith((".", "/", "~")) or path.suffix != ""
    if looks_like_path or "/" not in name or name.count("/") > 1:
        raise UnknownModelError(
            f"unknown model {name!r}: not an embedded model, not an existing checkpoint "
            f"directory, and not a Hugging Face id of the form 'org/name'. "
            f"Embedded models: {sorted(EMBEDDED_MODELS)}"
        )
    return name, None, None


def _load_bridge(
    source: str, device: torch.device, dtype: torch.dtype, tl_name: str | None = None
) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    try:
        model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    except (ValueError, NotImplementedError, KeyError) as e:
        raise UnsupportedBackendError(
            f"backend='bridge' cannot load {source!r}: {one_line(e)}. TransformerBridge needs an "
            "architecture TransformerLens has an adapter for."
        ) from e
    weight = model.original_model.get_input_embeddings().weight
    return model, embedding_fingerprint(weight)


def _load_hooked(
    source: str,
    device: torch.device,
    dtype: torch.dtype,
    tl_name: str | None = None,
    tokenizer: Any = None,
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
            fingerprint = embedding_fingerprint(model.W_E)
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
                cfg,
                tokenizer=tokenizer or AutoTokenizer.from_pretrained(source),
                move_to_device=False,
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
            fingerprint = embedding_fingerprint(hf.get_input_embeddings().weight)
            del hf
    except (ValueError, NotImplementedError, KeyError, AttributeError) as e:
        raise UnsupportedBackendError(
            f"backend='hooked' cannot load {source!r}: {type(e).__name__}: {one_line(e)}. "
            "HookedTransformer only supports architectures TransformerLens re-implements; "
            "use backend='bridge', which wraps the Hugging Face modules directly."
        ) from e
    return model, fingerprint


def load_model(
    name: str | Path = "smollm2-135m-instruct",
    *,
    backend: Backend = "bridge",
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    prompt_style: PromptStyle | None = None,
) -> Any:
    """Load a model as a TransformerLens model, offline for embedded names.

    Args:
        name: an embedded model (``"smollm2-135m-instruct"``, ``"gemma-3-270m"``),
            a local Hugging Face checkpoint directory, or a hub id such as
            ``"google/gemma-2-2b-it"`` (downloads unless already in the HF cache).
        backend: ``"bridge"`` (TransformerBridge, default) or ``"hooked"``
            (HookedTransformer).
        device: defaults to CUDA when available, else CPU. A device this machine
            lacks is refused before anything loads (`available_devices()` lists them).
        dtype: torch floating-point dtype or its name; defaults to float32. float64
            needs ``backend="hooked"``: TransformerBridge takes attention's softmax in
            float32, where float64's padding mask overflows (padded prompts gave NaN).
        prompt_style: ``"chat"`` or ``"plain"``; defaults to chat for instruction-tuned
            models with a chat template and plain otherwise.

    Returns:
        A `TransformerBridge` or `HookedTransformer` in eval mode; `model_info(model)`
        returns its `ModelInfo`. A bridge comes with its fast decoder built and the
        state every later change to it is checked against (`workbench.model.fast_decode`).

    A local checkpoint whose config, tokenizer or weight files are corrupt, truncated
    or missing, and any other failure of the loaders, ends in one `WorkbenchError`
    line naming the file or the model.

    BOS: ``model.tokenizer`` adds a BOS token exactly when the checkpoint's own
    tokenizer does (TransformerLens would force one), and ``cfg.default_prepend_bos``
    is set so that ``model.to_tokens(format_prompt(model, p))`` gives the workbench's
    own ids for the model's prompt style: a chat template's text as written (it
    carries its BOS), plain text with the tokenizer's BOS if it adds one. For raw
    text on a chat model pass ``to_tokens(text, prepend_bos=True)`` if you want one.

    Example:
        >>> model = load_model()  # doctest: +SKIP
        >>> _, cache = model.run_with_cache("Hi", names_filter="blocks.3.hook_resid_post")  # doctest: +SKIP
    """
    check_choice("backend", backend, Backend)
    if prompt_style is not None:
        check_choice("prompt_style", prompt_style, PromptStyle)
    torch_dtype = _resolve_dtype(dtype)
    if backend == "bridge" and torch_dtype == torch.float64:
        # TransformerBridge's attention takes its softmax in float32, where float64's
        # padding-mask value (-1.8e308) becomes -inf: a left-padded row's padding
        # positions give NaN, which reaches its real tokens through the values.
        raise InvalidArgumentError(
            f"dtype {dtype!r} does not work with backend='bridge' (TransformerBridge "
            "computes attention in float32, where float64's mask overflows and padded "
            "prompts come out NaN); use backend='hooked' for float64, or on the bridge "
            f"one of {tuple(d for d in _DTYPES if d != 'float64')}"
        )
    torch_device = _resolve_device(device)
    source, instruct, tl_name = _resolve_source(name)
    with warnings.catch_warnings():
        # TransformerLens warns at length about features we do not use
        # (e.g. weight processing we deliberately skip).
        warnings.simplefilter("ignore", UserWarning)
        try:
            own_tokenizer = _own_tokenizer(source)
            if backend == "bridge":
                model, fingerprint = _load_bridge(source, torch_device, torch_dtype, tl_name)
            else:
                model, fingerprint = _load_hooked(
                    source, torch_device, torch_dtype, tl_name, own_tokenizer
                )
        except WorkbenchError:
            raise
        except Exception as e:
            # transformers, safetensors, huggingface_hub and TransformerLens each raise
            # their own types (a config field of the wrong type, no network, a file
            # torch cannot unpickle): one line naming the model, the cause chained.
            where = "" if source == str(name) else f" from {source!r}"
            raise InvalidArgumentError(
                f"cannot load model {str(name)!r}{where}: {type(e).__name__}: {one_line(e)}"
            ) from e
    model.eval()
    tokenizer = model.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_style is None:
        prompt_style = "chat" if has_template and instruct is not False else "plain"
    _follow_checkpoint_bos(model, own_tokenizer, prompt_style)
    attach_info(model, ModelInfo(str(name), backend, prompt_style, fingerprint))
    if backend == "bridge":
        from .fast_decode import prepare  # fast_decode imports this module

        # Before any user code runs: the fast decode path's reference state, against
        # which every later hook, swap or edit on the bridge is detected.
        prepare(model)
    return model


def _own_tokenizer(source: str) -> Any:
    """The checkpoint's tokenizer as Hugging Face loads it, or None if it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        return None


def _follow_checkpoint_bos(model: Any, own_tokenizer: Any, prompt_style: str) -> None:
    """Undo TransformerLens' forced BOS and set ``to_tokens``' default for the style.

    TransformerLens reloads the tokenizer with ``add_bos_token=True`` whatever the
    checkpoint says; the checkpoint's own setting is what the model was used with.
    """
    tokenizer = model.tokenizer
    if own_tokenizer is not None:
        wanted = tokenizer_adds_bos(own_tokenizer)
        if tokenizer_adds_bos(tokenizer) != wanted:
            tokenizer.add_bos_token = wanted
    adds_bos = tokenizer_adds_bos(tokenizer)
    model.cfg.tokenizer_prepends_bos = adds_bos
    # A chat template writes the BOS it wants, so to_tokens must not add another;
    # plain text gets the BOS the tokenizer adds, if any.
    model.cfg.default_prepend_bos = adds_bos and prompt_style == "plain"
