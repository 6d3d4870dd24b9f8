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

from workbench.errors import VectorFileError
from workbench.files import write_atomic
from workbench.model.info import model_info
from workbench.options import RESID_HOOK
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


# The record's format name: a file of that name holding anything else is never replaced.
RECORD_FORMAT = "workbench.train_vector_record"


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
    record ``{name}.vector.json`` says it was computed from the same pairs, layers,
    read position, hook and weights; when neither file exists it is computed and both
    are written (`name` defaults to ``instr.name``). A kept vector of other inputs, or
    one without its record, is refused, never replaced: the raw rows beside it were
    made with it. Raises `VectorFileError` naming the file and what differs.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> a = train_vector(model, instruction("no_comma"), 2, [1], folder=folder)
        >>> b = train_vector(model, instruction("no_comma"), 2, [1], folder=folder)
        >>> vector_id(a) == vector_id(b), a.layers
        (True, (1,))
        >>> train_vector(model, instruction("no_comma"), 3, [1], folder=folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.VectorFileError: '.../no_comma.vector.safetensors' was computed from other inputs (pairs ..., n_pairs 2 kept, 3 now); use another folder, or delete it and the raw rows beside it to start over
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
    # The model's name is left out: the same weights under another name (a local copy)
    # are the same vector; the fingerprint identifies the weights.
    inputs = {
        "pairs": digest,
        "n_pairs": len(pairs),
        "layers": list(layers),
        "fingerprint": info.fingerprint,
        "prompt_style": info.prompt_style,
        "hook_name": RESID_HOOK,
        "position": "last",
    }
    vector_file, record_file = vector_files(folder, name or instr.name)
    record = _read_record(record_file)
    if vector_file.exists() or vector_file.is_symlink():
        if record is None:
            raise VectorFileError(
                f"{str(vector_file)!r} has no record of what it was computed from "
                f"({record_file.name}); delete it and the raw rows beside it to start over"
            )
        kept = record.get("inputs", {})
        if kept != inputs:
            changed = [k for k in inputs if kept.get(k) != inputs[k]]
            shown = ", ".join(
                f"{k} {kept.get(k)!r:.40} kept, {inputs[k]!r:.40} now" for k in changed
            )
            raise VectorFileError(
                f"{str(vector_file)!r} was computed from other inputs ({shown}); use another "
                "folder, or delete it and the raw rows beside it to start over"
            )
        vec = InstructionVector.load(vector_file, model=model)
        if vector_id(vec) != record.get("vector_id"):
            raise VectorFileError(
                f"{str(vector_file)!r} is not the vector its record {record_file.name} "
                "describes (it was written over); delete both and the raw rows beside them "
                "to start over"
            )
        return vec
    vec = compute_instruction_vector(model, pairs, layers=list(layers), progress=progress)
    vec.save(vector_file)
    record = {"format": RECORD_FORMAT, "inputs": inputs, "vector_id": vector_id(vec)}
    write_atomic(record_file, json.dumps(record, indent=1, sort_keys=True).encode())
    return vec


def _read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, None when there is none; anything else there is refused
    (before any vector is computed or written)."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VectorFileError(
            f"{str(path)!r} is not a train-vector record ({type(e).__name__}); move it away"
        ) from e
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise VectorFileError(f"{str(path)!r} is not a train-vector record; move it away")
    return record
