"""Choosing a steering setting from a sweep's validation rows.

Rule: among the settings whose degenerate share (by the quality guard,
`workbench.evaluation.quality`) is not above the unsteered baseline's, take the
highest score, where the score is the accuracy by `metric` (``objective="accuracy"``)
or the clean accuracy, the share of answers that follow and are not degenerate
(``objective="clean_accuracy"``). Ties go to the unsteered baseline, then the lower
layer, then the smaller strength. So steering is chosen only when it helps without
breaking more answers than the model breaks on its own, and with the clean
objective a gain made of passing loops counts for nothing.

The reference method disqualifies a layer on one degenerate answer; on its 2B-9B
models the unsteered baseline has none, where this rule is the same. A small model
breaks some answers unsteered, so the baseline's share is the bar here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import Objective, check_choice
from workbench.steering.gates import Gate
from workbench.steering.settings import Setting
from workbench.steering.terms import SteeringTerm
from workbench.vectors.instruction_vector import InstructionVector

from .sweep_files import check_complete, check_table_vector

Metric = Literal["follows_strict", "follows_loose"]
_KEYS = ["layer", "mode", "strength"]


def summarize(results: pd.DataFrame, metric: str = "follows_strict") -> pd.DataFrame:
    """One row per setting: ``layer, mode, strength, coefficient, n, accuracy,
    clean_accuracy, degenerate_share``, the baseline (``layer`` missing) first.

    Example:
        >>> rows = pd.DataFrame({"layer": [None, 1], "mode": [None, "add"], "strength": [None, 1.0],
        ...     "coefficient": [None, 3.0], "follows_strict": [False, True], "degenerate": [False, False]})
        >>> summarize(rows)[["layer", "accuracy"]].values.tolist()
        [[<NA>, 0.0], [1, 1.0]]
    """
    check_choice("metric", metric, Metric)
    if not isinstance(results, pd.DataFrame):
        raise ArgumentTypeError(
            f"results must be a sweep table (a DataFrame), got {type(results).__name__}"
        )
    missing = {*_KEYS, "coefficient", metric, "degenerate"} - set(results.columns)
    if missing:
        raise InvalidArgumentError(f"results lack columns {sorted(missing)}; pass a sweep table")
    if results.empty:
        raise InvalidArgumentError("results has no rows; pass a sweep table")
    for column in (metric, "degenerate"):
        _check_flags(results[column], column)
    try:
        layer = results["layer"].astype("Int64")
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"results' layer column must hold layer indices or missing (the baseline), got "
            f"{results['layer'].head(3).tolist()}"
        ) from None
    # Follows and is not degenerate; a row with no score counts as not following.
    clean = results[metric].fillna(False).astype(bool) & ~results["degenerate"].fillna(
        False
    ).astype(bool)
    table = results.assign(layer=layer, _clean=clean)
    grouped = table.groupby(_KEYS, dropna=False, sort=False)
    out = grouped.agg(
        coefficient=("coefficient", "first"),
        n=(metric, "size"),
        accuracy=(metric, "mean"),
        clean_accuracy=("_clean", "mean"),
        degenerate_share=("degenerate", "mean"),
    ).reset_index()
    out["accuracy"] = out["accuracy"].astype(float)
    out["clean_accuracy"] = out["clean_accuracy"].astype(float)
    out["degenerate_share"] = out["degenerate_share"].astype(float)
    order = out.assign(_base=out["layer"].notna(), _s=out["strength"].abs())
    order = order.sort_values(["_base", "layer", "mode", "_s"], na_position="first", kind="stable")
    return order.drop(columns=["_base", "_s"]).reset_index(drop=True)


def _check_flags(values: pd.Series, column: str) -> None:
    """A yes/no column holds bools (or 0/1) and missing values only, so its mean is a share."""
    bad = [v for v in values.dropna() if not (isinstance(v, (bool, np.bool_)) or v in (0, 1))]
    if bad:
        raise InvalidArgumentError(
            f"results' {column} column must hold True/False, got {bad[0]!r}; pass a sweep table"
        )


@dataclass(frozen=True)
class Selection:
    """The chosen setting and the evidence it was chosen on.

    Attributes:
        setting: the chosen `Setting`; ``layer`` None means "do not steer".
        term: its `SteeringTerm` (None for "do not steer" or without a vector).
        evidence: `summarize`'s table with ``eligible`` and ``chosen`` columns.
        metric: the accuracy column compared.
        objective: what was maximised (``"accuracy"`` or ``"clean_accuracy"``).
        gate: the gate the sweep's steered rows ran under (its file record: vector,
            layer, threshold, side), or None; `term` and `record` keep it, so a setting
            chosen gated is steered gated.
    """

    setting: Setting
    term: SteeringTerm | None
    evidence: pd.DataFrame
    metric: str
    objective: str = "accuracy"
    gate: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """What `InstructionVector.with_selection` stores (JSON-friendly)."""
        row = self.evidence[self.evidence["chosen"]].iloc[0]
        coefficient = row["coefficient"]
        gated = {} if self.gate is None or self.setting.layer is None else {"gate": _own(self.gate)}
        return {
            **gated,
            "layer": self.setting.layer,
            "mode": self.setting.mode,
            "strength": self.setting.strength,
            "coefficient": None if pd.isna(coefficient) else float(coefficient),
            "metric": self.metric,
            "objective": self.objective,
            "accuracy": float(row["accuracy"]),
            "clean_accuracy": float(row["clean_accuracy"]),
            "degenerate_share": float(row["degenerate_share"]),
            "n": int(row["n"]),
        }


def _own(gate: dict[str, Any]) -> dict[str, Any]:
    """A sweep's gate as a stored selection holds it: on the vector's own direction, at
    the steered layer; a gate on another vector or layer cannot travel with this one."""
    if gate.get("vector") is not None or gate.get("layer") is not None:
        raise InvalidArgumentError(
            f"the sweep was gated on another vector or layer ({gate!r}); a stored selection "
            "holds only a gate on the vector's own direction at the steered layer. Steer "
            "with SteeringTerm(vec, layer=..., mode=..., gate=Gate(vector=..., layer=...))"
        )
    return {"side": gate["side"], "threshold": gate["threshold"]}


def select(
    results: pd.DataFrame,
    vector: InstructionVector | None = None,
    *,
    metric: str = "follows_strict",
    objective: str = "accuracy",
) -> Selection:
    """Choose a setting from validation `results` (a `sweep` table) by the module's rule,
    maximising `objective` (``"accuracy"`` by `metric`, or ``"clean_accuracy"``).

    Example:
        >>> rows = pd.DataFrame({"layer": [None, 1, 2], "mode": [None, "add", "add"],
        ...     "strength": [None, 1.0, 1.0], "coefficient": [None, 3.0, 5.0],
        ...     "follows_strict": [False, True, True], "degenerate": [False, False, True]})
        >>> chosen = select(rows, vec)
        >>> chosen.setting, chosen.term.weight
        (Setting(layer=1, mode='add', strength=1.0), 3.0)
    """
    if vector is not None:
        if not isinstance(vector, InstructionVector):
            raise ArgumentTypeError(
                f"vector must be an InstructionVector or None, got {type(vector).__name__}"
            )
    check_choice("objective", objective, Objective)
    evidence = summarize(results, metric)
    if vector is not None:
        check_table_vector(results, vector)
    check_complete(results, "select")
    base = evidence[evidence["layer"].isna()]
    if len(base) != 1:
        raise InvalidArgumentError(
            "the results hold no unsteered baseline (layer None) to compare against; "
            "run the sweep with baseline=True"
        )
    limit = float(base["degenerate_share"].iloc[0])
    if base[["accuracy", "degenerate_share"]].isna().any(axis=None):
        raise InvalidArgumentError(
            f"the baseline rows hold no {metric} or degenerate values (all missing); there "
            "is nothing to compare the steered settings against"
        )
    # A setting whose accuracy is missing (no scored rows) cannot be chosen.
    evidence["eligible"] = (evidence["degenerate_share"] <= limit + 1e-12) & evidence[
        "accuracy"
    ].notna()
    best = evidence.loc[evidence["eligible"], objective].max()
    # Summaries are ordered baseline, then layer, then |strength|: the first is the tie-break.
    chosen_at = evidence.index[evidence["eligible"] & (evidence[objective] >= best - 1e-12)][0]
    evidence["chosen"] = evidence.index == chosen_at
    row = evidence.loc[chosen_at]
    if pd.isna(row["layer"]):
        setting = Setting(None)
    else:
        strength = None if pd.isna(row["strength"]) else float(row["strength"])
        setting = Setting(int(row["layer"]), row["mode"], strength)
    gate = (results.attrs.get("sweep") or {}).get("gate")
    term = None
    if vector is not None and setting.layer is not None:
        coefficient = None if pd.isna(row["coefficient"]) else float(row["coefficient"])
        term = setting.term(vector, coefficient)
        if gate is not None:
            term = replace(term, gate=Gate(**_own(gate)))
    return Selection(setting, term, evidence, metric, objective, gate)
