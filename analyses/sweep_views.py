"""Layer sweeps as tables: accuracy and degenerate share against layer, and the
layer × strength grid of one mode.

Everything is built on `workbench.evaluation.selection.summarize` (one row per setting) and
`workbench.evaluation.selection.select` (the chosen setting), so a figure shows exactly the
numbers the selection was made on. The drawings are in `analyses.sweep_figures`.

A sweep table is what `workbench.sweep` returns or `workbench.merge_sweeps` reads
(columns `workbench.evaluation.sweep_files.COLUMNS`; ``layer`` missing marks the unsteered
baseline). Functions taking several instructions take ``{label: table}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from workbench import instruction, instruction_names, select
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.evaluation.selection import summarize
from workbench.options import Mode, Objective, as_float, check_choice

# What a line of `layer_sweep` stands for: one steering strength (of one mode), or
# one instruction at its selected (or a given) strength.
By = Literal["strength", "instruction"]
_SUMMARY = ["layer", "mode", "strength", "coefficient", "n", "accuracy", "degenerate_share"]


@dataclass(frozen=True, eq=False)
class LayerSweep:
    """Accuracy and degenerate share against layer, with the baseline and the choice.

    Attributes:
        curves: one row per (line, layer): ``instruction, line, layer, mode, strength,
            coefficient, n, accuracy, degenerate_share``; ``line`` names the line
            within its instruction (``"project ×1"``, or the instruction's label).
        baseline: one row per instruction whose table holds an unsteered baseline:
            ``instruction, n, accuracy, degenerate_share``.
        selected: one row per instruction with a baseline: `select`'s choice, columns
            ``instruction`` and those of `summarize` (``layer`` missing when not
            steering was chosen).
        by: ``"strength"`` or ``"instruction"``, what a line stands for.
        metric: the accuracy column (``follows_strict`` or ``follows_loose``).
    """

    curves: pd.DataFrame
    baseline: pd.DataFrame
    selected: pd.DataFrame
    by: str
    metric: str


def table_label(table: pd.DataFrame) -> str:
    """A short name for a sweep table: the bundled instruction whose IFEval id and
    kwargs every row carries, else that id, else ``"sweep"`` (mixed instructions).

    Example:
        >>> table_label(pd.DataFrame({"instruction_id": ["punctuation:no_comma"], "kwargs": [{}]}))
        'no_comma'
    """
    if "instruction_id" not in table.columns or table.empty:
        return "sweep"
    ids = table["instruction_id"].dropna().unique().tolist()
    if len(ids) != 1:
        return "sweep"
    kwargs = table["kwargs"].tolist() if "kwargs" in table.columns else [{}]
    if any(k != kwargs[0] for k in kwargs):
        return ids[0]
    for name in instruction_names():
        spec = instruction(name)
        if spec.instruction_id == ids[0] and dict(spec.kwargs) == dict(kwargs[0] or {}):
            return name
    return ids[0]


def as_tables(results: Any) -> dict[str, pd.DataFrame]:
    """``{label: sweep table}`` from one table (labelled with `table_label`) or a mapping.

    Example:
        >>> list(as_tables({"mine": pd.DataFrame()}))
        ['mine']
    """
    if isinstance(results, pd.DataFrame):
        return {table_label(results): results}
    if not isinstance(results, Mapping) or not results:
        raise ArgumentTypeError(
            "results must be a sweep table (DataFrame) or a non-empty mapping "
            f"{{instruction label: sweep table}}, got {type(results).__name__}"
        )
    for label, table in results.items():
        if not isinstance(label, str):
            raise ArgumentTypeError(f"labels must be str, got {type(label).__name__} {label!r}")
        if not isinstance(table, pd.DataFrame):
            raise ArgumentTypeError(
                f"results[{label!r}] must be a sweep table (DataFrame), got {type(table).__name__}"
            )
    return dict(results)


def _evidence(label: str, table: pd.DataFrame, metric: str, objective: str) -> pd.DataFrame:
    """`summarize`'s rows with ``eligible``/``chosen`` when the table has a baseline."""
    try:
        summary = summarize(table, metric)
    except InvalidArgumentError as e:
        raise type(e)(f"results[{label!r}]: {e}") from e
    if summary["layer"].notna().sum() == 0:
        raise InvalidArgumentError(f"results[{label!r}] hold no steered rows (every layer missing)")
    if summary["layer"].isna().any():
        return select(table, metric=metric, objective=objective).evidence
    # No baseline (a sweep run with baseline=False): nothing to select against.
    return summary.assign(eligible=pd.NA, chosen=False)


def _same_strength(values: pd.Series, strength: float | None) -> pd.Series:
    """Rows whose strength is `strength` (None matches ablate's missing strength)."""
    if strength is None or (isinstance(strength, float) and math.isnan(strength)):
        return values.isna()
    return (values - strength).abs() <= 1e-9


def _line_name(mode: str, strength: float) -> str:
    return mode if pd.isna(strength) else f"{mode} ×{strength:g}"


def _check_strength(strength: Any) -> float | None:
    return None if strength is None else as_float("strength", strength)


def _instruction_lines(
    label: str, steered: pd.DataFrame, chosen: pd.Series | None, mode: str | None, strength: Any
) -> pd.DataFrame:
    """The rows of one instruction's single line (by="instruction")."""
    if strength is None:
        if chosen is None or pd.isna(chosen["layer"]):
            raise InvalidArgumentError(
                f"{label!r}: no steered setting was selected (no baseline, or the unsteered "
                "baseline was best), so there is no selected strength to follow across layers; "
                f"pass strength= (one of {sorted(steered['strength'].dropna().unique().tolist())})"
            )
        mode = mode or chosen["mode"]
        strength = chosen["strength"]
    rows = steered[_same_strength(steered["strength"], strength)]
    if mode is not None:
        rows = rows[rows["mode"] == mode]
    modes = sorted(rows["mode"].unique().tolist())
    if len(modes) > 1:
        raise InvalidArgumentError(
            f"{label!r} steers with modes {modes} at strength {strength}; pass mode= one of them"
        )
    if rows.empty:
        raise InvalidArgumentError(
            f"{label!r} has no rows at mode={mode!r}, strength={strength!r}; it has "
            f"{sorted({_line_name(m, s) for m, s in zip(steered['mode'], steered['strength'], strict=True)})}"
        )
    return rows.assign(line=label)


def layer_sweep(
    results: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    by: str = "strength",
    mode: str | None = None,
    strength: float | None = None,
    metric: str = "follows_strict",
    objective: str = "accuracy",
) -> LayerSweep:
    """Accuracy and degenerate share per layer, one line per strength or per instruction.

    Args:
        results: a sweep table, or ``{instruction label: sweep table}``.
        by: ``"strength"``: a line per (mode, strength) of each instruction;
            ``"instruction"``: a line per instruction, at `strength` (default: the
            strength and mode `select` chose for that instruction).
        mode: keep only this steering mode (default: every mode, or for
            ``by="instruction"`` the selected one).
        strength: keep only this strength.
        metric: ``"follows_strict"`` or ``"follows_loose"``.
        objective: what the selection maximises, as in `select`.

    Returns:
        A `LayerSweep`; tables without a baseline have no baseline or selected row.

    Example:
        >>> rows = pd.DataFrame({"layer": [None, 1, 2, 1, 2], "mode": [None] + ["add"] * 4,
        ...     "strength": [None, 1.0, 1.0, 2.0, 2.0], "coefficient": [None, 3.0, 5.0, 6.0, 10.0],
        ...     "follows_strict": [False, False, True, True, False], "degenerate": [False] * 5})
        >>> sweep = layer_sweep({"lowercase": rows})
        >>> sweep.curves[["line", "layer", "accuracy"]].values.tolist()
        [['add ×1', 1, 0.0], ['add ×1', 2, 1.0], ['add ×2', 1, 1.0], ['add ×2', 2, 0.0]]
        >>> sweep.selected[["layer", "strength"]].values.tolist(), sweep.baseline.accuracy.tolist()
        ([[1, 2.0]], [0.0])
        >>> layer_sweep(rows, by="instruction").curves[["line", "strength"]].values.tolist()
        [['sweep', 2.0], ['sweep', 2.0]]
    """
    check_choice("by", by, By)
    check_choice("objective", objective, Objective)
    if mode is not None:
        check_choice("mode", mode, Mode)
    strength = _check_strength(strength)
    curves, baselines, selected = [], [], []
    for label, table in as_tables(results).items():
        evidence = _evidence(label, table, metric, objective)
        steered = evidence[evidence["layer"].notna()]
        base = evidence[evidence["layer"].isna()]
        chosen = evidence[evidence["chosen"]]
        chosen_row = chosen.iloc[0] if len(chosen) else None
        if by == "instruction":
            rows = _instruction_lines(label, steered, chosen_row, mode, strength)
        else:
            rows = steered
            if mode is not None:
                rows = rows[rows["mode"] == mode]
            if strength is not None:
                rows = rows[_same_strength(rows["strength"], strength)]
            if rows.empty:
                raise InvalidArgumentError(
                    f"{label!r} has no rows at mode={mode!r}, strength={strength!r}; it has modes "
                    f"{sorted(steered['mode'].unique().tolist())} and strengths "
                    f"{sorted(steered['strength'].dropna().unique().tolist())}"
                )
            rows = rows.assign(
                line=[_line_name(m, s) for m, s in zip(rows["mode"], rows["strength"], strict=True)]
            )
        curves.append(rows.assign(instruction=label))
        baselines.append(base.assign(instruction=label))
        selected.append(chosen.assign(instruction=label))
    curve_cols = ["instruction", "line", *_SUMMARY]
    curves_frame = pd.concat(curves, ignore_index=True)[curve_cols]
    order = curves_frame.assign(_s=curves_frame["strength"].fillna(-math.inf))
    # Instructions in the order given; within one, lines by mode then strength, then layer.
    order["_i"] = order["instruction"].map(
        {k: i for i, k in enumerate(dict.fromkeys(order.instruction))}
    )
    order = order.sort_values(["_i", "mode", "_s", "layer"], kind="stable")
    return LayerSweep(
        curves=order[curve_cols].reset_index(drop=True),
        baseline=pd.concat(baselines, ignore_index=True)[
            ["instruction", "n", "accuracy", "degenerate_share"]
        ],
        selected=pd.concat(selected, ignore_index=True)[["instruction", *_SUMMARY]],
        by=by,
        metric=metric,
    )


def accuracy_grid(
    results: pd.DataFrame,
    *,
    mode: str | None = None,
    metric: str = "follows_strict",
    objective: str = "accuracy",
) -> pd.DataFrame:
    """One row per (layer, strength) of one steering mode, for a layer × strength heatmap.

    Columns: ``layer, strength, mode, coefficient, n, accuracy, degenerate_share,
    eligible`` (degenerate share not above the baseline's, as `select` requires),
    ``selected`` (the cell `select` chose; no cell when it chose another mode or
    not to steer), ``baseline_n``, ``baseline_accuracy`` and
    ``baseline_degenerate_share`` (the unsteered run's, the same on every row; missing
    without a baseline).

    Args:
        results: one sweep table (call once per instruction).
        mode: ``"add"``, ``"project"`` or ``"clamp"``; None when the table steers with one of them only.
        metric, objective: the accuracy column and what the selection maximises, as in
            `select`.

    Example:
        >>> rows = pd.DataFrame({"layer": [None, 1, 2], "mode": [None, "add", "add"],
        ...     "strength": [None, 1.0, 1.0], "coefficient": [None, 3.0, 5.0],
        ...     "follows_strict": [False, False, True], "degenerate": [False] * 3})
        >>> accuracy_grid(rows)[["layer", "strength", "accuracy", "selected", "baseline_accuracy"]].values.tolist()
        [[1, 1.0, 0.0, False, 0.0], [2, 1.0, 1.0, True, 0.0]]
    """
    if not isinstance(results, pd.DataFrame):
        raise ArgumentTypeError(
            f"results must be one sweep table (DataFrame), got {type(results).__name__}; "
            "call accuracy_grid once per instruction"
        )
    check_choice("objective", objective, Objective)
    evidence = _evidence(table_label(results), results, metric, objective)
    steered = evidence[evidence["layer"].notna()]
    graded = sorted(m for m in steered["mode"].unique() if m != "ablate")
    if mode is None:
        if len(graded) != 1:
            raise InvalidArgumentError(
                f"results steer with modes {graded or ['ablate']}; pass mode= one of "
                f"{graded or ['add', 'project']} (ablate has no strengths)"
            )
        mode = graded[0]
    check_choice("mode", mode, Mode)
    if mode not in graded:
        raise InvalidArgumentError(
            f"results hold no rows of mode {mode!r}; the modes with strengths are {graded}"
        )
    base = evidence[evidence["layer"].isna()]
    grid = steered[steered["mode"] == mode].rename(columns={"chosen": "selected"})
    grid = grid.assign(
        baseline_n=int(base["n"].iloc[0]) if len(base) else pd.NA,
        baseline_accuracy=float(base["accuracy"].iloc[0]) if len(base) else math.nan,
        baseline_degenerate_share=float(base["degenerate_share"].iloc[0])
        if len(base)
        else math.nan,
    ).sort_values(["layer", "strength"], kind="stable")
    columns = ["layer", "strength", "mode", "coefficient", "n", "accuracy", "degenerate_share"]
    columns += ["eligible", "selected", "baseline_n", "baseline_accuracy"]
    columns += ["baseline_degenerate_share"]
    return grid[columns].reset_index(drop=True)
