"""A steering setting (layer, mode, strength) and the one translation to a `SteeringTerm`.

Strength is a multiple of each mode's default coefficient at that layer
(`default_coefficient`): ``add`` adds ``strength × |mean difference|`` along u;
``project`` sets the component along u to ``strength × z̄`` (the vector's mean
with-instruction projection) and ``clamp`` raises it to that value where it is
below; ``ablate`` takes no coefficient. Residual norms grow
with depth, so multiples compare across layers where raw weights do not.

Everything that turns a setting into a term goes through `Setting.term`: a sweep's
rows and coefficient column, `select`'s chosen term, the command line's ``--layer
--mode --strength``. A term left without a coefficient is given `default_coefficient`
when it is resolved against a model (`workbench.steering.plan.resolve`).
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import TARGET_MODES, Mode, check_choice
from workbench.vectors.instruction_vector import InstructionVector

from .directions import unit_direction
from .terms import SteeringTerm, coefficient_fields


def default_coefficient(vector: InstructionVector | Tensor, layer: int, mode: str) -> float | None:
    """What strength 1 means for `mode` at `layer`: the norm of the mean difference
    (``add``), the mean with-instruction projection (``project``, ``clamp``), None (``ablate``).

    A ``[d_model]`` tensor vector is its own mean difference; it has no projection
    to default to, so ``project`` needs an explicit target.

    Example:
        >>> abs(default_coefficient(vec, 1, "add") - float(vec.diff(1).norm())) < 1e-4
        True
        >>> default_coefficient(vec, 1, "project") == float(vec.mean_proj_with[1])
        True
    """
    check_choice("mode", mode, Mode)
    if isinstance(vector, Tensor):
        if mode in TARGET_MODES:
            raise InvalidArgumentError(
                f"mode={mode!r} with a tensor vector needs target= (there is no "
                "mean with-instruction projection to default to)"
            )
        diff = vector
    elif isinstance(vector, InstructionVector):
        row = vector.row(layer)
        diff = vector.diffs[row]
    else:
        raise ArgumentTypeError(
            f"vector must be an InstructionVector or a tensor, got {type(vector).__name__}"
        )
    if mode == "ablate":
        return None
    if mode == "add":
        # The overflow-safe norm, the one the term's unit direction is divided by.
        return unit_direction(diff, layer)[1]
    return float(vector.mean_proj_with[row])


def _missing(value: Any) -> bool:
    # pandas.NA can only be a value once pandas is loaded: checked without importing it.
    pandas = sys.modules.get("pandas")
    return (
        value is None
        or (pandas is not None and value is pandas.NA)
        or (isinstance(value, float) and math.isnan(value))
    )


@dataclass(frozen=True)
class Setting:
    """One steering setting of a sweep; ``layer=None`` is the unsteered baseline.

    Example:
        >>> term = Setting(1, "add", 0.5).term(vec)
        >>> term.weight == 0.5 * default_coefficient(vec, 1, "add")
        True
        >>> Setting(1, "project", 0.5).term(vec, coefficient=3.0).target
        3.0
        >>> Setting(None).term(vec) is None
        True
    """

    layer: int | None
    mode: str | None = None
    strength: float | None = None

    def __post_init__(self) -> None:
        # A sweep table marks what a setting lacks as missing (NaN, <NA>): read as None,
        # so Setting(row.layer, row.mode, row.strength) works for every row.
        for name in ("layer", "mode", "strength"):
            if _missing(getattr(self, name)):
                object.__setattr__(self, name, None)
        if self.layer is None:
            if self.mode is not None or self.strength is not None:
                raise InvalidArgumentError(
                    f"the baseline Setting(None) takes no mode or strength, got mode "
                    f"{self.mode!r}, strength {self.strength!r}"
                )
            return
        if isinstance(self.layer, bool) or not isinstance(self.layer, numbers.Integral):
            raise ArgumentTypeError(
                f"Setting layer must be an int or None, got {type(self.layer).__name__} "
                f"{self.layer!r}"
            )
        object.__setattr__(self, "layer", int(self.layer))
        check_choice("Setting mode", self.mode, Mode)
        strength = self.strength
        if self.mode == "ablate":
            if strength is not None:
                raise InvalidArgumentError(
                    f"Setting strength {strength!r} has no meaning for mode 'ablate'; pass None"
                )
            return
        ok = not isinstance(strength, bool) and isinstance(strength, numbers.Real)
        if not ok or not math.isfinite(strength):
            raise InvalidArgumentError(
                f"Setting strength must be a finite number for mode {self.mode!r}, got {strength!r}"
            )
        object.__setattr__(self, "strength", float(strength))

    def term(
        self, vector: InstructionVector, coefficient: float | None = None
    ) -> SteeringTerm | None:
        """The steering term of this setting on `vector` (None for the baseline).

        Its coefficient (weight for ``add``, target for ``project`` and ``clamp``) is `coefficient`
        as given (one a sweep stored, say), else ``strength × default_coefficient``.
        """
        if self.layer is None:
            return None
        if coefficient is None and self.mode != "ablate":
            coefficient = self.strength * default_coefficient(vector, self.layer, self.mode)
        fields = coefficient_fields(self.mode, coefficient)
        return SteeringTerm(vector, layer=self.layer, mode=self.mode, **fields)
