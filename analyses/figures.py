"""Interactive Plotly figures drawn from the data frames in `analyses.tables`."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InvalidArgumentError

from .style import LAYER_AXIS, TEMPLATE, write_html

__all__ = ["plot_layer_profile", "write_html"]


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
        xaxis_title=LAYER_AXIS,
        yaxis_title="residual-stream units",
        template=TEMPLATE,
        hovermode="x unified",
    )
    return fig
