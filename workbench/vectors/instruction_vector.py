"""The instruction vector: per-layer mean differences and the statistics steering uses.

This module holds the data and its invariants. Computing a vector from pairs lives
in `extraction`, the safetensors file format in `storage`, and the llama.cpp export
in `gguf`; those two work on plain fields, so the imports run one way, from here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import VectorError, VectorFileError, VectorMismatchError
from workbench.options import (
    RESID_HOOK,
    GateSide,
    Mode,
    PromptStyle,
    check_choice,
    check_hook_template,
    check_read_position,
    choices,
    is_finite_number,
)

from .gguf import GGUFExport, export_gguf
from .storage import load_vector, save_vector, vector_path


def _fail(key: str, message: str) -> VectorError:
    return VectorError(f"{key}: {message}")


def _check_tensor(key: str, value: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise _fail(key, f"must be a floating-point tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise _fail(key, f"has shape {tuple(value.shape)}, expected {shape}")
    if not bool(torch.isfinite(value).all()):
        raise _fail(key, "contains NaN or inf")


@dataclass(frozen=True, eq=False)
class InstructionVector:
    """Mean with-minus-without residual difference for each of several layers.

    Row i of every tensor belongs to layer ``layers[i]``. Every field is checked on
    construction (shapes agree, values finite, layers distinct and in range), so a
    vector that exists is usable; `check_model` then checks it against a model.

    Attributes:
        diffs: mean difference, ``[n_layers, d_model]``.
        directions: unit vectors u_l of `diffs`, ``[n_layers, d_model]``.
        mean_proj_with: mean of x·u_l over with-instruction activations, ``[n_layers]``
            (the default target of the ``project`` steering mode).
        mean_proj_without: the same over without-instruction activations, ``[n_layers]``.
        layers: the model layers the rows belong to.
        prompt_style: how prompts were formatted when reading (``"chat"``/``"plain"``).
        position: where the residual was read (``"last"``, ``"mean"`` or k).
        pair_diffs: per-pair differences ``[n_pairs, n_layers, d_model]`` if kept.
        selected_layer: the layer chosen for steering, if any.
        selection: the setting `workbench.evaluation.selection.select` chose on validation data
            (``layer``, ``mode``, ``coefficient`` and the evidence's summary), which
            ``SteeringTerm(vec)`` steers with; ``layer`` None means "do not steer".

    Example:
        >>> vec.diffs.shape
        torch.Size([3, 32])
        >>> vec.select_layer(1).selected_layer
        1
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
    prompt_style: str | None = None
    pair_diffs: Float[Tensor, "n_pairs n_layers d_model"] | None = None
    selected_layer: int | None = None
    selection: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self._check_scalars()
        layers = self.layers
        if not isinstance(layers, (tuple, list)) or not layers:
            raise _fail("layers", f"must be a non-empty list of layer indices, got {layers!r}")
        object.__setattr__(self, "layers", tuple(layers))
        bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, int)]
        bad += [x for x in layers if isinstance(x, int) and not 0 <= x < self.model_n_layers]
        if bad:
            raise _fail(
                "layers",
                f"{bad} are not layer indices of a {self.model_n_layers}-layer model "
                f"(0..{self.model_n_layers - 1})",
            )
        if len(set(layers)) != len(layers):
            raise _fail("layers", f"{list(layers)} contain duplicates")
        n = len(layers)
        if not isinstance(self.diffs, Tensor) or self.diffs.ndim != 2:
            raise _fail("diffs", "must be a [n_layers, d_model] tensor")
        d = int(self.diffs.shape[1])
        _check_tensor("diffs", self.diffs, (n, d))
        _check_tensor("directions", self.directions, (n, d))
        norms = self.directions.norm(dim=-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise _fail("directions", f"rows must be unit vectors, norms are {norms.tolist()}")
        # Steering uses diffs and the diagnostics use directions: they must agree.
        cos = torch.nn.functional.cosine_similarity(self.directions, self.diffs, dim=-1)
        if bool((cos < 0.999).any()):
            raise _fail("directions", f"rows must be diffs / |diffs|; cosines are {cos.tolist()}")
        _check_tensor("mean_proj_with", self.mean_proj_with, (n,))
        _check_tensor("mean_proj_without", self.mean_proj_without, (n,))
        if self.pair_diffs is not None:
            _check_tensor("pair_diffs", self.pair_diffs, (self.n_pairs, n, d))
        selected = self.selected_layer
        if selected is not None and (
            not isinstance(selected, int) or isinstance(selected, bool) or selected not in layers
        ):
            raise _fail(
                "selected_layer", f"{self.selected_layer!r} is not one of the layers {list(layers)}"
            )
        if self.selection is not None:
            self._check_selection(self.selection)

    def _check_selection(self, sel: Any) -> None:
        if not isinstance(sel, Mapping) or not {"layer", "mode", "coefficient"} <= set(sel):
            raise _fail("selection", f"must map layer, mode and coefficient, got {sel!r}")
        layer, mode, coefficient = sel["layer"], sel["mode"], sel["coefficient"]
        if layer is None:
            if sel.get("gate") is not None:
                raise _fail(
                    "selection", f"'do not steer' (layer null) holds no gate, got {sel['gate']!r}"
                )
            return
        if layer not in self.layers or isinstance(layer, bool):
            raise _fail(
                "selection", f"layer {layer!r} is not one of the layers {list(self.layers)}"
            )
        if mode not in choices(Mode):
            raise _fail("selection", f"mode {mode!r} is not one of {choices(Mode)}")
        if (mode == "ablate") != (coefficient is None) or (
            coefficient is not None and not is_finite_number(coefficient)
        ):
            raise _fail("selection", f"coefficient {coefficient!r} does not fit mode {mode!r}")
        gate = sel.get("gate")
        if gate is None:
            return
        if (
            not isinstance(gate, Mapping)
            or set(gate) != {"side", "threshold"}
            or gate["side"] not in choices(GateSide)
            or not (gate["threshold"] is None or is_finite_number(gate["threshold"]))
        ):
            raise _fail(
                "selection",
                f"gate {gate!r} must map side (one of {choices(GateSide)}) and threshold "
                "(a number, or null for the default midpoint)",
            )

    def _check_scalars(self) -> None:
        for key in ("n_pairs", "model_n_layers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(key, f"must be a positive int, got {value!r}")
        for key in ("model_name", "fingerprint", "architecture"):
            if not isinstance(getattr(self, key), str):
                raise _fail(key, f"must be a string, got {getattr(self, key)!r}")
        if self.instruction_id is not None and not isinstance(self.instruction_id, str):
            raise _fail("instruction_id", f"must be a string or null, got {self.instruction_id!r}")
        if not isinstance(self.kwargs, Mapping):
            raise _fail("kwargs", f"must be a mapping, got {self.kwargs!r}")
        for key, check in [
            ("hook_name", check_hook_template),
            ("position", check_read_position),
            ("prompt_style", lambda v: v is None or check_choice("prompt_style", v, PromptStyle)),
        ]:
            try:
                check(getattr(self, key))
            except ValueError as e:
                raise _fail(key, str(e)) from e

    @property
    def d_model(self) -> int:
        return int(self.diffs.shape[-1])

    def row(self, layer: int) -> int:
        """Row of `layer` in the tensors; `VectorMismatchError` names the layers held."""
        if isinstance(layer, int) and not isinstance(layer, bool) and layer in self.layers:
            return self.layers.index(layer)
        raise VectorMismatchError(
            f"this vector holds layers {list(self.layers)}, not layer {layer!r}"
        )

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

    def with_selection(self, selection: Mapping[str, Any]) -> InstructionVector:
        """A copy holding `selection` (see `workbench.evaluation.selection.select`), saved with it.

        Example:
            >>> chosen = vec.with_selection({"layer": 1, "mode": "add", "coefficient": 4.0})
            >>> SteeringTerm(chosen).concrete().weight
            4.0
        """
        layer = selection.get("layer") if isinstance(selection, Mapping) else None
        return replace(
            self,
            selection=dict(selection) if isinstance(selection, Mapping) else selection,
            selected_layer=layer if layer is not None else self.selected_layer,
        )

    def check_model(self, model: Any) -> None:
        """Raise if the vector cannot apply to `model`; warn if it came from other weights.

        Checked: d_model, the model's depth, every layer's hook name. Weights of the
        same shape but another fingerprint are a transfer: allowed, with a warning.
        Inside a `workbench.vectors.checks.checks_once` block a pair already checked
        is not checked (nor warned about) again.
        """
        from workbench.model.hooks import check_hooks
        from workbench.model.info import model_info

        from .checks import already_checked, mark_checked

        if already_checked(self, model):
            return
        cfg = model.cfg
        if self.d_model != cfg.d_model:
            raise VectorMismatchError(
                f"vector has d_model={self.d_model} (from {self.model_name!r}) but the model "
                f"has d_model={cfg.d_model}"
            )
        if self.model_n_layers != cfg.n_layers:
            raise VectorMismatchError(
                f"vector was made on a {self.model_n_layers}-layer model (layers "
                f"{list(self.layers)}); this model has {cfg.n_layers} layers"
            )
        check_hooks(model, [self.hook_name.format(layer=layer) for layer in self.layers])
        info = model_info(model)
        if info.fingerprint != self.fingerprint:
            warnings.warn(
                f"vector was computed on {self.model_name!r} (weights {self.fingerprint}); this "
                f"model is {info.name!r} (weights {info.fingerprint}). Using it as a transfer.",
                stacklevel=3,
            )
        mark_checked(self, model)

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write a safetensors file with JSON metadata, atomically (see `storage`).

        `path` has ``~`` expanded; an empty path or a non-path is a one-line error. A
        symlink to a regular file has its target written (the link stays); a FIFO, a
        device or a directory is refused, never replaced, and an existing file of
        another kind (a sweep file, a page) is replaced only with ``force=True``.
        Returns the path.

        Example:
            >>> import tempfile
            >>> path = vec.save(Path(tempfile.mkdtemp()) / "lowercase.safetensors")
            >>> InstructionVector.load(path).layers
            (0, 1, 2)
        """
        return save_vector(vars(self), path, force=force)

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> InstructionVector:
        """Read a vector written by `save`, checking it against `model` if given.

        Raises `VectorFileError` for an empty or non-path `path`, a missing file or
        one that is not a regular file, a truncated, foreign or inconsistent file, and
        `VectorMismatchError` when it does not fit `model`. ``~`` is expanded.
        """
        path = vector_path(path)
        try:
            vec = cls(**load_vector(path))
        except VectorError as e:
            raise VectorFileError(f"{str(path)!r}: {e}") from e
        if model is not None:
            vec.check_model(model)
        return vec

    def to_gguf(
        self, path: str | Path, *, layers: Any = None, scale: float = 1.0, force: bool = False
    ) -> GGUFExport:
        """Export as a llama.cpp control vector (see `gguf.export_gguf`).

        The file reproduces only ``add`` at all positions (weight = scale x norm);
        layer 0 has no slot in llama.cpp, so by default it is left out and reported
        in the result's ``skipped``. An existing file that is not GGUF is replaced
        only with ``force=True``.

        Example:
            >>> import tempfile
            >>> vec.to_gguf(Path(tempfile.mkdtemp()) / "v.gguf").skipped
            (0,)
        """
        return export_gguf(
            dict(zip(self.layers, self.diffs, strict=True)),
            path,
            hook_name=self.hook_name,
            architecture=self.architecture,
            layers=layers,
            scale=scale,
            force=force,
        )
