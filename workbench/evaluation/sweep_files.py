"""The sweep results file: JSON lines, one header then one scored row per line.

The header records the sweep's configuration; a file is only ever resumed or merged
with the same configuration. Rows are appended and flushed as they are scored, so a
killed sweep loses at most the batch in flight. A torn last line (the process died
mid-write) is cut off and its row redone; a corrupt line elsewhere is an error.

The configuration names the vector swept by `vector_id`: a digest of what steering
and scoring use (the mean differences and projections, layers, hook, read position,
prompt style, instruction and kwargs, and the weights it was read from), and not of
what a selection adds later. A table from `sweep` or `merge_sweeps` carries it in
``table.attrs["sweep"]`` (`table_identity`), and wherever a table meets a vector
(`workbench.evaluation.selection.select`, the report page) `check_table_vector` compares them.
Files of format 1 predate `vector_id` and record only the digest of the mean
differences (``"vector"``), which is then compared instead; such a file resumes when
its configuration is this sweep's less `vector_id`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import (
    ArgumentTypeError,
    FileWriteError,
    InvalidArgumentError,
    SweepFileError,
    VectorMismatchError,
)
from workbench.files import user_path
from workbench.options import check_bool

from .quality import QUALITY_COLUMNS

SWEEP_FORMAT = "workbench.sweep"
# 2: the configuration records `vector_id`. Format 1 files are read, never resumed.
SWEEP_VERSION = 2
READABLE_VERSIONS = (1, 2)
# One row per (setting, prompt) unit, in this order.
COLUMNS = (
    "unit",
    "prompt_index",
    "prompt",
    "instruction_id",
    "kwargs",
    "layer",
    "mode",
    "strength",
    "coefficient",
    "gate_on",
    "response",
    "follows_strict",
    "follows_loose",
    *QUALITY_COLUMNS,
    "seconds",
)


def _tensor_bytes(t: Any) -> bytes:
    import torch  # here, so that reading sweep files needs no torch

    return t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def diffs_digest(vector: Any) -> str:
    """The digest of a vector's mean differences alone (``"vector"`` in every header).

    Example:
        >>> len(diffs_digest(vec))
        16
    """
    return hashlib.sha256(_tensor_bytes(vector.diffs)).hexdigest()[:16]


def vector_id(vector: Any) -> str:
    """The vector's identity in a sweep header: a digest of all a sweep's rows depend on.

    Covers the mean differences and projections, layers, hook, read position, prompt
    style, instruction id and kwargs, and the weights' fingerprint; not the selection
    or the per-pair differences, so a vector keeps its identity through
    ``with_selection`` and a save and load.

    Example:
        >>> vector_id(vec) == vector_id(vec.with_selection({"layer": 1, "mode": "add", "coefficient": 2.0}))
        True
    """
    digest = hashlib.sha256()
    for t in (vector.diffs, vector.mean_proj_with, vector.mean_proj_without):
        digest.update(_tensor_bytes(t))
    labels = {
        "layers": list(vector.layers),
        "hook_name": vector.hook_name,
        "position": vector.position,
        "prompt_style": vector.prompt_style,
        "instruction_id": vector.instruction_id,
        "kwargs": dict(vector.kwargs),
        "fingerprint": vector.fingerprint,
    }
    digest.update(json.dumps(labels, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:16]


def _describe(vector: Any) -> str:
    layers = list(vector.layers)
    shown = f"{layers[0]}..{layers[-1]}" if len(layers) > 3 else str(layers)
    return f"{vector.instruction_id or 'no instruction'} on {vector.model_name!r}, layers {shown}"


def table_identity(
    config: Mapping[str, Any], sources: list[str] | None, rows: int
) -> dict[str, Any]:
    """What ``table.attrs["sweep"]`` holds: the swept vector, the files, rows held of all."""
    return {
        "vector_id": config.get("vector_id"),
        "vector": config.get("vector"),
        "model": config.get("model"),
        "sources": sources,
        "rows": rows,
        "units": len(config.get("grid", [])) * len(config.get("prompts", [])),
        # The gate every steered row ran under (`sweeps._gate_record`), or None.
        "gate": config.get("gate"),
    }


def _origin(identity: Mapping[str, Any]) -> str:
    sources = identity.get("sources")
    return f"the sweep in {sources}" if sources else "the sweep table"


def check_table_vector(table: pd.DataFrame, vector: Any) -> None:
    """Raise `VectorMismatchError` if `table` is a sweep of another vector than `vector`.

    A table without ``attrs["sweep"]`` (built by hand) carries no identity to compare.

    Example:
        >>> table = sweep(model, vec, ["Hi"], layers=[1], max_new_tokens=2, progress=False)
        >>> check_table_vector(table, vec)
        >>> other = compute_instruction_vector(model, make_pairs("capitals", n=3))
        >>> check_table_vector(table, other)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.VectorMismatchError: the sweep table was run with vector ..., not with this vector ... (change_case:english_capital on ..., layers [0, 1, 2]); pass the vector that was swept
    """
    identity = table.attrs.get("sweep")
    if not isinstance(identity, Mapping):
        return
    if identity.get("vector_id") is not None:
        ours, theirs, what = vector_id(vector), identity["vector_id"], "vector"
    else:
        # Format 1 recorded only the mean differences' digest.
        ours, theirs = diffs_digest(vector), identity.get("vector")
        what = "vector (format-1 file: mean differences only)"
    if ours != theirs:
        raise VectorMismatchError(
            f"{_origin(identity)} was run with {what} {theirs}, not with this vector "
            f"{ours} ({_describe(vector)}); pass the vector that was swept"
        )


def check_complete(table: pd.DataFrame, use: str) -> None:
    """Raise if `table` holds only part of its sweep (one shard, an unfinished run)."""
    identity = table.attrs.get("sweep")
    if not isinstance(identity, Mapping):
        return
    # Counted on the table itself: pandas keeps attrs through filtering and concat.
    units = table["unit"] if "unit" in table.columns else None
    if units is not None and units.duplicated().any():
        twice = sorted(int(u) for u in units[units.duplicated()].unique())[:5]
        raise InvalidArgumentError(
            f"{_origin(identity)}: the table holds unit(s) {twice} more than once (concatenated "
            f"twice?); {use} needs each (setting, prompt) once"
        )
    rows = len(table) if units is None else int(units.nunique())
    if rows >= identity.get("units", 0):
        return
    raise InvalidArgumentError(
        f"{_origin(identity)} holds {rows} of its {identity['units']} rows; "
        f"{use} needs the whole sweep: merge every shard's file with merge_sweeps, or finish "
        "the sweep by running it again with the same out file"
    )


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing numbers are written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def encode_row(row: Mapping[str, Any]) -> str:
    """One sweep file line: `row` as strict JSON (no NaN), newline-terminated."""
    return json.dumps({k: _clean(v) for k, v in row.items()}, allow_nan=False) + "\n"


def _header(config: Mapping[str, Any], shard: tuple[int, int] | None) -> dict[str, Any]:
    return {"format": SWEEP_FORMAT, "version": SWEEP_VERSION, "config": config, "shard": shard}


def read_rows(
    path: Path, config: Mapping[str, Any] | None, *, repair: bool = False
) -> tuple[dict[str, Any], list[dict]]:
    """The header and rows of `path`; a torn last line (a write that never finished) is
    skipped, and cut off in place only with `repair` (by the sweep about to append),
    never by a reader: it may be a line a running sweep is writing.

    With `config`, the file must have been written by a sweep of that configuration.
    """
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise SweepFileError(f"sweep file {str(path)!r} is a directory, not a file") from None
    except FileNotFoundError:
        raise SweepFileError(f"sweep file {str(path)!r} does not exist") from None
    except OSError as e:
        raise SweepFileError(
            f"sweep file {str(path)!r} cannot be read: {e.strerror or e}"
        ) from None
    lines = data.split(b"\n")
    good_end, rows, header, torn = 0, [], None, False
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            good_end += len(raw) + (0 if last else 1)
            continue
        try:
            # Text after the final newline is a write that never finished.
            item = None if last else json.loads(raw)
        except ValueError:
            item = None
        if item is None:
            if last or all(not rest.strip() for rest in lines[i + 1 :]):
                torn = True
                break
            raise SweepFileError(f"{str(path)!r} line {i + 1} is not valid JSON") from None
        good_end += len(raw) + 1
        if header is None:
            header = item
        elif isinstance(item, dict) and isinstance(item.get("unit"), int):
            rows.append(item)
        else:
            raise SweepFileError(f"{str(path)!r} line {i + 1} is not a sweep row")
    if not isinstance(header, dict) or header.get("format") != SWEEP_FORMAT:
        raise SweepFileError(f"{str(path)!r} is not a workbench sweep file (no sweep header)")
    _check_header(path, header)
    expected = None if config is None else json.loads(json.dumps(config))
    if expected is not None and header["version"] == 1:
        # Format 1 had no vector_id: the same configuration less it (the mean differences'
        # digest "vector" included) resumes, and stays identified as format 1 was.
        expected.pop("vector_id", None)
    if expected is not None and header.get("config") != expected:
        raise SweepFileError(
            f"{str(path)!r} holds a sweep with another configuration; write to another file, "
            "or delete this one to start over"
        )
    # Only a file proven to be a sweep of this configuration is ever changed.
    if torn and repair:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return header, rows


def _check_header(path: Path, header: dict[str, Any]) -> None:
    """Refuse a header of an unknown format version or without a readable configuration."""
    version = header.get("version")
    if version not in READABLE_VERSIONS:
        raise SweepFileError(
            f"{str(path)!r} is a sweep file of format {version!r}; this workbench reads "
            f"formats {list(READABLE_VERSIONS)} (a newer workbench wrote it?)"
        )
    config, shard = header.get("config"), header.get("shard")
    fields_ok = isinstance(config, dict) and all(
        isinstance(config.get(k), list) for k in ("grid", "prompts")
    )
    shard_ok = shard is None or (
        isinstance(shard, list)
        and len(shard) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
        and 0 <= shard[0] < shard[1]
    )
    if not fields_ok or not shard_ok:
        raise SweepFileError(f"{str(path)!r} has a corrupt sweep header")


def open_for_append(
    path: Path, config: Mapping[str, Any], shard: tuple[int, int] | None
) -> list[dict[str, Any]]:
    """Rows already in `path` (creating it with a header if new), ready to append to."""
    if path.exists() and path.stat().st_size > 0:
        header, rows = read_rows(path, config, repair=True)
        if header.get("shard") != (list(shard) if shard else None):
            raise SweepFileError(
                f"{str(path)!r} was written by shard {header.get('shard')}, not {shard}"
            )
        return rows
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(encode_row(_header(config, shard)))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    return []


def append_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append scored rows durably (flushed and synced before returning)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(encode_row(r) for r in rows))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise FileWriteError(f"cannot write {str(path)!r}: {e.strerror or e}") from e


def as_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows ordered by work unit, with the sweep table's columns."""
    table = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if "layer" in table:
        # The baseline's layer is missing, not a float NaN among int layers.
        table["layer"] = table["layer"].astype("Int64")
    return table.sort_values("unit", kind="stable").reset_index(drop=True)


