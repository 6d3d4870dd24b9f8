"""Figures of composition and interference, drawn from `analyses.composition` tables.

`plot_composition` draws `composition_table` (cosine against joint accuracy, one
point per pair) and `plot_interference` draws `interference_table` (steered-with ×
checked heatmap of the change in accuracy). Neither recomputes anything.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .style import (
    BASELINE_COLOUR,
    cell_sizes,
    drawable,
    finish,
    instruction_colour,
    outline_cells,
)

__all__ = ["plot_composition", "plot_interference"]

JOINT_AXIS = "joint accuracy (share of prompts following both, 0–1)"
PAIR_COSINE_AXIS = "cosine of the two mean differences at the steering layer (unitless, −1–1)"
DELTA_UNITS = "Δ accuracy vs unsteered (share of prompts, −1–1)"
# Red for a checker helped, blue for one hurt, white for no change (as geometry's cosines).
DIVERGING = "RdBu_r"


def _label_positions(x: pd.Series, y: pd.Series) -> list[str]:
    """Above each point, or below it when the point to its left at about the same height
    is close enough for the two labels to collide (alternating along such a run)."""
    span = max(float(x.max() - x.min()), 1e-9)
    positions = ["top center"] * len(x)
    order = sorted(range(len(x)), key=lambda i: (round(float(y.iloc[i]), 1), float(x.iloc[i])))
    for before, i in zip(order, order[1:], strict=False):
        near = abs(float(y.iloc[i] - y.iloc[before])) < 0.08
        if near and float(x.iloc[i] - x.iloc[before]) < 0.3 * span:
            above = positions[before] == "top center"
            positions[i] = "bottom center" if above else "top center"
    return positions


def plot_composition(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Joint accuracy against the pair's cosine, one point per pair, from `composition_table`.

    A point's fill is the first instruction's colour and its outline the second's;
    grey points at the same cosine are the unsteered joint accuracy. One legend-only
    key per instruction names its colour.

    Example:
        >>> table = pd.DataFrame({"a": ["lowercase"], "b": ["one_sentence"], "layer": [1],
        ...     "cosine": [0.2], "n": [4], "accuracy_a": [0.5], "accuracy_b": [1.0],
        ...     "joint_accuracy": [0.5], "alone_accuracy_a": [0.75], "alone_accuracy_b": [1.0],
        ...     "baseline_accuracy_a": [0.0], "baseline_accuracy_b": [0.25],
        ...     "baseline_joint_accuracy": [0.0], "degenerate_share": [0.0]})
        >>> [t.name for t in plot_composition(table).data]
        ['steered with both', 'unsteered', 'lowercase', 'one_sentence']
    """
    needed = {"a", "b", "layer", "cosine", "n", "accuracy_a", "accuracy_b", "joint_accuracy"}
    needed |= {"alone_accuracy_a", "alone_accuracy_b", "baseline_joint_accuracy"}
    needed |= {"degenerate_share"}
    table = drawable(table, needed, "composition_table")
    pairs = [f"{a} + {b}" for a, b in zip(table["a"], table["b"], strict=True)]
    custom = table[["a", "b", "accuracy_a", "accuracy_b", "alone_accuracy_a"]].copy()
    custom["alone_b"] = table["alone_accuracy_b"]
    custom["degenerate"] = table["degenerate_share"]
    custom["n"] = table["n"]
    custom["base"] = table["baseline_joint_accuracy"]
    data = custom.to_numpy(dtype=object)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=table["cosine"].tolist(),
            y=table["joint_accuracy"].tolist(),
            text=pairs,
            customdata=data,
            mode="markers+text",
            textposition=_label_positions(table["cosine"], table["joint_accuracy"]),
            name="steered with both",
            marker={
                "size": 14,
                "color": [instruction_colour(a) for a in table["a"]],
                "line": {"color": [instruction_colour(b) for b in table["b"]], "width": 3},
            },
            hovertemplate="<b>%{text}</b><br>cosine %{x:.3f}<br>joint accuracy %{y:.3f} "
            "(unsteered %{customdata[8]:.3f})<br>%{customdata[0]} %{customdata[2]:.3f} "
            "(alone %{customdata[4]:.3f})<br>%{customdata[1]} %{customdata[3]:.3f} "
            "(alone %{customdata[5]:.3f})<br>degenerate share %{customdata[6]:.3f}, "
            "n=%{customdata[7]}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=table["cosine"].tolist(),
            y=table["baseline_joint_accuracy"].tolist(),
            text=pairs,
            mode="markers",
            name="unsteered",
            marker={"size": 10, "color": BASELINE_COLOUR, "symbol": "circle-open"},
            hovertemplate="<b>%{text}</b>, unsteered<br>cosine %{x:.3f}<br>joint accuracy "
            "%{y:.3f}<extra></extra>",
        )
    )
    # Legend keys: the colour of each instruction (fill when first, outline when second).
    for label in dict.fromkeys([*table["a"], *table["b"]]):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=str(label),
                marker={"size": 10, "color": instruction_colour(label)},
                hovertemplate=f"{label}<extra></extra>",
            )
        )
    layers = sorted(table["layer"].unique().tolist())
    finish(
        fig,
        title=title
        or f"Composition at layer {', '.join(map(str, layers))}: cosine vs joint accuracy",
        x=PAIR_COSINE_AXIS,
        y=JOINT_AXIS,
        legend_title="pair (fill: first, outline: second)",
    )
    # Room below 0 and above 1 for a label under or over a point there.
    fig.update_yaxes(range=[-0.12, 1.12])
    # Room either side for the labels centred on the outermost points (about a fifth
    # of the plot's width each), which the axis would otherwise cut.
    low, high = float(table["cosine"].min()), float(table["cosine"].max())
    pad = 0.2 * (high - low) + 0.03
    fig.update_xaxes(range=[low - pad, high + pad])
    return fig


