"""Workbench results as tidy pandas DataFrames."""

from __future__ import annotations

import pandas as pd

from workbench import InstructionVector


def layer_table(vec: InstructionVector) -> pd.DataFrame:
    """One row per layer: norm of the mean difference and mean projections.

    Columns: ``layer``, ``norm``, ``mean_proj_with``, ``mean_proj_without``, ``gap``
    (with minus without, which equals the norm for the last-token read).

    Example:
        >>> layer_table(vec).columns.tolist()
        ['layer', 'norm', 'mean_proj_with', 'mean_proj_without', 'gap']
    """
    return pd.DataFrame(
        {
            "layer": list(vec.layers),
            "norm": vec.norms().tolist(),
            "mean_proj_with": vec.mean_proj_with.tolist(),
            "mean_proj_without": vec.mean_proj_without.tolist(),
            "gap": (vec.mean_proj_with - vec.mean_proj_without).tolist(),
        }
    )
