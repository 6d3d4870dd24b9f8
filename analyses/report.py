"""One self-contained HTML page with the figures for a saved vector and its sweep table.

The page embeds plotly.js once and every figure after it, so it opens offline from a
file. Sections whose inputs are missing (no sweep table, no per-pair differences, no
model) are listed at the end with the reason, instead of vanishing without a word.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from workbench import InstructionVector, make_pairs, stability_curve
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.evaluation.sweep_files import check_table_vector, merge_sweeps
from workbench.files import check_kind, user_path, write_atomic, write_target
from workbench.options import CHOOSE_BY, RESID_HOOK, check_bool

from .figures import plot_layer_profile
from .style import vector_label
from .tables import layer_table


@dataclass(frozen=True)
class Section:
    """A heading, a one-sentence reading guide, and a figure or an HTML block (neither:
    `reason` says why not)."""

    heading: str
    guide: str
    figure: go.Figure | None = None
    reason: str = ""
    html: str = ""  # shown instead of a figure (a table of answers)


def _vector(vector: Any) -> InstructionVector:
    if isinstance(vector, InstructionVector):
        return vector
    if isinstance(vector, (str, os.PathLike)):
        return InstructionVector.load(user_path(vector, "vector"))
    raise ArgumentTypeError(
        f"vector must be an InstructionVector or a .safetensors path, got {type(vector).__name__}"
    )


def _sweep(sweep: Any) -> pd.DataFrame | None:
    if sweep is None or isinstance(sweep, pd.DataFrame):
        return sweep
    if isinstance(sweep, (str, os.PathLike)):
        return merge_sweeps([sweep])
    if isinstance(sweep, Sequence):
        return merge_sweeps(list(sweep))
    raise ArgumentTypeError(
        "sweep must be a DataFrame, a .jsonl path or a list of shard paths, "
        f"got {type(sweep).__name__}"
    )


def _vector_sections(vec: InstructionVector, label: str) -> list[Section]:
    from .geometry import layer_cosine_table
    from .geometry_figures import plot_layer_cosines
    from .sweep_figures import plot_stability

    sections = [
        Section(
            "Norm and projections by layer",
            "How far apart with- and without-instruction residuals sit along the vector.",
            plot_layer_profile(layer_table(vec), title=f"'{label}' vector by layer"),
        ),
        Section(
            "Direction across layers",
            "Cosine between the vector's directions at two layers: blocks of high cosine "
            "are depths where the direction barely rotates.",
            plot_layer_cosines(layer_cosine_table(vec), label=label),
        ),
    ]
    if vec.pair_diffs is not None and vec.n_pairs >= 2:
        curve = stability_curve(vec, n_draws=10)
        curve = curve[curve["layer"].isin(_some_layers(vec))]
        figure, reason = plot_stability(curve, label=label), ""
    else:
        figure, reason = (
            None,
            (
                "the vector holds no per-pair differences (computed without `workbench extract "
                "--keep-pair-diffs`, or keep_pair_diffs=True in Python)"
            ),
        )
    sections.append(
        Section(
            "Stability",
            "Cosine between the mean differences of two disjoint halves of the pairs: "
            "near 1 means more pairs would not change the direction.",
            figure,
            reason,
        )
    )
    return sections


def _some_layers(vec: InstructionVector, at_most: int = 8) -> list[int]:
    """Evenly spread layers plus the selected one: 30 violins with their AUC labels
    would not fit on one axis."""
    layers = sorted(vec.layers)
    step = max(1, -(-len(layers) // at_most))
    chosen = set(layers[::step]) | {layers[-1]}
    if vec.selection and vec.selection.get("layer") is not None:
        chosen.add(int(vec.selection["layer"]))
    return sorted(chosen)


def _model_sections(model: Any, vec: InstructionVector, label: str, pairs: Any) -> list[Section]:
    from .geometry import relative_norm_table, residual_norms
    from .geometry_figures import plot_relative_norms
    from .projection_figures import plot_projections
    from .projections import projections

    heading = "Norm relative to the residual stream"
    guide = (
        "The vector's norm over the typical residual-stream norm at the same layer; the "
        "raw norm mostly shows the residual stream growing with depth."
    )
    if vec.hook_name == RESID_HOOK:
        prompts = [p.without_instruction for p in pairs]
        norms = residual_norms(
            model, prompts, layers=list(vec.layers), prompt_style=vec.prompt_style
        )
        relative = Section(
            heading, guide, plot_relative_norms(relative_norm_table(vec, norms), label=label)
        )
    else:
        relative = Section(
            heading, guide, None, f"the vector was read at {vec.hook_name!r}, not {RESID_HOOK!r}"
        )
    return [
        relative,
        Section(
            "Projections of held-out pairs",
            "With- and without-instruction residuals projected on the direction, per layer, "
            "with AUC and d′ of the separation.",
            plot_projections(projections(model, vec, pairs, layers=_some_layers(vec))),
        ),
    ]


def _sweep_sections(table: pd.DataFrame | None, vec: InstructionVector, label: str) -> list:
    from .sweep_figures import plot_accuracy_heatmap, plot_layer_sweep
    from .sweep_views import accuracy_grid, layer_sweep

    guide = "Accuracy and degenerate share of steered responses by layer, against the baseline."
    if table is None:
        return [
            Section(
                "Layer sweep",
                guide,
                None,
                "no sweep was given (`workbench report --sweep FILE`, or sweep= in Python)",
            )
        ]
    # The figures choose as the stored selection did, so their star is its setting.
    stored = vec.selection or {}
    metric = stored.get("metric", CHOOSE_BY[0])
    objective = stored.get("objective", CHOOSE_BY[1])
    by = {"metric": metric, "objective": objective}
    sections = [Section("Layer sweep", guide, plot_layer_sweep(layer_sweep({label: table}, **by)))]
    for mode in [m for m in table["mode"].dropna().unique() if m != "ablate"]:
        sections.append(
            Section(
                f"Accuracy by layer and strength ({mode})",
                f"Each cell is one setting's share of prompts that follow the instruction "
                f"({metric}); the outlined cells are the setting chosen by {objective} and "
                "those refused as more degenerate than unsteered.",
                plot_accuracy_heatmap(accuracy_grid(table, mode=mode, **by)),
            )
        )
    return sections


def _answers_section(answers: pd.DataFrame) -> Section:
    from workbench.evaluation.answers import ANSWER_COLUMNS, clean_counts, verdict

    heading = "Answers, unsteered and steered"
    if not isinstance(answers, pd.DataFrame) or not set(ANSWER_COLUMNS) <= set(answers.columns):
        raise InvalidArgumentError(
            f"answers must be a DataFrame with the columns {list(ANSWER_COLUMNS)} "
            "(workbench.evaluation.answers.compare_answers), got "
            f"{list(answers.columns) if isinstance(answers, pd.DataFrame) else type(answers).__name__}"
        )
    esc = html.escape
    rows = []
    for r in answers.to_dict("records"):
        cells = [f"<td>{esc(r['prompt'])}</td>"]
        for side in ("unsteered", "steered"):
            mark = verdict(bool(r[f"{side}_follows"]), bool(r[f"{side}_degenerate"]))
            cells.append(f"<td>{esc(r[side])}<br><b>{esc(mark)}</b></td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    c = clean_counts(answers)
    guide = (
        f"Each answer judged by the instruction's checker and the quality guard; "
        f"following and not degenerate: unsteered {c['unsteered']}/{c['n']}, steered "
        f"{c['steered']}/{c['n']}."
    )
    table = (
        '<table class="answers"><tr><th>prompt</th><th>unsteered</th><th>steered</th></tr>'
        f"{''.join(rows)}</table>"
    )
    return Section(heading, guide, html=table)


def report_sections(
    vector: InstructionVector | str | Path,
    *,
    sweep: pd.DataFrame | str | Path | Sequence[str | Path] | None = None,
    model: Any = None,
    pairs: Any = None,
    answers: pd.DataFrame | None = None,
) -> list[Section]:
    """The sections of the report page, figures built, in page order.

    With `model`, the held-out pairs (default: the validation split of the vector's
    bundled instruction) add the relative-norm and projection figures; `answers` (a
    `compare_answers` table) adds the answers with their verdicts.

    Example:
        >>> [s.heading for s in report_sections(vec)][:2]
        ['Layer sweep', 'Norm and projections by layer']
    """
    vec = _vector(vector)
    label = vector_label(vec)
    table = _sweep(sweep)
    if table is not None:
        check_table_vector(table, vec)
    sections = [] if answers is None else [_answers_section(answers)]
    sections += _sweep_sections(table, vec, label)
    sections += _vector_sections(vec, label)
    if model is None:
        sections.append(
            Section(
                "Residual-stream context",
                "",
                None,
                "no model was given (`workbench report --model NAME`, or model= in Python)",
            )
        )
    else:
        if pairs is None:
            pairs = make_pairs(label, split="validation", n=16)
        sections += _model_sections(model, vec, label, pairs)
    return sections


def _meta(vec: InstructionVector) -> dict[str, Any]:
    return {
        "model": vec.model_name,
        "instruction": vec.instruction_id,
        "arguments": dict(vec.kwargs),
        "layers": f"{min(vec.layers)}–{max(vec.layers)} ({len(vec.layers)})",
        "pairs": vec.n_pairs,
        "read at": f"{vec.hook_name}, position {vec.position}, {vec.prompt_style} prompts",
        "selection": selection_line(vec.selection),
    }


def selection_line(selection: Mapping[str, Any] | None) -> str:
    """A vector's stored selection as one readable line.

    Example:
        >>> selection_line({"layer": 14, "mode": "add", "strength": 1.0, "coefficient": 4.21,
        ...     "objective": "clean_accuracy", "metric": "follows_loose", "accuracy": 1.0,
        ...     "clean_accuracy": 0.875, "degenerate_share": 0.125, "n": 8})
        'layer 14, add ×1 (weight 4.21); chosen by clean accuracy on 8 validation queries: follows_loose 1.00, clean 0.88, degenerate 0.12'
        >>> selection_line(None)
        'none (steering uses the layer and mode given)'
    """
    if not selection:
        return "none (steering uses the layer and mode given)"
    if selection.get("layer") is None:
        head = "do not steer (no setting beat unsteered)"
    else:
        strength = selection.get("strength")
        head = f"layer {selection['layer']}, {selection.get('mode')}"
        if strength is not None:
            head += f" ×{float(strength):g}"
        if selection.get("coefficient") is not None:
            kind = "weight" if selection.get("mode") == "add" else "target"
            head += f" ({kind} {float(selection['coefficient']):.3g})"
    if "n" not in selection:
        return head
    objective = str(selection.get("objective", "accuracy")).replace("_", " ")
    return (
        f"{head}; chosen by {objective} on {selection['n']} validation queries: "
        f"{selection.get('metric')} {float(selection['accuracy']):.2f}, clean "
        f"{float(selection['clean_accuracy']):.2f}, degenerate "
        f"{float(selection['degenerate_share']):.2f}"
    )


def render_page(sections: Sequence[Section], *, title: str, meta: dict[str, Any]) -> str:
    """The HTML text of the page: plotly.js inline once, then one block per section.

    Example:
        >>> page = render_page([Section("A", "a guide", go.Figure(go.Bar(y=[1])))],
        ...                    title="t", meta={"model": "tiny"})
        >>> page.count('class="plotly-graph-div"'), "<script src=" in page
        (1, False)
    """
    esc = html.escape
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in meta.items()
    )
    body, missing = [], []
    for i, s in enumerate(sections):
        if s.figure is None and not s.html:
            missing.append(f"<li><b>{esc(s.heading)}</b>: {esc(s.reason)}</li>")
            continue
        div = s.html or s.figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"figure-{i}"
        )
        body.append(f"<section><h2>{esc(s.heading)}</h2><p>{esc(s.guide)}</p>{div}</section>")
    not_shown = f"<h2>Not shown</h2><ul>{''.join(missing)}</ul>" if missing else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{esc(title)}</h1><table>{rows}</table>{''.join(body)}{not_shown}</body></html>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}th,td{text-align:left;padding:2px 12px 2px 0}"
    "section{margin-top:2em}h2{margin-bottom:0.2em}p{color:#555;margin-top:0}"
    "table.answers td{vertical-align:top;border-top:1px solid #ddd;max-width:420px}"
)


def report(
    vector: InstructionVector | str | Path,
    *,
    out: str | Path,
    sweep: pd.DataFrame | str | Path | Sequence[str | Path] | None = None,
    model: Any = None,
    pairs: Any = None,
    answers: pd.DataFrame | None = None,
    title: str | None = None,
    force: bool = False,
) -> Path:
    """Write the report page for `vector` (and its `sweep` table) to `out`, atomically.

    `vector` is an `InstructionVector` or a saved ``.safetensors`` file; `sweep` a sweep
    DataFrame, a ``.jsonl`` file or the files of a sharded sweep; `answers` a
    `compare_answers` table. Returns the path.
    `out` is never one of the inputs, and an existing file that is not an HTML page is
    replaced only with ``force=True``.

    Example:
        >>> import tempfile
        >>> page = report(vec, out=Path(tempfile.mkdtemp()) / "lowercase.html")
        >>> page.read_text().count('class="plotly-graph-div"')
        2
    """
    target = write_target(out, "out")
    _refuse_input(target, vector, sweep)
    check_kind(target, "html", check_bool("force", force), "out")
    if title is not None and not isinstance(title, str):
        raise ArgumentTypeError(f"title must be a str or None, got {type(title).__name__}")
    vec = _vector(vector)
    sections = report_sections(vec, sweep=sweep, model=model, pairs=pairs, answers=answers)
    title = title or f"Instruction vector: {vector_label(vec)} ({vec.model_name})"
    page = render_page(sections, title=title, meta=_meta(vec))
    return write_atomic(out, page.encode("utf-8"), kind="html", force=force)


def _refuse_input(target: Path, vector: Any, sweep: Any) -> None:
    """Refuse an `out` that is one of the page's own input files: it would be replaced."""
    inputs = [vector] if isinstance(vector, (str, os.PathLike)) else []
    if isinstance(sweep, (str, os.PathLike)):
        inputs.append(sweep)
    elif isinstance(sweep, Sequence) and not isinstance(sweep, (str, bytes)):
        inputs += [p for p in sweep if isinstance(p, (str, os.PathLike))]
    # A table from merge_sweeps or sweep(out=) names the files it was read from.
    identity = getattr(sweep, "attrs", {}).get("sweep") if sweep is not None else None
    if isinstance(identity, Mapping) and isinstance(identity.get("sources"), list):
        inputs += [p for p in identity["sources"] if isinstance(p, str)]
    for given in inputs:
        path = user_path(given, "input")
        if target.exists() and path.exists() and os.path.samefile(target, path):
            raise InvalidArgumentError(
                f"out {str(target)!r} is the input file {str(given)!r}; writing the page "
                "there would replace it: choose another out"
            )
