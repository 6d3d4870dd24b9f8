"""Layer × mode × strength sweeps, scored and guarded, resumable and shardable.

A sweep's work units are (setting, prompt) pairs. A setting is one steering term
(layer, mode, strength) or the unsteered baseline (``layer=None``). Units run as
batched per-row generation (`PerRow`), so one batch mixes settings. Each scored
row is appended to the results file before the next batch starts; a restarted
sweep skips what the file holds. ``shard=(i, n)`` runs units ``u`` with
``u % n == i``, so n processes (a job array) can share a sweep and
`merge_sweeps` joins their files into the table of the unsharded sweep.

Strength is a multiple of each mode's default coefficient at that layer
(`workbench.steering.settings`, which turns a `Setting` into its term): ``add``
adds ``strength × |mean difference|`` along u; ``project`` sets the component
along u to ``strength × z̄`` (the mean with-instruction projection).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.files import write_target
from workbench.model.info import model_info
from workbench.options import (
    Mode,
    as_list,
    check_bool,
    check_choice,
    check_distinct,
    check_int,
    choices,
    float_list,
    int_list,
)
from workbench.steering.gates import Gate
from workbench.steering.loops import LoopStop
from workbench.steering.settings import Setting
from workbench.vectors.checks import checks_once
from workbench.vectors.ifeval import check_instruction
from workbench.vectors.instruction_vector import InstructionVector

from .quality import QualityThresholds
from .sweep_files import (
    append_rows,
    as_frame,
    diffs_digest,
    open_for_append,
    table_identity,
    vector_id,
)
from .sweep_units import Decoding, SweepPrompt, scored_batches

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

# What sweeps (and so the evaluation protocol) stop loops with unless told otherwise.
LOOP_STOP = LoopStop()


def settings_grid(
    vector: InstructionVector,
    layers: Sequence[int],
    modes: Sequence[str],
    strengths: Sequence[float],
    baseline: bool = True,
) -> list[Setting]:
    """The baseline (first) then every layer × mode × strength (ablate takes none).

    Example:
        >>> [s.layer for s in settings_grid(vec, [1, 2], ["add"], [0.5, 1.0])]
        [None, 1, 1, 2, 2]
    """
    check_bool("baseline", baseline)
    layers = int_list("layers", layers, "layer")
    for layer in layers:
        vector.row(layer)
    modes = as_list("modes", modes, "['add']")
    if not modes:
        raise InvalidArgumentError(f"modes is empty; give at least one of {choices(Mode)}")
    for mode in modes:
        check_choice("mode", mode, Mode)
    check_distinct("modes", modes)
    strengths = float_list("strengths", strengths, "strength")
    grid = [Setting(None)] if baseline else []
    for layer in layers:
        for mode in modes:
            if mode == "ablate":
                grid.append(Setting(layer, mode))
            else:
                grid.extend(Setting(layer, mode, float(s)) for s in strengths)
    return grid


def _as_prompts(prompts: Any, vector: InstructionVector) -> list[SweepPrompt]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ArgumentTypeError(f"prompts must be a non-empty list, got {prompts!r}")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            p = SweepPrompt(p)
        if not isinstance(p, SweepPrompt):
            raise ArgumentTypeError(f"prompt {i} must be a str or a SweepPrompt, got {p!r}")
        if p.instruction_id is None:
            if vector.instruction_id is None:
                raise InvalidArgumentError(
                    f"prompt {i} names no instruction and the vector has none to check against"
                )
            p = SweepPrompt(p.text, vector.instruction_id, dict(vector.kwargs))
        try:
            # Checked now: the scorer would otherwise refuse it after the first batch.
            check_instruction(p.instruction_id, p.kwargs)
        except WorkbenchError as e:
            raise type(e)(f"prompt {i}: {e}") from e
        out.append(p)
    return out


def _config(model: Any, vector: InstructionVector, prompts: list[SweepPrompt], **kw: Any) -> dict:
    info = model_info(model)
    return {
        "model": info.name,
        "fingerprint": info.fingerprint,
        "vector": diffs_digest(vector),
        "vector_id": vector_id(vector),
        "prompts": [[p.text, p.instruction_id, dict(p.kwargs)] for p in prompts],
        **kw,
    }


def _gate_record(gate: Gate) -> dict[str, Any]:
    """What a sweep file records of its gate (a tensor vector by its values' digest)."""
    vec = gate.vector
    if vec is None:
        source = None
    elif isinstance(vec, InstructionVector):
        source = diffs_digest(vec)
    else:
        source = hashlib.sha256(vec.detach().float().cpu().numpy().tobytes()).hexdigest()
    return {"vector": source, "layer": gate.layer, "threshold": gate.threshold, "side": gate.side}


def _check_shard(shard: Any) -> tuple[int, int] | None:
    if shard is None:
        return None
    if not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise InvalidArgumentError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    n = check_int("shard count", shard[1], low=1)
    return check_int("shard index", shard[0], low=0, high=n - 1), n


def _check_types(**values: Any) -> None:
    """Refuse a value of the wrong type among sweep's loop_stop, label, gate, executor."""
    from .ray_executor import RayExecutor  # imports no Ray itself

    expected = {
        "loop_stop": (LoopStop, "a LoopStop or None"),
        "label": (str, "a str"),
        "gate": (Gate, "a Gate or None"),
        "executor": (RayExecutor, "a RayExecutor or None"),
    }
    for name, value in values.items():
        kind, what = expected[name]
        if not isinstance(value, kind) and not (value is None and name != "label"):
            raise ArgumentTypeError(
                f"{name} must be {what}, got {type(value).__name__} {value!r:.60}"
            )


def sweep(
    model: Any,
    vector: InstructionVector,
    prompts: Sequence[str | SweepPrompt],
    *,
    layers: Sequence[int],
    modes: Sequence[str] = ("project",),
    strengths: Sequence[float] = (0.25, 0.5, 1.0),
    baseline: bool = True,
    max_new_tokens: int = 64,
    out: str | Path | None = None,
    shard: tuple[int, int] | None = None,
    batch_size: int = 32,
    thresholds: QualityThresholds | None = None,
    progress: bool = True,
    label: str = "sweep",
    loop_stop: LoopStop | None = LOOP_STOP,
    refill: bool = True,
    gate: Gate | None = None,
    executor: RayExecutor | None = None,
) -> pd.DataFrame:
    """Generate, score and guard every (setting, prompt); one tidy row each.

    Args:
        prompts: user messages (str: checked against the vector's instruction) or
            `SweepPrompt`s carrying their own instruction id and kwargs.
        layers, modes, strengths: the grid (see the module docstring): lists (or 1-d
            arrays) of distinct values, never a bare str or number; the unsteered
            baseline (``layer=None``) comes first unless ``baseline=False``.
        out: a JSONL file (``~`` expanded, a symlink followed; a directory or device
            is refused); rows are appended as they are scored, and a restarted
            sweep with the same arguments skips the rows it holds.
        shard: ``(i, n)`` runs the i-th of n disjoint parts (see `merge_sweeps`).
        progress, label: whether to show a progress bar, and its label.
        loop_stop: the `LoopStop` that ends looping answers early (marked
            ``stopped_loop``, counted degenerate); None decodes every answer to
            ``max_new_tokens``. Part of the file's configuration.
        refill: decode with refilled batches of ``batch_size`` rows (see
            `workbench.steering.decoding`; the same greedy tokens as static batches,
            faster when answers end at different lengths).
        gate: a `workbench.steering.gates.Gate` put on every steered setting's term
            (a gate without a vector or layer reads the setting's own layer); its
            decision per row is the ``gate_on`` column (missing where nothing is
            gated). Its vector, layer, threshold and side are part of the file's
            configuration. None (default) gates nothing.
        executor: a `workbench.evaluation.ray_executor.RayExecutor` to decode the
            units on its workers (this process stays the only writer of `out`); None
            (default) decodes them here. The table is the same either way.

    Returns:
        A DataFrame with the columns `sweep_files.COLUMNS`, ordered by work unit, holding this
        run's part (all of it without `shard`). ``attrs["sweep"]`` names the vector swept
        and the rows held of all (`sweep_files.table_identity`), which `select` checks.

    Example:
        >>> table = sweep(model, vec, ["Hi"], layers=[1, 2], strengths=[0.5], max_new_tokens=4, progress=False)
        >>> table.layer.tolist(), table.strength.tolist()
        ([<NA>, 1, 2], [nan, 0.5, 0.5])
    """
    if not isinstance(vector, InstructionVector):
        raise ArgumentTypeError(
            f"vector must be an InstructionVector, got {type(vector).__name__} {vector!r:.60}"
        )
    # One check of the vector for the whole sweep: each batch's generate would check it
    # (and warn about a transfer) again.
    with checks_once():
        vector.check_model(model)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
        batch_size = check_int("batch_size", batch_size, low=1)
        check_bool("baseline", baseline)
        check_bool("progress", progress)
        check_bool("refill", refill)
        shard = _check_shard(shard)
        _check_types(loop_stop=loop_stop, label=label, gate=gate, executor=executor)
        if thresholds is None:
            thresholds = QualityThresholds()
        if not isinstance(thresholds, QualityThresholds):
            raise ArgumentTypeError(
                f"thresholds must be a QualityThresholds or None, got {type(thresholds).__name__}"
            )
        # Appended to, not replaced: a directory or device is refused, a symlink followed.
        path = None if out is None else write_target(out, "out")
        items = _as_prompts(prompts, vector)
        grid = settings_grid(vector, layers, modes, strengths, baseline)
        config = _config(
            model,
            vector,
            items,
            grid=[[s.layer, s.mode, s.strength] for s in grid],
            max_new_tokens=max_new_tokens,
            thresholds=thresholds.record(),
            loop_stop=None if loop_stop is None else loop_stop.record(),
            **({} if gate is None else {"gate": _gate_record(gate)}),
        )
        done = {r["unit"]: r for r in open_for_append(path, config, shard)} if path else {}
        units = [
            (u, s, i, p)
            for u, (s, i, p) in enumerate((s, i, p) for s in grid for i, p in enumerate(items))
            if shard is None or u % shard[1] == shard[0]
        ]
        todo = [unit for unit in units if unit[0] not in done]
        # Similar lengths batch together, so little compute goes to padding.
        todo.sort(key=lambda unit: (len(unit[3].text), unit[0]))
        rows = list(done.values())
        bar = tqdm(
            total=len(units), initial=len(done), desc=label, unit="row", disable=not progress
        )
        decoding = Decoding(max_new_tokens, batch_size, thresholds, refill, loop_stop, gate)
        if executor is None:
            batches = scored_batches(model, vector, todo, decoding)
        else:
            batches = executor.scored_batches(model, vector, todo, decoding)
        with contextlib.closing(batches):
            for batch in batches:
                if path is not None:
                    append_rows(path, batch)
                rows += batch
                if executor is not None:
                    bar.set_postfix_str(executor.progress_line(), refresh=False)
                if bar.n + len(batch) < len(units):
                    bar.update(len(batch))
                else:
                    # Counted without drawing: close() draws the finished bar, and a bar
                    # drawn here too would print its last line twice in a log.
                    bar.n = len(units)
        bar.close()
        table = as_frame(rows)
        table.attrs["sweep"] = table_identity(config, [str(path)] if path else None, len(table))
        return table
