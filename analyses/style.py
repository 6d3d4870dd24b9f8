"""What every figure shares: one colour per instruction, labels, layout and offline HTML.

Drawing modules import from here so that "lowercase" is the same colour in a cosine
heatmap, a layer sweep and a PCA scatter, and so that every saved figure embeds plotly.js.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from colorcet import b_glasbey_bw_minc_20_maxl_70

from workbench import InstructionVector, instruction, instruction_names
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.files import write_atomic
from workbench.options import check_bool

# Glasbey colours (each the farthest in CIELAB from those before it), with chroma at
# least 20 and lightness at most 70 so that none reads as grey or fades on white. The
# first 20, one per bundled instruction, measured with CIEDE2000: at least 14.0 apart
# (the first 8: 29.0), 16.7 from the baseline grey and 26.1 from white (plotly's Dark24:
# 8.7, spanish and title alike, and 14.9). Other labels take slots beyond those.
PALETTE: tuple[str, ...] = tuple(b_glasbey_bw_minc_20_maxl_70)
# Unsteered runs are grey everywhere; steered runs of a single vector use its colour.
BASELINE_COLOUR = "#7f7f7f"
# The order instructions take palette slots: those the notebooks and the README draw
# together come first, so they get the colours farthest apart.
COLOUR_ORDER: tuple[str, ...] = (
    "one_sentence", "lowercase", "no_comma", "capitals", "french", "spanish", "concise",
    "title", "bullets", "json", "highlights", "quotation", "end_phrase", "start_word",
    "german", "max_sentences", "exact_sentences", "verbose", "include_keyword",
    "exclude_keyword",
)  # fmt: skip
TEMPLATE = "plotly_white"
LAYER_AXIS = "layer (blocks.{l}.hook_resid_post)"


def instruction_colour(label: str) -> str:
    """The colour of an instruction in every figure: its bundled name's own slot (in
    `COLOUR_ORDER`), else a stable hash of the label onto the slots after those (the
    same across sessions and machines).

    Example:
        >>> instruction_colour("lowercase") == instruction_colour("lowercase")
        True
        >>> instruction_colour("lowercase") != instruction_colour("capitals")
        True
    """
    if label in COLOUR_ORDER:
        return PALETTE[COLOUR_ORDER.index(label)]
    spare = len(PALETTE) - len(COLOUR_ORDER)
    return PALETTE[len(COLOUR_ORDER) + zlib.crc32(str(label).encode("utf-8")) % spare]


def vector_label(vec: InstructionVector) -> str:
    """A short name for a vector: the bundled instruction it was built from when its IFEval
    id and arguments match one, else its IFEval id (or "vector").

    Example:
        >>> vector_label(vec)
        'lowercase'
    """
    for name in instruction_names():
        spec = instruction(name)
        if spec.instruction_id == vec.instruction_id and dict(spec.kwargs) == dict(vec.kwargs):
            return name
    return vec.instruction_id or "vector"


def labelled(vectors: Mapping[str, InstructionVector] | Any) -> dict[str, InstructionVector]:
    """``{label: vector}`` from a mapping (kept as given) or a sequence (labelled with
    `vector_label`, made unique with a counter)."""
    if isinstance(vectors, Mapping):
        return dict(vectors)
    out: dict[str, InstructionVector] = {}
    for vec in vectors:
        label = base = vector_label(vec)
        k = 2
        while label in out:
            label, k = f"{base} ({k})", k + 1
        out[label] = vec
    return out


def drawable(table: Any, columns: Iterable[str], maker: str, what: str = "table") -> pd.DataFrame:
    """`table` if it is a non-empty DataFrame with `columns`, else an error naming what is
    wrong and the data function (`maker`) that builds the right one."""
    if not isinstance(table, pd.DataFrame):
        raise ArgumentTypeError(
            f"{what} must be the DataFrame that {maker}() returns, got {type(table).__name__}"
        )
    missing = sorted(set(columns) - set(table.columns))
    if missing:
        raise InvalidArgumentError(
            f"{what} lacks columns {missing} (it has {list(table.columns)}); "
            f"build it with {maker}()"
        )
    if table.empty:
        raise InvalidArgumentError(f"{what} has no rows to draw; build it with {maker}()")
    return table


def finish(fig: go.Figure, *, title: str, x: str, y: str, **layout: Any) -> go.Figure:
    """Apply the shared template and the axis titles (which carry units) to `fig`."""
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        template=TEMPLATE,
        legend={"title": layout.pop("legend_title", None)},
        **layout,
    )
    return fig


def cell_sizes(ns: Iterable[Any]) -> str:
    """How many prompts each heatmap cell counts, for a subtitle: ``'n=8 a cell'``.

    Example:
        >>> cell_sizes([8, 8]), cell_sizes([6, 8])
        ('n=8 a cell', 'n=6–8 a cell')
    """
    sizes = sorted({int(n) for n in ns})
    return f"n={sizes[0]} a cell" if len(sizes) == 1 else f"n={sizes[0]}–{sizes[-1]} a cell"


def outline_cells(
    fig: go.Figure,
    cells: Iterable[tuple[str, str]],
    *,
    columns: list[str],
    rows: list[str],
    name: str,
    dash: str = "solid",
) -> go.Figure:
    """Outline heatmap cells, given as (column label, row label), with rectangles on
    the cell edges, so the value written in a cell stays readable; one legend entry
    (`name`) explains them.

    Example:
        >>> fig = outline_cells(go.Figure(go.Heatmap(z=[[1, 2]], x=["a", "b"], y=["r"])),
        ...     [("b", "r")], columns=["a", "b"], rows=["r"], name="chosen")
        >>> [(s.x0, s.x1, s.name) for s in fig.layout.shapes]
        [(0.54, 1.46, 'chosen')]
    """
    for k, (column, row) in enumerate(cells):
        x, y = columns.index(column), rows.index(row)
        # Inset a little, so two outlined neighbours keep their own edges.
        fig.add_shape(
            type="rect",
            x0=x - 0.46,
            x1=x + 0.46,
            y0=y - 0.46,
            y1=y + 0.46,
            line={"color": "black", "width": 3, "dash": dash},
            name=name,
            legendgroup=name,
            showlegend=k == 0,
        )
    return fig


def write_html(fig: go.Figure, path: str | Path, *, force: bool = False) -> Path:
    """Write a self-contained HTML file (plotly.js embedded, viewable offline), atomically.

    An existing file that is not an HTML page is replaced only with ``force=True``.

    Example:
        >>> import tempfile
        >>> out = write_html(go.Figure(go.Bar(y=[1])), Path(tempfile.mkdtemp()) / "f.html")
        >>> "<script src=" in out.read_text()  # plotly.js is inline, not fetched
        False
    """
    html = fig.to_html(include_plotlyjs=True, full_html=True)
    return write_atomic(path, html.encode("utf-8"), kind="html", force=check_bool("force", force))
