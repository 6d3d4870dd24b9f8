"""Figures for `analyses.projections` and `analyses.tokens`.

Each function draws exactly the object its data function returns and computes
nothing but display details (labels, colour ranges): the numbers on screen are the
numbers in the table.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import check_bool, check_int

from .projections import SIDES, Projections
from .style import BASELINE_COLOUR, LAYER_AXIS, drawable, finish, instruction_colour

__all__ = ["plot_difference_pca", "plot_projections", "plot_token_projections"]

PROJECTION_UNITS = "projection on u (residual units)"
TOKEN_SCALE = "RdBu_r"
_SIDE_NAMES = {"with": "with instruction", "without": "without instruction"}


def plot_projections(
    proj: Projections, *, title: str | None = None, gate: bool = False
) -> go.Figure:
    """Violins of with- vs without-instruction projections per layer, AUC and d′ shown.

    With `gate`, each layer also shows the default gate threshold
    (`Projections.gate_thresholds`: midway between the vector's mean with- and
    without-instruction projections on its training pairs, whatever pairs are drawn): a
    gated term steers the prompts below it.

    One violin trace per side (with: the instruction's colour; without: grey), grouped
    per layer, every pair a point. Each layer's tick label carries its AUC and d′,
    which the hover repeats with the pair's prompt.

    Example:
        >>> from analyses.projections import projections
        >>> fig = plot_projections(projections(model, vec, make_pairs("lowercase", n=2)))
        >>> [t.name for t in fig.data]
        ['with instruction', 'without instruction']
    """
    if not isinstance(proj, Projections):
        raise ArgumentTypeError(
            f"expected the Projections that projections() returns, got {type(proj).__name__}"
        )
    values = drawable(proj.values, {"layer", "pair", "side", "prompt", "projection"}, "projections")
    sep = drawable(proj.separability, {"layer", "auc", "d_prime"}, "projections")
    stats = sep.set_index("layer")
    ticks = {
        layer: f"{layer}<br>AUC {row.auc:.2f}<br>d′ {row.d_prime:.2f}"
        for layer, row in stats.iterrows()
    }
    colours = {"with": instruction_colour(proj.label), "without": BASELINE_COLOUR}
    fig = go.Figure()
    for side in SIDES:
        part = values[values["side"] == side]
        layer_stats = stats.loc[part["layer"]]
        fig.add_trace(
            go.Violin(
                x=[ticks[layer] for layer in part["layer"]],
                y=part["projection"],
                name=_SIDE_NAMES[side],
                legendgroup=side,
                line_color=colours[side],
                points="all",
                meanline_visible=True,
                customdata=list(
                    zip(
                        part["layer"],
                        part["pair"],
                        part["prompt"].map(html.escape),
                        layer_stats["auc"],
                        layer_stats["d_prime"],
                        strict=True,
                    )
                ),
                hovertemplate=(
                    "layer %{customdata[0]}, pair %{customdata[1]}<br>%{customdata[2]}<br>"
                    "projection %{y:.3f}<br>AUC %{customdata[3]:.3f}, "
                    "d′ %{customdata[4]:.2f}<extra>%{fullData.name}</extra>"
                ),
            )
        )
    if check_bool("gate", gate):
        if not proj.gate_thresholds:
            raise InvalidArgumentError(
                "gate=True draws the default gate threshold, which needs a vector read at "
                "the last prompt token; this one was not (pass gate=False)"
            )
        drawn = [layer for layer in proj.gate_thresholds if layer in ticks]
        fig.add_trace(
            go.Scatter(
                x=[ticks[layer] for layer in drawn],
                y=[proj.gate_thresholds[layer] for layer in drawn],
                mode="markers",
                marker={
                    "symbol": "line-ew-open",
                    "size": 40,
                    "line": {"width": 2, "color": "black"},
                },
                name="default gate threshold (midway between the training means)",
                hovertemplate="gate threshold %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(categoryorder="array", categoryarray=list(ticks.values()))
    return finish(
        fig,
        title=title or f"Projections on the {proj.label} direction, with vs without",
        x=f"{LAYER_AXIS}; AUC and d′ of with vs without",
        y=PROJECTION_UNITS,
        legend_title="prompt side",
        violinmode="group",
    )


def plot_difference_pca(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Scatter of pair differences on their first two principal components, by instruction.

    One marker trace per label, in the instruction's colour; axis titles give the share
    of variance each component explains (from ``table.attrs``).

    Example:
        >>> from analyses.projections import difference_pca
        >>> v = compute_instruction_vector(model, make_pairs("lowercase", n=3), keep_pair_diffs=True)
        >>> fig = plot_difference_pca(difference_pca({"lowercase": v}, layer=2))
        >>> [t.name for t in fig.data], fig.layout.xaxis.title.text.endswith("of variance)")
        (['lowercase'], True)
    """
    table = drawable(table, {"label", "pair", "pc1", "pc2"}, "difference_pca")
    ratios = table.attrs.get("explained_variance_ratio") or []
    layer = table.attrs.get("layer")

    def axis(k: int) -> str:
        share = f"; {100 * ratios[k]:.1f}% of variance" if k < len(ratios) else ""
        return f"PC{k + 1} of pair differences (residual units{share})"

    fig = go.Figure()
    for label, part in table.groupby("label", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part["pc1"],
                y=part["pc2"],
                mode="markers",
                name=str(label),
                marker={"color": instruction_colour(str(label)), "size": 9},
                customdata=part["pair"],
                hovertemplate=(
                    "pair %{customdata}<br>PC1 %{x:.3f}<br>PC2 %{y:.3f}"
                    "<extra>%{fullData.name}</extra>"
                ),
            )
        )
    where = f" at layer {layer}" if layer is not None else ""
    return finish(
        fig,
        title=title or f"Per-pair differences{where}, first two principal components",
        x=axis(0),
        y=axis(1),
        legend_title="instruction",
    )


