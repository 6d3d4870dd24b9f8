"""Instruction vectors: per-layer mean differences, their file format, GGUF export."""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ._version import __version__
from .activations import RESID_HOOK, check_layers, check_position, read_residuals
from .models import model_info
from .pairs import Pair, as_pairs
from .prompts import format_prompt

FORMAT_NAME = "workbench.instruction_vector"
FORMAT_VERSION = 1
_TENSOR_FIELDS = ("diffs", "directions", "mean_proj_with", "mean_proj_without")
_REQUIRED_META = (
    "layers",
    "d_model",
    "n_pairs",
    "model_name",
    "fingerprint",
    "model_n_layers",
    "instruction_id",
    "kwargs",
    "hook_name",
    "position",
    "selected_layer",
)


class VectorFileError(ValueError):
    """A vector file that is truncated, corrupt, or not a workbench vector."""


class VectorMismatchError(ValueError):
    """A vector whose shape does not fit the model it is used with."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, eq=False)
class InstructionVector:
    """Mean with-minus-without residual difference for each of several layers.

    Row i of every tensor belongs to layer ``layers[i]``.

    Attributes:
        diffs: mean difference, ``[n_layers, d_model]``.
        directions: unit vectors u_l of `diffs`, ``[n_layers, d_model]``.
        mean_proj_with: mean of x·u_l over with-instruction activations, ``[n_layers]``
            (the target z̄ of the ``project`` steering mode).
        mean_proj_without: the same over without-instruction activations, ``[n_layers]``.
        pair_diffs: per-pair differences ``[n_pairs, n_layers, d_model]`` if kept.
        selected_layer: the layer chosen for steering, if any.
    """

    diffs: Float[Tensor, "n_layers d_model"]
    directions: Float[Tensor, "n_layers d_model"]
    mean_proj_with: Float[Tensor, " n_layers"]
    mean_proj_without: Float[Tensor, " n_layers"]
    layers: tuple[int, ...]
    n_pairs: int
    model_name: str
    fingerprint: str
    model_n_layers: int
    architecture: str = ""
    instruction_id: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    hook_name: str = RESID_HOOK
    position: str | int = "last"
    pair_diffs: Float[Tensor, "n_pairs n_layers d_model"] | None = None
    selected_layer: int | None = None

    @property
    def d_model(self) -> int:
        return int(self.diffs.shape[-1])

    def row(self, layer: int) -> int:
        """Row of `layer` in the tensors, or a `ValueError` naming the layers held."""
        try:
            return self.layers.index(layer)
        except ValueError:
            raise ValueError(
                f"this vector holds layers {list(self.layers)}, not layer {layer!r}"
            ) from None

    def direction(self, layer: int) -> Float[Tensor, " d_model"]:
        return self.directions[self.row(layer)]

    def diff(self, layer: int) -> Float[Tensor, " d_model"]:
        return self.diffs[self.row(layer)]

    def norms(self) -> Float[Tensor, " n_layers"]:
        """Norm of the mean difference at each layer."""
        return self.diffs.norm(dim=-1)

    def select_layer(self, layer: int) -> InstructionVector:
        """A copy with `selected_layer` set (the default layer of steering terms)."""
        self.row(layer)
        return replace(self, selected_layer=layer)

    # ----- persistence -------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "workbench_version": __version__,
            "model_name": self.model_name,
            "fingerprint": self.fingerprint,
            "architecture": self.architecture,
            "d_model": self.d_model,
            "model_n_layers": self.model_n_layers,
            "layers": list(self.layers),
            "hook_names": [self.hook_name.format(layer=layer) for layer in self.layers],
            "hook_name": self.hook_name,
            "position": self.position,
            "instruction_id": self.instruction_id,
            "kwargs": dict(self.kwargs),
            "n_pairs": self.n_pairs,
            "selected_layer": self.selected_layer,
        }

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file whose header also holds the JSON metadata.

        The write is atomic. Example: ``vec.save("lowercase.safetensors")``.
        """
        tensors = {name: getattr(self, name).contiguous() for name in _TENSOR_FIELDS}
        if self.pair_diffs is not None:
            tensors["pair_diffs"] = self.pair_diffs.contiguous()
        data = st_save(tensors, metadata={"workbench": json.dumps(self.metadata())})
        path = Path(path)
        write_atomic(path, data)
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> InstructionVector:
        """Read a vector written by `save`, checking it against `model` if given.

        Raises `VectorFileError` for a truncated or foreign file and
        `VectorMismatchError` when d_model or the layer count differ from the model's;
        warns when the weights fingerprint differs (transfer between models is
        legitimate, silent mixing is not).
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"]["workbench"])
        except FileNotFoundError:
            raise
        except (SafetensorError, ValueError, KeyError, TypeError, OSError) as e:
            raise VectorFileError(
                f"{str(path)!r} is not a readable workbench vector file: {e}"
            ) from e
        if meta.get("format") != FORMAT_NAME or not set(_TENSOR_FIELDS) <= set(tensors):
            raise VectorFileError(f"{str(path)!r} is a safetensors file but not a workbench vector")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise VectorFileError(
                f"{str(path)!r} has format version {meta['format_version']}; this workbench "
                f"reads up to {FORMAT_VERSION}"
            )
        missing = [key for key in _REQUIRED_META if key not in meta]
        if missing:
            raise VectorFileError(f"{str(path)!r} has incomplete metadata: missing {missing}")
        n, d = len(meta["layers"]), meta["d_model"]
        expected = {"diffs": (n, d), "directions": (n, d), "mean_proj_with": (n,)}
        expected["mean_proj_without"] = (n,)
        wrong = {k: tuple(tensors[k].shape) for k, v in expected.items() if tensors[k].shape != v}
        if wrong:
            raise VectorFileError(
                f"{str(path)!r}: tensor shapes {wrong} contradict its metadata "
                f"({n} layers, d_model {d})"
            )
        vec = cls(
            **{name: tensors[name] for name in _TENSOR_FIELDS},
            layers=tuple(meta["layers"]),
            n_pairs=meta["n_pairs"],
            model_name=meta["model_name"],
            fingerprint=meta["fingerprint"],
            model_n_layers=meta["model_n_layers"],
            architecture=meta.get("architecture", ""),
            instruction_id=meta["instruction_id"],
            kwargs=meta["kwargs"],
            hook_name=meta["hook_name"],
            position=meta["position"],
            pair_diffs=tensors.get("pair_diffs"),
            selected_layer=meta["selected_layer"],
        )
        if model is not None:
            vec.check_model(model)
        return vec

    def check_model(self, model: Any) -> None:
        """Raise if the vector cannot apply to `model`; warn if it came from other weights."""
        if self.d_model != model.cfg.d_model:
            raise VectorMismatchError(
                f"vector has d_model={self.d_model} (from {self.model_name!r}) but the model "
                f"has d_model={model.cfg.d_model}"
            )
        if max(self.layers) >= model.cfg.n_layers or self.model_n_layers != model.cfg.n_layers:
            raise VectorMismatchError(
                f"vector was made on a {self.model_n_layers}-layer model (layers "
                f"{list(self.layers)}); this model has {model.cfg.n_layers} layers"
            )
        info = model_info(model)
        if info.fingerprint != self.fingerprint:
            warnings.warn(
                f"vector was computed on {self.model_name!r} (weights {self.fingerprint}); this "
                f"model is {info.name!r} (weights {info.fingerprint}). Using it as a transfer.",
                stacklevel=3,
            )

    def to_gguf(
        self, path: str | Path, *, layers: Iterable[int] | None = None, scale: float = 1.0
    ) -> Path:
        """Export as a llama.cpp control vector (``--control-vector`` / repeng layout).

        Writes tensors ``direction.{l}`` = scale x mean difference at layer l. llama.cpp
        adds ``direction.{l}`` to the output of block l (0-based), i.e. our
        ``blocks.{l}.hook_resid_post``; it has no slot for block 0.

        Example: ``vec.to_gguf("lowercase.gguf", layers=range(10, 20), scale=1.0)``.
        """
        import gguf

        chosen = list(self.layers if layers is None else layers)
        rows = [self.row(layer) for layer in chosen]
        if 0 in chosen:
            raise ValueError("llama.cpp control vectors cannot steer layer 0; drop it from layers")
        hint = re.sub(r"(ForCausalLM|LMHeadModel|Model)$", "", self.architecture).lower()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            writer = gguf.GGUFWriter(tmp, "controlvector")
            writer.add_string("controlvector.model_hint", hint or "unknown")
            writer.add_uint32("controlvector.layer_count", len(chosen))
            for layer, row in zip(chosen, rows, strict=True):
                data = (self.diffs[row].float() * scale).numpy()
                writer.add_tensor(f"direction.{layer}", data)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _architecture(model: Any) -> str:
    arch = getattr(model.cfg, "original_architecture", None) or getattr(
        model.cfg, "architecture", None
    )
    return str(arch or "")


def pair_activations(
    model: Any,
    pairs: Sequence[Pair | tuple[str, str]],
    *,
    layers: Sequence[int] | None = None,
    position: str | int = "last",
    batch_size: int = 16,
    prompt_style: str | None = None,
    progress: bool = False,
) -> tuple[Float[Tensor, "n_pairs n_layers d_model"], Float[Tensor, "n_pairs n_layers d_model"]]:
    """Residual stream of both sides of each pair: ``(with, without)``.

    Both sides are formatted with `format_prompt`; prompts of similar length are
    batched together to waste less compute on padding.
    """
    pairs = as_pairs(pairs)
    layers = check_layers(model, layers)
    with_prompts = [format_prompt(model, p.with_instruction, style=prompt_style) for p in pairs]
    without_prompts = [
        format_prompt(model, p.without_instruction, style=prompt_style) for p in pairs
    ]
    prompts = with_prompts + without_prompts
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    acts_sorted = read_residuals(
        model,
        [prompts[i] for i in order],
        layers=layers,
        position=position,
        batch_size=batch_size,
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
        >>> stats.mean_proj_with.tolist()  # sqrt(8) at both layers
        [2.828427314758301, 2.828427314758301]
    """
    if acts_with.shape != acts_without.shape:
        raise ValueError(
            f"with/without activations differ in shape: {tuple(acts_with.shape)} vs "
            f"{tuple(acts_without.shape)}"
        )
    if acts_with.shape[0] == 0:
        raise ValueError("no pairs: activations have zero rows")
    diffs = (acts_with - acts_without).mean(0)
    norms = diffs.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        zero = torch.nonzero(norms[:, 0] == 0).flatten().tolist()
        raise ValueError(f"the mean difference is exactly zero at layer rows {zero}; no direction")
    directions = diffs / norms
    return DifferenceStats(
        diffs=diffs,
        directions=directions,
        mean_proj_with=torch.einsum("nld,ld->nl", acts_with, directions).mean(0),
        mean_proj_without=torch.einsum("nld,ld->nl", acts_without, directions).mean(0),
    )


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

    Args:
        pairs: `Pair`s (e.g. from `make_pairs`, carrying instruction id and kwargs)
            or ``(with, without)`` strings.
        instruction_id, kwargs: override what the pairs carry.
        keep_pair_diffs: keep the per-pair differences (for the diagnostics).

    Returns:
        An `InstructionVector` with ``diffs``/``directions`` of shape
        ``[len(layers), d_model]``.

    Example:
        >>> vec = compute_instruction_vector(model, make_pairs("one_sentence", n=32))  # doctest: +SKIP
        >>> vec.diffs.shape  # doctest: +SKIP
        torch.Size([30, 576])
    """
    pairs = as_pairs(pairs)
    layers = check_layers(model, layers)
    position = check_position(position)
    acts_with, acts_without = pair_activations(
        model,
        pairs,
        layers=layers,
        position=position,
        batch_size=batch_size,
        prompt_style=prompt_style,
        progress=progress,
    )
    stats = difference_stats(acts_with, acts_without)
    info = model_info(model)
    ids = {p.instruction_id for p in pairs}
    first = pairs[0]
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
        instruction_id=instruction_id or (first.instruction_id if len(ids) == 1 else None),
        kwargs=dict(kwargs if kwargs is not None else first.kwargs),
        position=position,
        pair_diffs=(acts_with - acts_without) if keep_pair_diffs else None,
    )
