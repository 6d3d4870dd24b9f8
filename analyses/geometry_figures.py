"""Interactive figures of vector geometry, drawn from the tables of `analyses.geometry`.

Each function takes exactly the object its data function returned and only draws it.
Cosine heatmaps share one diverging scale fixed at -1..1 with white at 0, so colours
mean the same in every heatmap; instruction labels and lines carry the instruction's
colour from `analyses.style`.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import ArgumentTypeError, InvalidArgumentError

from .style import LAYER_AXIS, drawable, finish, instruction_colour

__all__ = ["plot_cosine_heatmap", "plot_layer_cosines", "plot_relative_norms"]

COSINE_UNITS = "cosine similarity (unitless, −1…1)"
RELATIVE_AXIS = "‖v_l‖ / typical ‖resid_post‖ (ratio)"
# Red for aligned, blue for opposed, white for orthogonal.
DIVERGING = "RdBu_r"
# Beyond this many rows the numbers no longer fit in the cells; hover still shows them.
MAX_CELL_TEXT = 15
DEFAULT_LABEL = "vector"  # what `vector_label` calls a vector of no known instruction


def _square(table: Any, maker: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ArgumentTypeError(
            f"table must be the DataFrame of {maker}(), got {type(table).__name__}"
        )
    if table.empty or list(table.index) != list(table.columns):
        raise InvalidArgumentError(
            f"table must be square with the same labels on rows and columns, as {maker}() "
            f"returns; got rows {list(table.index)} and columns {list(table.columns)}"
        )
    return table


def _cosine_heatmap(table: pd.DataFrame, hover: str) -> go.Heatmap:
    values = table.to_numpy(dtype=float)
    text = [[f"{v:.3f}" for v in row] for row in values]
    return go.Heatmap(
        z=values,
        x=list(table.columns),
        y=list(table.index),
        zmin=-1.0,
        zmid=0.0,
        zmax=1.0,
        colorscale=DIVERGING,
        colorbar={"title": {"text": "cosine (unitless)", "side": "right"}},
        text=text,
        texttemplate="%{text}" if len(table) <= MAX_CELL_TEXT else None,
        hovertemplate=hover,
        name="cosine similarity",
    )


# Square cells: the axes shrink to the heatmap ("domain") instead of leaving empty,
# gridded space beside it; a heatmap needs no gridlines.
_SQUARE_AXIS = {"constrain": "domain", "showgrid": False}


def _square_height(n: int) -> int:
    """A figure height in px for an n × n heatmap: rows of 70 px (room for a label and
    its value) down to 22 px as n grows, 900 px at most."""
    return int(min(900, 200 + max(22 * n, min(560, 70 * n))))


def _coloured(label: Any) -> str:
    return f'<span style="color:{instruction_colour(str(label))}">{escape(str(label))}</span>'


def plot_cosine_heatmap(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of the cosines between instruction vectors (from `cosine_table`).

    Rows and columns keep the table's (clustered) order, read top-down and left to
    right, so blocks of related instructions show as warm squares on the diagonal.
    Each label is written in its instruction's colour; hover shows the exact cosine.

    Example:
        >>> from analyses.geometry import cosine_table
        >>> fig = plot_cosine_heatmap(cosine_table({"a": vec, "b": vec}, layer=1))
        >>> len(fig.data), list(fig.data[0].x)
        (1, ['a', 'b'])
    """
    table = _square(table, "cosine_table")
    labels = list(table.columns)
    layer = table.attrs.get("layer")
    where = f" at layer {layer}" if layer is not None else ""
    kind = "centred cosine" if table.attrs.get("centred") else "cosine"
    fig = go.Figure(
        _cosine_heatmap(table, f"%{{y}} · %{{x}}<br>{kind} %{{text}}<extra></extra>"),
    )
    ticks = {"tickvals": labels, "ticktext": [_coloured(x) for x in labels], "type": "category"}
    ticks |= _SQUARE_AXIS
    return finish(
        fig,
        title=title
        or f"{kind.capitalize()} similarity between instruction vectors{where}"
        + (" (mean direction removed)" if table.attrs.get("centred") else ""),
        x="instruction (clustered order)",
        y="instruction (clustered order)",
        xaxis=ticks,
        yaxis={**ticks, "autorange": "reversed", "scaleanchor": "x"},
        height=_square_height(len(labels)),
    )


def plot_layer_cosines(
    table: pd.DataFrame, *, label: str | None = None, title: str | None = None
) -> go.Figure:
    """Heatmap of the cosines between one vector's directions at pairs of layers
    (from `layer_cosine_table`): a bright band along the diagonal that widens with
    depth means the direction settles; a narrow one, that it keeps turning.

    Example:
        >>> from analyses.geometry import layer_cosine_table
        >>> fig = plot_layer_cosines(layer_cosine_table(vec), label="lowercase")
        >>> list(fig.data[0].x), fig.data[0].zmid
        ([0, 1, 2], 0.0)
    """
    table = _square(table, "layer_cosine_table")
    name = DEFAULT_LABEL if label is None else str(label)
    fig = go.Figure(
        _cosine_heatmap(
            table,
            "layer %{y} · layer %{x}<br>cosine %{text}<extra>" + escape(name) + "</extra>",
        )
    )
    axis = {"type": "category", **_SQUARE_AXIS}
    return finish(
        fig,
        title=title or f"Cosine between the layers' directions of {_coloured(name)}",
        x=LAYER_AXIS,
        y=LAYER_AXIS,
        xaxis=axis,
        yaxis={**axis, "autorange": "reversed", "scaleanchor": "x"},
        height=_square_height(len(table)),
    )


def plot_relative_norms(
    table: pd.DataFrame, *, label: str | None = None, title: str | None = None
) -> go.Figure:
    """Line of the vector's norm over the typical residual norm, per layer (from
    `relative_norm_table`), in the instruction's colour; hover gives both norms.

    Example:
        >>> from analyses.geometry import relative_norm_table, residual_norms
        >>> norms = residual_norms(model, ["Name a colour."])
        >>> fig = plot_relative_norms(relative_norm_table(vec, norms), label="lowercase")
        >>> fig.data[0].name, list(fig.data[0].x)
        ('lowercase', [0, 1, 2])
    """
    table = drawable(table, ["layer", "norm", "residual_norm", "relative"], "relative_norm_table")
    name = DEFAULT_LABEL if label is None else str(label)
    colour = instruction_colour(name)
    fig = go.Figure(
        go.Scatter(
            x=table["layer"].tolist(),
            y=table["relative"].tolist(),
            customdata=table[["norm", "residual_norm"]].to_numpy(dtype=float),
            mode="lines+markers",
            name=name,
            showlegend=True,
            line={"color": colour},
            marker={"color": colour},
            hovertemplate=(
                "layer %{x}<br>‖v‖ / ‖resid‖ = %{y:.3f}<br>‖v‖ = %{customdata[0]:.3f}"
                "<br>typical ‖resid‖ = %{customdata[1]:.3f}<extra>" + escape(name) + "</extra>"
            ),
        )
    )
    return finish(
        fig,
        title=title or f"Norm of {_coloured(name)} relative to the residual stream",
        x=LAYER_AXIS,
        y=RELATIVE_AXIS,
        legend_title="instruction",
        # A lone trace gets no legend unless asked; the legend names the instruction.
        showlegend=True,
        hovermode="x unified",
    )