def _shown(token: str, limit: int | None = None) -> str:
    """A token as cell text: whitespace made visible, cut to `limit` characters with
    "…" (the hover shows it whole), markup escaped."""
    text = repr(token)[1:-1].replace(" ", "␣")
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text)


def plot_token_projections(
    table: pd.DataFrame, *, title: str | None = None, per_line: int = 16
) -> go.Figure:
    """Heat strip of each response token's projection on u, one row per setting.

    A response longer than `per_line` tokens wraps onto further rows labelled with
    their positions (``steered · 16–31``), so the token text in the cells stays
    legible at any length; hover shows each token's position.

    The diverging colour scale is centred on the vector's mean without-instruction
    projection at that layer (``table.attrs["mean_proj_without"]``; 0 when absent):
    blue tokens sit below the no-instruction level, red ones above it, towards the
    with-instruction level. The range is symmetric about the centre and wide enough
    for every token and the with-instruction level, which legend entries name with
    their colours (the mean projections are read at the vector's read position, the
    last prompt token by default, so they are reference levels, not token norms).

    Example:
        >>> from analyses.tokens import token_projections
        >>> table = token_projections(model, vec, 1, "Hi", {"unsteered": "hey", "steered": "HEY"})
        >>> fig = plot_token_projections(table)
        >>> fig.data[0].type, fig.data[0].y
        ('heatmap', ('unsteered', 'steered'))
    """
    table = drawable(table, {"setting", "position", "token", "projection"}, "token_projections")
    per_line = check_int("per_line", per_line, low=1)
    settings = list(dict.fromkeys(table["setting"]))
    width = int(table["position"].max()) + 1
    columns = min(width, per_line)
    n_lines = -(-width // columns)
    rows: list[str] = []
    first_row: dict[str, int] = {}
    for setting in settings:
        # Each response gets as many rows as its own length needs.
        length = int(table.loc[table["setting"] == setting, "position"].max()) + 1
        first_row[setting] = len(rows)
        for k in range(-(-length // columns)):
            last = min(length, (k + 1) * columns) - 1
            rows.append(setting if n_lines == 1 else f"{setting} · {k * columns}–{last}")
    # A cell of a 16-wide row in a 900 px plot is about 52 px: 6 characters at 11 px.
    limit = max(3, 96 // columns)
    z: list[list[float | None]] = [[None] * columns for _ in rows]
    text: list[list[str]] = [[""] * columns for _ in rows]
    where: list[list[list[Any] | None]] = [[None] * columns for _ in rows]
    for r in table.itertuples(index=False):
        position = int(r.position)
        i = first_row[r.setting] + position // columns
        z[i][position % columns] = float(r.projection)
        text[i][position % columns] = _shown(str(r.token), limit)
        where[i][position % columns] = [position, _shown(str(r.token))]
    without = table.attrs.get("mean_proj_without")
    with_level = table.attrs.get("mean_proj_with")
    centre = float(without) if without is not None else 0.0
    levels = [float(v) for v in table["projection"]]
    if with_level is not None:
        levels.append(float(with_level))
    span = max(abs(v - centre) for v in levels) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(columns)),
            y=rows,
            text=text,
            customdata=where,
            hoverongaps=False,
            texttemplate="%{text}",
            textfont={"size": 11},
            colorscale=TOKEN_SCALE,
            zmid=centre,
            zmin=centre - span,
            zmax=centre + span,
            colorbar={"title": {"text": PROJECTION_UNITS, "side": "right"}},
            hovertemplate=(
                "%{y}<br>position %{customdata[0]}<br>token %{customdata[1]}<br>projection "
                "%{z:.3f}"
                "<extra></extra>"
            ),
            xgap=1,
            ygap=2,
        )
    )
    references = [
        (
            centre,
            "colour centre: "
            + ("mean projection without instruction" if without is not None else "0"),
        )
    ]
    if with_level is not None:
        references.append((float(with_level), "mean projection with instruction"))
    for value, name in references:
        colour = sample_colorscale(TOKEN_SCALE, [(value - centre + span) / (2 * span)])[0]
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                # Outlined: the centre's colour is white, like the page.
                marker={"symbol": "square", "size": 12, "color": colour, "line": {"width": 1}},
                name=f"{name} = {value:.2f}",
                showlegend=True,
                hovertemplate="%{fullData.name}<extra></extra>",
            )
        )
    if "clamp_acts" in table:
        _mark_clamped(fig, table, first_row, rows, columns)
    layer, label = table.attrs.get("layer"), table.attrs.get("label", "vector")
    where = f" at layer {layer}" if layer is not None else ""
    finish(
        fig,
        title=title or f"Response tokens along the {label} direction{where} (unsteered read)",
        x="response token position (tokens after the prompt)"
        if n_lines == 1
        else f"token within the row of {columns} (row labels give positions)",
        y="setting (response)",
        legend_title="reference levels",
        height=220 + (60 if n_lines == 1 else 34) * len(rows),
    )
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.35})
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(autorange="reversed", showgrid=False)
    return fig


def _mark_clamped(
    fig: go.Figure, table: pd.DataFrame, first_row: dict[str, int], rows: list[str], columns: int
) -> None:
    """Outline the cells where a clamp raised the projection (``clamp_acts``)."""
    acted = table[table["clamp_acts"].astype(bool)]
    positions = [int(p) for p in acted["position"]]
    target = table.attrs.get("clamp_target")
    shown = "" if target is None else f" {float(target):.2f}"
    fig.add_trace(
        go.Scatter(
            x=[p % columns for p in positions],
            y=[
                rows[first_row[s] + p // columns]
                for s, p in zip(acted["setting"], positions, strict=True)
            ],
            mode="markers",
            marker={"symbol": "triangle-up-open", "size": 9, "color": "black"},
            name=f"clamp raised it (below target{shown})",
            hovertemplate="%{fullData.name}<extra></extra>",
        )
    )
