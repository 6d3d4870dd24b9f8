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
from plotly.colors import qualitative

from workbench import InstructionVector, instruction, instruction_names
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.files import write_atomic
from workbench.options import check_bool

# 24 distinguishable colours: enough for the 20 bundled instructions, each its own.
PALETTE: tuple[str, ...] = tuple(qualitative.Dark24)
# Unsteered runs are grey everywhere; steered runs of a single vector use its colour.
BASELINE_COLOUR = "#7f7f7f"
TEMPLATE = "plotly_white"
LAYER_AXIS = "layer (blocks.{l}.hook_resid_post)"


def instruction_colour(label: str) -> str:
    """The colour of an instruction in every figure: its bundled name's own slot, else a
    stable hash of the label (the same across sessions and machines).

    Example:
        >>> instruction_colour("lowercase") == instruction_colour("lowercase")
        True
        >>> instruction_colour("lowercase") != instruction_colour("capitals")
        True
    """
    names = instruction_names()
    if label in names:
        return PALETTE[names.index(label) % len(PALETTE)]
    return PALETTE[zlib.crc32(str(label).encode("utf-8")) % len(PALETTE)]


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
