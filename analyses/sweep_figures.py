"""Figures of layer sweeps and of vector stability, drawn from their tables only.

`plot_layer_sweep` draws a `LayerSweep`, `plot_accuracy_heatmap` an `accuracy_grid`,
and `plot_stability` a `workbench.stability_curve` table; none recomputes anything.
Per-instruction traces take `instruction_colour`; the unsteered baseline is grey.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from workbench.errors import ArgumentTypeError, InvalidArgumentError

from .style import (
    BASELINE_COLOUR,
    LAYER_AXIS,
    cell_sizes,
    drawable,
    finish,
    instruction_colour,
    outline_cells,
)
from .sweep_views import LayerSweep

ACCURACY_AXIS = "accuracy (share, 0–1)"
DEGENERATE_AXIS = "degenerate (share, 0–1)"
STRENGTH_AXIS = "strength (multiple of the mode's default coefficient, ×)"
COSINE_AXIS = "split-half cosine (unitless, −1–1)"
PAIRS_AXIS = "pairs per subset k (count, log scale)"
# Strengths of one instruction differ by dash, modes by marker; colour is the instruction's.
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_SYMBOLS = {"add": "circle", "project": "square", "clamp": "triangle-up", "ablate": "x"}
_UNIT_RANGE = [-0.03, 1.03]


def _setting_text(mode: object, strength: object) -> str:
    if pd.isna(mode):
        return "unsteered"
    return str(mode) if pd.isna(strength) else f"{mode} ×{float(strength):g}"


def plot_layer_sweep(data: LayerSweep, *, title: str | None = None) -> go.Figure:
    """Accuracy (top) and degenerate share (bottom) against layer, from `layer_sweep`.

    Each line is a trace pair sharing a legend entry, in its instruction's colour
    (strengths differ by dash, modes by marker). The unsteered baseline is a grey
    horizontal line per instruction and the selected setting a star.

    Example:
        >>> from analyses.sweep_views import layer_sweep
        >>> rows = pd.DataFrame({"layer": [None, 1, 2], "mode": [None, "add", "add"],
        ...     "strength": [None, 1.0, 1.0], "coefficient": [None, 3.0, 5.0],
        ...     "follows_strict": [False, False, True], "degenerate": [False] * 3})
        >>> fig = plot_layer_sweep(layer_sweep({"lowercase": rows}))
        >>> [t.name for t in fig.data if t.showlegend is not False]
        ['add ×1', 'unsteered', 'selected: layer 2, add ×1']
    """
    if not isinstance(data, LayerSweep):
        raise ArgumentTypeError(
            f"data must be a LayerSweep from layer_sweep(), got {type(data).__name__}"
        )
    curves, several = data.curves, data.curves["instruction"].nunique() > 1
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.07)

    def name(instruction: str, part: str) -> str:
        return f"{instruction}: {part}" if several else part

    rows = [(1, "accuracy", "accuracy"), (2, "degenerate_share", "degenerate share")]
    for instruction, group in curves.groupby("instruction", sort=False):
        colour = instruction_colour(instruction)
        for i, (line, points) in enumerate(group.groupby("line", sort=False)):
            settings = [
                _setting_text(m, s) for m, s in zip(points["mode"], points["strength"], strict=True)
            ]
            custom = list(zip(settings, points["coefficient"], points["n"], strict=True))
            for row, column, what in rows:
                fig.add_trace(
                    go.Scatter(
                        x=points["layer"].astype(int).tolist(),
                        y=points[column].tolist(),
                        customdata=custom,
                        mode="lines+markers",
                        name=name(instruction, line),
                        legendgroup=f"{instruction}|{line}",
                        showlegend=row == 1,
                        line={"color": colour, "dash": _DASHES[i % len(_DASHES)]},
                        marker={"symbol": [_SYMBOLS.get(m, "circle") for m in points["mode"]]},
                        hovertemplate=f"<b>{instruction}</b> %{{customdata[0]}}<br>layer %{{x}}"
                        f"<br>{what} %{{y:.3f}}<br>coefficient %{{customdata[1]:.3g}}, "
                        "n=%{customdata[2]}<extra></extra>",
                    ),
                    row=row,
                    col=1,
                )
        layers = group["layer"].astype(int)
        span = (
            [layers.min(), layers.max()]
            if layers.min() < layers.max()
            else [layers.min() - 0.5, layers.min() + 0.5]
        )
        chosen = data.selected[data.selected["instruction"] == instruction]
        unsteered_chosen = len(chosen) and pd.isna(chosen["layer"].iloc[0])
        for _, base in data.baseline[data.baseline["instruction"] == instruction].iterrows():
            label = "unsteered (selected)" if unsteered_chosen else "unsteered"
            for row, column, what in rows:
                fig.add_trace(
                    go.Scatter(
                        x=[float(s) for s in span],
                        y=[base[column]] * 2,
                        mode="lines",
                        name=name(instruction, label),
                        legendgroup=f"{instruction}|unsteered",
                        showlegend=row == 1,
                        line={"color": BASELINE_COLOUR, "dash": "dot"},
                        hovertemplate=f"<b>{instruction}</b> unsteered<br>{what} "
                        f"{base[column]:.3f}, n={int(base['n'])}<extra></extra>",
                    ),
                    row=row,
                    col=1,
                )
        for _, pick in chosen[chosen["layer"].notna()].iterrows():
            setting = _setting_text(pick["mode"], pick["strength"])
            for row, column, what in rows:
                fig.add_trace(
                    go.Scatter(
                        x=[int(pick["layer"])],
                        y=[pick[column]],
                        mode="markers",
                        name=name(instruction, f"selected: layer {int(pick['layer'])}, {setting}"),
                        legendgroup=f"{instruction}|selected",
                        showlegend=row == 1,
                        marker={
                            "symbol": "star",
                            "size": 16,
                            "color": colour,
                            "line": {"color": "black", "width": 1},
                        },
                        hovertemplate=f"<b>{instruction}</b> selected: {setting}<br>layer %{{x}}"
                        f"<br>{what} %{{y:.3f}}<extra></extra>",
                    ),
                    row=row,
                    col=1,
                )
    default = "Layer sweep" + ("" if several else f": {curves['instruction'].iloc[0]}")
    # Two panels need the height of two figures, or their axis titles overlap.
    finish(fig, title=title or default, x="", y=ACCURACY_AXIS, legend_title="line", height=620)
    fig.update_xaxes(title_text=LAYER_AXIS, row=2, col=1)
    fig.update_yaxes(title_text=DEGENERATE_AXIS, row=2, col=1)
    fig.update_yaxes(range=_UNIT_RANGE)
    return fig


def plot_accuracy_heatmap(grid: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Layer × strength heatmap of accuracy from `accuracy_grid`: the selected cell
    outlined and starred, cells more degenerate than unsteered outlined dotted and
    crossed (the marks beside the value, not on it), the baseline k/n in the subtitle.

    Example:
        >>> from analyses.sweep_views import accuracy_grid
        >>> rows = pd.DataFrame({"layer": [None, 1, 2], "mode": [None, "add", "add"],
        ...     "strength": [None, 1.0, 1.0], "coefficient": [None, 3.0, 5.0],
        ...     "follows_strict": [False, False, True], "degenerate": [False] * 3})
        >>> fig = plot_accuracy_heatmap(accuracy_grid(rows))
        >>> [list(r) for r in fig.data[0].z], [s.name for s in fig.layout.shapes]
        ([[0.0], [1.0]], ['★ selected setting'])
    """
    columns = {"layer", "strength", "mode", "accuracy", "degenerate_share", "n", "coefficient"}
    columns |= {"eligible", "selected", "baseline_n", "baseline_accuracy"}
    drawable(grid, columns, "accuracy_grid", "grid")
    if grid.empty:
        raise InvalidArgumentError("grid has no rows to draw")
    layers = sorted(grid["layer"].astype(int).unique().tolist())
    strengths = sorted(grid["strength"].unique().tolist())
    cells = grid.set_index([grid["layer"].astype(int), "strength"])

    def cell(layer: int, strength: float, column: str) -> object:
        key = (layer, strength)
        return cells.at[key, column] if key in cells.index else None

    xs, ys = [f"{s:g}" for s in strengths], [str(layer) for layer in layers]
    z = [[cell(layer, s, "accuracy") for s in strengths] for layer in layers]
    custom = [
        [[cell(layer, s, c) for c in ("degenerate_share", "n", "coefficient")] for s in strengths]
        for layer in layers
    ]
    base = float(grid["baseline_accuracy"].iloc[0])
    base_n = grid["baseline_n"].iloc[0]
    if pd.isna(base):
        base_text = "no unsteered baseline"
    elif pd.isna(base_n):
        base_text = f"unsteered {base:.2f}"
    else:
        base_text = f"unsteered {round(base * int(base_n))}/{int(base_n)} = {base:.2f}"
    mode = str(grid["mode"].iloc[0])
    chosen = grid[grid["selected"].astype(bool)]
    worse = grid[grid["eligible"].eq(False)]

    def keys(rows: pd.DataFrame) -> set[tuple[str, str]]:
        pairs = zip(rows["strength"], rows["layer"], strict=True)
        return {(f"{s:g}", str(int(layer))) for s, layer in pairs}

    picked, crossed = keys(chosen), keys(worse)

    def shown(layer: int, strength: float) -> str:
        value = cell(layer, strength, "accuracy")
        if value is None or pd.isna(value):
            return ""
        key = (f"{strength:g}", str(layer))
        # The marks sit beside the value, never on it.
        return f"{value:.2f}" + (" ★" if key in picked else "") + (" ×" if key in crossed else "")

    text = [[shown(layer, s) for s in strengths] for layer in layers]
    fig = go.Figure(
        go.Heatmap(
            x=xs,
            y=ys,
            z=z,
            text=text,
            customdata=custom,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            texttemplate="%{text}",
            textfont={"size": 13},
            colorbar={"title": {"text": "accuracy (share, 0–1)", "side": "right"}},
            name=f"{mode} accuracy",
            hovertemplate=f"layer %{{y}}, {mode} ×%{{x}}<br>accuracy %{{z:.3f}} ({base_text})"
            "<br>degenerate share %{customdata[0]:.3f}<br>n=%{customdata[1]}, "
            "coefficient %{customdata[2]:.3g}<extra></extra>",
        )
    )
    outline_cells(fig, sorted(picked), columns=xs, rows=ys, name="★ selected setting")
    outline_cells(
        fig,
        sorted(crossed),
        columns=xs,
        rows=ys,
        name="× more degenerate than unsteered",
        dash="dot",
    )
    finish(
        fig,
        title={
            "text": title or f"Accuracy by layer and strength ({mode})",
            "subtitle": {"text": f"{base_text}; {cell_sizes(grid['n'])}"},
        },
        x=STRENGTH_AXIS,
        y=LAYER_AXIS,
        legend_title="marks",
        height=max(420, 200 + 60 * len(layers)),
        margin={"t": 90},
    )
    fig.update_xaxes(type="category", categoryarray=xs, showgrid=False)
    fig.update_yaxes(type="category", categoryarray=ys, showgrid=False)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.25})
    return fig


