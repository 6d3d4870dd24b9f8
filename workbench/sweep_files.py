"""The sweep results file: JSON lines, one header then one scored row per line.

The header records the sweep's configuration; a file is only ever resumed or merged
with the same configuration. Rows are appended and flushed as they are scored, so a
killed sweep loses at most the batch in flight. A torn last line (the process died
mid-write) is cut off and its row redone; a corrupt line elsewhere is an error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import SweepFileError

SWEEP_FORMAT = "workbench.sweep"
SWEEP_VERSION = 1
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
    "response",
    "follows_strict",
    "follows_loose",
    "degenerate",
    "n_tokens",
    "empty",
    "truncated",
    "repeated_ngram_share",
    "perplexity",
    "seconds",
)


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing numbers are written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def encode_row(row: Mapping[str, Any]) -> str:
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
    data = path.read_bytes()
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
    if config is not None and header.get("config") != json.loads(json.dumps(config)):
        raise SweepFileError(
            f"{str(path)!r} holds a sweep with another configuration; write to another file, "
            "or delete this one to start over"
        )
    # Only a file proven to be a sweep of this configuration is ever changed.
    if torn and repair:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return header, rows


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(encode_row(_header(config, shard)))
        f.flush()
        os.fsync(f.fileno())
    return []


def append_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append scored rows durably (flushed and synced before returning)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(encode_row(r) for r in rows))
        f.flush()
        os.fsync(f.fileno())


def as_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows ordered by work unit, with the sweep table's columns."""
    table = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if "layer" in table:
        # The baseline's layer is missing, not a float NaN among int layers.
        table["layer"] = table["layer"].astype("Int64")
    return table.sort_values("unit", kind="stable").reset_index(drop=True)


def merge_sweeps(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One table from the files of a sharded sweep (or several runs of the same sweep).

    Every file must hold the same configuration; a unit found twice must hold the
    same row. The result equals the table of the unsharded sweep.

    Example:
        >>> import tempfile
        >>> from workbench.sweeps import sweep
        >>> d = Path(tempfile.mkdtemp())
        >>> kw = dict(layers=[1], strengths=[1.0], max_new_tokens=3, progress=False)
        >>> parts = [d / f"part{i}.jsonl" for i in range(2)]
        >>> for i, p in enumerate(parts):
        ...     _ = sweep(model, vec, ["Hi", "Yo"], out=p, shard=(i, 2), **kw)
        >>> len(merge_sweeps(parts))
        4
    """
    if not paths:
        raise SweepFileError("merge_sweeps needs at least one file")
    configs, merged = [], {}
    for path in paths:
        header, rows = read_rows(Path(path), None)
        configs.append(header["config"])
        for row in rows:
            seen = merged.setdefault(row["unit"], row)
            if {k: v for k, v in seen.items() if k != "seconds"} != {
                k: v for k, v in row.items() if k != "seconds"
            }:
                raise SweepFileError(f"unit {row['unit']} differs between files")
    if any(c != configs[0] for c in configs):
        raise SweepFileError(f"{[str(p) for p in paths]} hold sweeps of different configurations")
    return as_frame(list(merged.values()))
