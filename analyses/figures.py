"""Interactive Plotly figures drawn from the data frames in `analyses.tables`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InvalidArgumentError
from workbench.files import write_atomic


def plot_layer_profile(
    table: pd.DataFrame, *, title: str = "Instruction vector by layer"
) -> go.Figure:
    """Line plot of the per-layer norm and mean projections from `layer_table`.

    Example:
        >>> from analyses import layer_table
        >>> fig = plot_layer_profile(layer_table(vec))  # fig.show() in Jupyter
        >>> len(fig.data)
        3
    """
    missing = {"layer", "norm", "mean_proj_with", "mean_proj_without"} - set(table.columns)
    if missing:
        raise InvalidArgumentError(
            f"table lacks columns {sorted(missing)}; build it with layer_table()"
        )
    fig = go.Figure()
    traces = [
        ("norm", "‖mean difference‖", "solid"),
        ("mean_proj_with", "mean projection, with instruction", "dash"),
        ("mean_proj_without", "mean projection, without", "dot"),
    ]
    for column, name, dash in traces:
        fig.add_trace(
            go.Scatter(
                x=table["layer"],
                y=table[column],
                mode="lines+markers",
                name=name,
                line={"dash": dash},
                hovertemplate="layer %{x}<br>%{y:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="layer (blocks.{l}.hook_resid_post)",
        yaxis_title="residual-stream units",
        template="plotly_white",
        hovermode="x unified",
    )
    return fig


def write_html(fig: go.Figure, path: str | Path) -> Path:
    """Write a self-contained HTML file (plotly.js embedded, viewable offline), atomically."""
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    path = Path(path)
    write_atomic(path, html.encode("utf-8"))
    return path