def plot_stability(curve: pd.DataFrame, *, label: str | None = None) -> go.Figure:
    """Split-half cosine against the number of pairs, one line per layer with
    ±`cosine_std` error bars, from `workbench.stability_curve`.

    Layers take colours along Viridis (early dark, late green-yellow); the log axis has
    a tick at each subset size drawn; `label` names the vector in the title.

    Example:
        >>> fig = plot_stability(stability_curve(torch.randn(8, 3, 32), n_draws=4), label="noise")
        >>> [t.name for t in fig.data], list(fig.data[0].x)
        (['layer 0', 'layer 1', 'layer 2'], [1, 2, 4])
    """
    drawable(curve, {"layer", "n_pairs", "cosine", "cosine_std"}, "stability_curve", "curve")
    if label is not None and not isinstance(label, str):
        raise ArgumentTypeError(f"label must be a str or None, got {type(label).__name__}")
    if curve.empty:
        raise InvalidArgumentError("curve has no rows to draw")
    layers = sorted(curve["layer"].unique().tolist())
    # Viridis up to 0.85: its last, pale yellow fades on white.
    colours = sample_colorscale(
        "Viridis", [0.85 * i / max(len(layers) - 1, 1) for i in range(len(layers))]
    )
    fig = go.Figure()
    for layer, colour in zip(layers, colours, strict=True):
        points = curve[curve["layer"] == layer].sort_values("n_pairs")
        fig.add_trace(
            go.Scatter(
                x=points["n_pairs"].tolist(),
                y=points["cosine"].tolist(),
                error_y={"type": "data", "array": points["cosine_std"].tolist(), "visible": True},
                customdata=points["cosine_std"].tolist(),
                mode="lines+markers",
                name=f"layer {layer}",
                line={"color": colour},
                hovertemplate=f"layer {layer}<br>k=%{{x}} pairs<br>cosine %{{y:.3f}} "
                "± %{customdata:.3f}<extra></extra>",
            )
        )
    title = "Split-half stability" + (f": {label}" if label else "")
    finish(fig, title=title, x=PAIRS_AXIS, y=COSINE_AXIS, legend_title=LAYER_AXIS)
    # Ticks at the subset sizes drawn, so a log axis shows 1 2 4 8, not 1 1.5 2 ….
    sizes = sorted({int(k) for k in curve["n_pairs"]})
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(k) for k in sizes])
    return fig
