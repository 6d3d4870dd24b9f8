"""The vector file format: safetensors tensors plus JSON metadata in the header.

No pickle anywhere. The header's ``__metadata__["workbench"]`` holds a JSON object
with the format name and version, the model the vector came from, its layers, hook,
read position and prompt style. `load_vector` refuses a file that is truncated,
foreign, of a newer format, or whose metadata contradicts its tensors, and names
the path and the offending key.

This module knows the file, not the dataclass: `save_vector` takes a vector's fields
(``{field name: value}``, e.g. ``vars(vec)``) and `load_vector` returns them, so that
`InstructionVector.save` and `.load` call it and nothing here imports the dataclass.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workbench._version import __version__
from workbench.errors import VectorFileError, WorkbenchError
from workbench.files import user_path, write_atomic
from workbench.options import check_bool

FORMAT_NAME = "workbench.instruction_vector"
# 2: adds prompt_style. Version-1 files load with prompt_style unknown (None).
FORMAT_VERSION = 2
TENSOR_FIELDS = ("diffs", "directions", "mean_proj_with", "mean_proj_without")
# Metadata keys copied into the dataclass as they are; the dataclass validates them.
METADATA_FIELDS = (
    "n_pairs",
    "model_name",
    "fingerprint",
    "model_n_layers",
    "architecture",
    "instruction_id",
    "kwargs",
    "hook_name",
    "position",
    "prompt_style",
    "selected_layer",
    "selection",
)
_REQUIRED = (*METADATA_FIELDS[:4], "layers", "d_model", "instruction_id", "kwargs", "hook_name")
_REQUIRED += ("position", "selected_layer")


def metadata(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON metadata written with a vector's `fields` (``{field name: value}``).

    Example:
        >>> meta = metadata(vars(vec))
        >>> meta["format"], meta["layers"], meta["hook_names"][0]
        ('workbench.instruction_vector', [0, 1, 2], 'blocks.0.hook_resid_post')
    """
    layers, hook = fields["layers"], fields["hook_name"]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "workbench_version": __version__,
        "d_model": int(fields["diffs"].shape[-1]),
        "layers": list(layers),
        "hook_names": [hook.format(layer=layer) for layer in layers],
        **{key: fields[key] for key in METADATA_FIELDS},
        "kwargs": dict(fields["kwargs"]),
    }


def save_vector(fields: Mapping[str, Any], path: str | Path, *, force: bool = False) -> Path:
    """Write a vector's `fields` to `path` atomically; returns the path (``~`` expanded).

    `fields` maps every `InstructionVector` field name to its value (``pair_diffs``
    None is left out of the file). The rules of `workbench.files.write_target` apply:
    a symlink to a regular file has its target written, and a FIFO, device or
    directory is refused. An existing file that is not a vector (a sweep file, a
    page) is replaced only with `force`.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = save_vector(vars(vec), Path(tempfile.mkdtemp()) / "v.safetensors")
        >>> load_vector(path)["layers"]
        (0, 1, 2)
    """
    path = user_path(path, "vector file path")
    tensors = {name: fields[name].contiguous() for name in TENSOR_FIELDS}
    if fields.get("pair_diffs") is not None:
        tensors["pair_diffs"] = fields["pair_diffs"].contiguous()
    data = st_save(tensors, metadata={"workbench": json.dumps(metadata(fields))})
    return write_atomic(path, data, kind="vector", force=check_bool("force", force))


def vector_path(path: str | Path) -> Path:
    """`path` with ``~`` expanded; an empty path or a non-path is a `VectorFileError`."""
    try:
        return user_path(path, "vector file path")
    except WorkbenchError as e:
        raise VectorFileError(str(e)) from None


def _read(path: Path) -> tuple[dict[str, Any], Any]:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise VectorFileError(f"cannot read vector file {str(path)!r}: {e.strerror or e}") from e
    if not stat.S_ISREG(mode):
        # Reading a FIFO would wait for a writer forever.
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise VectorFileError(f"cannot read vector file {str(path)!r}: it is {kind}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise VectorFileError(f"cannot read vector file {str(path)!r}: {e.strerror or e}") from e
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["workbench"])
    except (SafetensorError, ValueError, KeyError, TypeError) as e:
        raise VectorFileError(
            f"{str(path)!r} is not a readable workbench vector file: {type(e).__name__}: {e}"
        ) from e
    return tensors, meta


def _check_header(path: Path, tensors: dict[str, Any], meta: Any) -> None:
    where = repr(str(path))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise VectorFileError(f"{where} is a safetensors file but not a workbench vector")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise VectorFileError(f"{where}: format_version {version!r} is not a positive int")
    if version > FORMAT_VERSION:
        raise VectorFileError(
            f"{where} has format version {version}; this workbench reads up to {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in meta]
    absent = [name for name in TENSOR_FIELDS if name not in tensors]
    if missing or absent:
        raise VectorFileError(
            f"{where} has incomplete contents: missing metadata {missing}, tensors {absent}"
        )
    layers, d = meta["layers"], meta["d_model"]
    if not isinstance(layers, list) or isinstance(d, bool) or not isinstance(d, int):
        raise VectorFileError(
            f"{where}: layers must be a list and d_model an int, got {layers!r} and {d!r}"
        )
    n = len(layers)
    expected = {"diffs": (n, d), "directions": (n, d), "mean_proj_with": (n,)}
    expected["mean_proj_without"] = (n,)
    if "pair_diffs" in tensors:
        expected["pair_diffs"] = (meta["n_pairs"], n, d)
    wrong = {k: tuple(tensors[k].shape) for k, v in expected.items() if tensors[k].shape != v}
    if wrong:
        raise VectorFileError(
            f"{where}: tensor shapes {wrong} contradict its metadata ({n} layers, d_model {d})"
        )


def load_vector(path: str | Path) -> dict[str, Any]:
    """Read a vector file; return its fields, the keyword arguments of `InstructionVector`.

    Raises `VectorFileError` naming the path for a file that is missing, not a regular
    file, truncated, foreign, of a newer format, or whose metadata contradicts its
    tensors. The values are not yet checked against each other: the dataclass does
    that when it is built from them.

    Example:
        >>> import tempfile
        >>> path = vec.save(Path(tempfile.mkdtemp()) / "v.safetensors")
        >>> fields = load_vector(path)
        >>> fields["layers"], tuple(fields["diffs"].shape)
        ((0, 1, 2), (3, 32))
    """
    path = vector_path(path)
    tensors, meta = _read(path)
    _check_header(path, tensors, meta)
    fields = {key: meta.get(key) for key in METADATA_FIELDS}
    fields["architecture"] = fields["architecture"] or ""
    return {
        **{name: tensors[name] for name in TENSOR_FIELDS},
        "layers": tuple(meta["layers"]),
        "pair_diffs": tensors.get("pair_diffs"),
        **fields,
    }
