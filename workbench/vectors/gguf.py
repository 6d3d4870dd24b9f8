"""Export an instruction vector as a llama.cpp control vector (GGUF).

llama.cpp (``--control-vector``, repeng's layout) adds tensor ``direction.{l}`` to
the output of block l, which is TransformerLens' ``blocks.{l}.hook_resid_post``, at
every position, prompt and generated alike. It has no slot for block 0. So a file
reproduces only the ``add`` steering mode at all positions, with weight
``scale * |mean difference|``; ``project``, ``clamp`` and ``ablate`` have no GGUF form.

`export_gguf` takes the vector's mean differences by layer and the fields the file
needs, not the dataclass, so `InstructionVector.to_gguf` calls it and nothing here
imports the dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from torch import Tensor

from workbench.errors import FileWriteError, InvalidArgumentError, VectorMismatchError
from workbench.files import atomic_path, check_kind, user_path, write_target
from workbench.options import RESID_HOOK, as_float, check_bool, int_list


@dataclass(frozen=True)
class GGUFExport:
    """What `export_gguf` wrote: the file, the layers in it, and those left out."""

    path: Path
    layers: tuple[int, ...]
    skipped: tuple[int, ...]


def export_gguf(
    diffs: Mapping[int, Float[Tensor, " d_model"]],
    path: str | Path,
    *,
    hook_name: str = RESID_HOOK,
    architecture: str = "",
    layers: Iterable[int] | None = None,
    scale: float = 1.0,
    force: bool = False,
) -> GGUFExport:
    """Write ``direction.{l} = scale * mean difference at layer l`` for each layer.

    The file reproduces only the ``add`` steering mode at all positions, with weight
    ``scale * |mean difference|`` at each layer: llama.cpp adds the tensors to every
    position's block output and has no ``project``, ``clamp`` or ``ablate``.

    Args:
        diffs: ``{layer: mean difference [d_model]}`` for every layer the vector
            holds, in its order (`InstructionVector.diffs` row by row).
        path: the file to write (``~`` expanded). A symlink to a regular file has its
            target written; a FIFO, a device or a directory is refused.
        layers: the layers to export. None exports every layer llama.cpp can take
            (all but layer 0) and reports the rest in `GGUFExport.skipped`; an
            explicit list containing 0 is refused.
        scale: multiplies every direction (llama.cpp's ``--control-vector-scaled``
            multiplies again).
        hook_name: the hook the vector was read at; only ``blocks.{layer}.hook_resid_post``
            is what llama.cpp adds to.
        architecture: the model's architecture (``LlamaForCausalLM``), for the
            file's model hint.

    Example:
        >>> import tempfile
        >>> diffs = {0: torch.ones(32), 1: torch.ones(32), 2: -torch.ones(32)}
        >>> out = export_gguf(diffs, Path(tempfile.mkdtemp()) / "v.gguf")
        >>> out.layers, out.skipped
        ((1, 2), (0,))
    """
    import gguf

    path = user_path(path, "GGUF path")
    # Refused before any work, not after.
    check_kind(write_target(path, "GGUF path"), "gguf", check_bool("force", force), "GGUF path")
    held = list(diffs)
    if hook_name != RESID_HOOK:
        raise VectorMismatchError(
            f"a GGUF control vector is added to block outputs ({RESID_HOOK!r}); this vector "
            f"was read at {hook_name!r}, so every layer would be off by one"
        )
    scale = as_float("scale", scale)
    if layers is None:
        chosen = [layer for layer in held if layer > 0]
        skipped = tuple(layer for layer in held if layer == 0)
    else:
        chosen, skipped = int_list("layers", layers, "layer"), ()
        if 0 in chosen:
            raise InvalidArgumentError(
                "llama.cpp control vectors cannot steer layer 0; drop it from layers "
                "(layers=None leaves it out and reports it)"
            )
    if not chosen:
        raise InvalidArgumentError(f"no layer to export: the vector holds {held}")
    for layer in chosen:
        if layer not in diffs:
            # The words of InstructionVector.row, which this module cannot import.
            raise VectorMismatchError(f"this vector holds layers {held}, not layer {layer!r}")
    data = {layer: (diffs[layer].float() * scale).numpy() for layer in chosen}
    if not all(np.isfinite(d).all() for d in data.values()):
        raise InvalidArgumentError(f"scale {scale!r} overflows float32 in the exported directions")
    hint = re.sub(r"(ForCausalLM|LMHeadModel|Model)$", "", architecture).lower()
    with atomic_path(path, kind="gguf", force=force) as tmp:
        try:
            writer = gguf.GGUFWriter(str(tmp), "controlvector")
            writer.add_string("controlvector.model_hint", hint or "unknown")
            writer.add_uint32("controlvector.layer_count", len(chosen))
            for layer, direction in data.items():
                writer.add_tensor(f"direction.{layer}", direction)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        except OSError as e:
            raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    return GGUFExport(path, tuple(chosen), skipped)
