"""The protocol's train vector, kept beside the raw sweep files it steered.

A sweep file names the vector it was made with by a digest of its floats
(`workbench.evaluation.sweep_files.vector_id`). Recomputing the "same" vector after
any change of library build (another ``transformers`` patch release, another BLAS)
moves its floats in the last bits, so the digest changes and the sweep no longer
resumes. The vector the rows were made with is therefore stored next to them,
``{name}.vector.safetensors``, with ``{name}.vector.json`` recording what it was
computed from (the pairs, the layers, the model); a rerun with the same inputs reads
it back instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.files import write_atomic
from workbench.model.info import model_info
from workbench.vectors.extraction import compute_instruction_vector
from workbench.vectors.instruction_vector import InstructionVector
from workbench.vectors.pairs import Instruction, make_pairs

from .sweep_files import vector_id


def vector_files(folder: Path, name: str) -> tuple[Path, Path]:
    """The vector file and its record of inputs for instruction `name` in `folder`.

    Example:
        >>> [p.name for p in vector_files(Path("raw"), "title")]
        ['title.vector.safetensors', 'title.vector.json']
    """
    return folder / f"{name}.vector.safetensors", folder / f"{name}.vector.json"


def train_vector(
    model: Any,
    instr: Instruction,
    n_pairs: int,
    layers: Sequence[int],
    *,
    folder: Path | None = None,
    name: str | None = None,
    progress: bool = False,
) -> InstructionVector:
    """The vector of `instr`'s first `n_pairs` train pairs at `layers`.

    With `folder`, the vector is read back from ``{name}.vector.safetensors`` when its
    record there says it was computed from the same pairs, layers and model, and is
    otherwise computed and written there (`name` defaults to ``instr.name``).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> a = train_vector(model, instruction("no_comma"), 2, [1], folder=folder)
        >>> b = train_vector(model, instruction("no_comma"), 2, [1], folder=folder)
        >>> vector_id(a) == vector_id(b), a.layers
        (True, (1,))
    """
    pairs = make_pairs(instr, split="train", n=n_pairs)
    if folder is None:
        return compute_instruction_vector(model, pairs, layers=list(layers), progress=progress)
    info = model_info(model)
    digest = hashlib.sha256(
        json.dumps(
            [
                [p.with_instruction, p.without_instruction, p.instruction_id, dict(p.kwargs)]
                for p in pairs
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    inputs = {
        "pairs": digest,
        "n_pairs": len(pairs),
        "layers": list(layers),
        "model": info.name,
        "fingerprint": info.fingerprint,
        "prompt_style": info.prompt_style,
    }
    vector_file, record_file = vector_files(folder, name or instr.name)
    if vector_file.exists() and record_file.exists():
        record = json.loads(record_file.read_text())
        if record.get("inputs") == inputs:
            vec = InstructionVector.load(vector_file, model=model)
            # The record belongs to this very file, not to one written over it.
            if vector_id(vec) == record.get("vector_id"):
                return vec
    vec = compute_instruction_vector(model, pairs, layers=list(layers), progress=progress)
    vec.save(vector_file)
    record = {"inputs": inputs, "vector_id": vector_id(vec)}
    write_atomic(record_file, json.dumps(record, indent=1, sort_keys=True).encode())
    return vec