def merge_sweeps(paths: Sequence[str | Path], *, partial: bool = False) -> pd.DataFrame:
    """One table from the files of a sharded sweep (or several runs of the same sweep).

    Every file must hold the same configuration and shards of one count; a unit found
    twice must hold the same row. The result equals the table of the unsharded sweep,
    so the files must hold every row of it: a missing shard or an unfinished run is
    refused, naming what is missing, unless `partial` (to look at a running sweep).
    ``table.attrs["sweep"]`` records the vector swept and the rows held
    (`table_identity`).

    Example:
        >>> import tempfile
        >>> from workbench.evaluation.sweeps import sweep
        >>> d = Path(tempfile.mkdtemp())
        >>> kw = dict(layers=[1], strengths=[1.0], max_new_tokens=3, progress=False)
        >>> parts = [d / f"part{i}.jsonl" for i in range(2)]
        >>> for i, p in enumerate(parts):
        ...     _ = sweep(model, vec, ["Hi", "Yo"], out=p, shard=(i, 2), **kw)
        >>> len(merge_sweeps(parts))
        4
        >>> merge_sweeps(parts[:1])
        Traceback (most recent call last):
        ...
        workbench.errors.SweepFileError: the files hold 2 of the sweep's 4 rows: shard 1 of 2 is missing; pass every shard's file
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise ArgumentTypeError(
            f"paths must be a list of sweep files, got {type(paths).__name__} {paths!r:.80}; "
            f"give a list such as [{str(paths)!r}]"
        )
    check_bool("partial", partial)
    if not paths:
        raise SweepFileError("merge_sweeps needs at least one file")
    files = [user_path(p, "sweep file") for p in paths]
    headers, merged = [], {}
    for path in files:
        header, rows = read_rows(path, None)
        if headers and header["config"] != headers[0]["config"]:
            raise SweepFileError(
                f"{str(path)!r} holds a sweep of another configuration than "
                f"{str(files[0])!r}; merge only the files of one sweep"
            )
        headers.append(header)
        for row in rows:
            seen = merged.setdefault(row["unit"], row)
            if {k: v for k, v in seen.items() if k != "seconds"} != {
                k: v for k, v in row.items() if k != "seconds"
            }:
                raise SweepFileError(f"unit {row['unit']} differs between files")
    names = [str(p) for p in files]
    config = headers[0]["config"]
    shards = [tuple(h["shard"]) if h.get("shard") else (0, 1) for h in headers]
    counts = sorted({n for _, n in shards})
    if len(counts) > 1:
        listed = ", ".join(
            f"{n!r} is shard {i}/{c}" for n, (i, c) in zip(names, shards, strict=True)
        )
        raise SweepFileError(f"the files are shards of different counts ({listed}); merge one set")
    count, units = counts[0], len(config["grid"]) * len(config["prompts"])
    strays = sorted(u for u in merged if not 0 <= u < units)
    if strays:
        raise SweepFileError(f"the files hold units {strays[:5]} outside the sweep's {units}")
    table = as_frame(list(merged.values()))
    table.attrs["sweep"] = table_identity(config, names, len(table))
    if len(merged) < units and not partial:
        missing = sorted(set(range(count)) - {i for i, _ in shards})
        if missing:
            which = f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
            why = f"{which} of {count} {'are' if len(missing) > 1 else 'is'} missing; pass every shard's file"
        else:
            why = (
                "the sweep is unfinished; run it again with the same out file to finish it "
                "(or pass partial=True to look at what is there)"
            )
        raise SweepFileError(f"the files hold {len(merged)} of the sweep's {units} rows: {why}")
    return table