def plot_interference(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of the change in each checker's accuracy (rows: the vector steered with,
    columns: the instruction checked) from `interference_table`; the diagonal, each
    vector's own instruction, is outlined around the cell, its value left readable.

    Example:
        >>> table = pd.DataFrame({"steered_with": ["x", "x"], "checked": ["x", "y"],
        ...     "own": [True, False], "n": [2, 2], "accuracy": [1.0, 0.0],
        ...     "baseline_accuracy": [0.0, 1.0], "delta": [1.0, -1.0], "degenerate_share": [0.0, 0.0]})
        >>> fig = plot_interference(table)
        >>> [list(r) for r in fig.data[0].z], fig.layout.shapes[0].name
        ([[1.0, -1.0]], 'own instruction (steered = checked)')
    """
    needed = {"steered_with", "checked", "own", "n", "accuracy", "baseline_accuracy", "delta"}
    needed |= {"degenerate_share"}
    table = drawable(table, needed, "interference_table")
    rows = list(dict.fromkeys(table["steered_with"]))
    cols = list(dict.fromkeys(table["checked"]))
    cells = table.set_index(["steered_with", "checked"])

    def cell(r: str, c: str, column: str) -> object:
        return cells.at[(r, c), column] if (r, c) in cells.index else None

    z = [[cell(r, c, "delta") for c in cols] for r in rows]
    custom = [
        [
            [cell(r, c, k) for k in ("accuracy", "baseline_accuracy", "n", "degenerate_share")]
            for c in cols
        ]
        for r in rows
    ]
    fig = go.Figure(
        go.Heatmap(
            x=cols,
            y=rows,
            z=z,
            customdata=custom,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale=DIVERGING,
            texttemplate="%{z:+.2f}",
            textfont={"size": 13},
            colorbar={"title": {"text": "Δ accuracy (share, −1–1)", "side": "right"}},
            name="Δ accuracy",
            hovertemplate="steered with <b>%{y}</b>, checked <b>%{x}</b><br>accuracy "
            "%{customdata[0]:.3f} (unsteered %{customdata[1]:.3f}, Δ %{z:+.3f})"
            "<br>degenerate share %{customdata[3]:.3f}, n=%{customdata[2]}<extra></extra>",
        )
    )
    own = table[table["own"].astype(bool)]
    outline_cells(
        fig,
        zip(own["checked"], own["steered_with"], strict=True),
        columns=cols,
        rows=rows,
        name="own instruction (steered = checked)",
    )
    finish(
        fig,
        title={
            "text": title or "Interference: steering with one vector, checking each instruction",
            "subtitle": {"text": f"{DELTA_UNITS}; {cell_sizes(table['n'])}"},
        },
        x="checked instruction (IFEval checker)",
        y="steered with (instruction vector)",
        height=max(380, 200 + 70 * len(rows)),
        margin={"t": 90},
        showlegend=True,
    )
    fig.update_xaxes(type="category", categoryarray=cols, showgrid=False)
    # Row 0 at the top, as a table reads; shapes use the same category positions.
    fig.update_yaxes(type="category", categoryarray=rows, autorange="reversed", showgrid=False)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2})
    return fig
