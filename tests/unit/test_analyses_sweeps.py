"""Layer sweeps, composition, interference and stability: tables and their figures.

Sweep tables are built by hand with planted accuracies, so what the tables and
figures show can be checked against what was planted; composition and interference
run on the tiny model and are checked against `generate` and `score` directly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from analyses.composition import (
    composition_table,
    interference_table,
    joint_responses,
    pair_cosines,
)
from analyses.composition_figures import plot_composition, plot_interference
from analyses.style import BASELINE_COLOUR, LAYER_AXIS, instruction_colour, write_html
from analyses.sweep_figures import plot_accuracy_heatmap, plot_layer_sweep, plot_stability
from analyses.sweep_views import LayerSweep, accuracy_grid, layer_sweep
from workbench import (
    compute_instruction_vector,
    generate,
    make_pairs,
    merge_sweeps,
    score,
    select,
    stability_curve,
)
from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.evaluation.sweep_files import as_frame
from workbench.steering.settings import Setting

N = 4  # prompts per setting: accuracies are multiples of 1/4
# Layer 2 at strength 1 is best; layer 3 at strength 1 is as accurate but degenerate.
# fmt: off
PLANTED = {(1, 0.5): 0.0, (1, 1.0): 0.25,
           (2, 0.5): 0.5, (2, 1.0): 1.0,
           (3, 0.5): 0.25, (3, 1.0): 1.0}
# fmt: on
DEGENERATE = {(3, 1.0): 0.5}
BASELINE = 0.25
RAW = Path(__file__).resolve().parents[2] / "results" / "raw"


def sweep_table(
    planted: dict = PLANTED,
    *,
    baseline: float | None = BASELINE,
    mode: str = "add",
    degenerate: dict = DEGENERATE,
    instruction_id: str = "change_case:english_lowercase",
) -> pd.DataFrame:
    """A sweep table (the columns `sweep` returns) whose accuracies are `planted`."""
    settings = [(None, None)] if baseline is not None else []
    settings += list(planted)
    rows = []
    for layer, strength in settings:
        accuracy = baseline if layer is None else planted[(layer, strength)]
        bad = degenerate.get((layer, strength), 0.0)
        for i in range(N):
            rows.append(
                {
                    "unit": len(rows),
                    "prompt_index": i,
                    "instruction_id": instruction_id,
                    "kwargs": {},
                    "layer": layer,
                    "mode": None if layer is None else mode,
                    "strength": strength,
                    "coefficient": None if layer is None else 10.0 * layer * strength,
                    "follows_strict": i < round(accuracy * N),
                    "follows_loose": i < round(accuracy * N),
                    "degenerate": i < round(bad * N),
                }
            )
    return as_frame(rows)


def _lines(fig, row_axis: str = "y") -> dict:
    """Named line traces of one subplot: {name: (x, y)}."""
    return {t.name: (list(t.x), list(t.y)) for t in fig.data if t.yaxis == row_axis}


def _check_figure(fig, tmp_path: Path) -> str:
    """Every trace has a hover template, axes carry units, and the HTML is written."""
    assert all(t.hovertemplate for t in fig.data)
    assert any(t.showlegend is not False for t in fig.data)
    layout = fig.layout.to_plotly_json()
    titles = {k: v.get("title", {}).get("text") for k, v in layout.items() if k[1:5] == "axis"}
    for axis in ("x", "y"):
        named = [t for k, t in titles.items() if k.startswith(axis) and t]
        # Units (or what a category axis holds) in parentheses on every titled axis.
        assert named and all("(" in t and t.endswith(")") for t in named), titles
    html = write_html(fig, tmp_path / "figure.html").read_text()
    assert "plotly" in html.lower()
    return html


# Layer sweep ------------------------------------------------------------------


def test_planted_accuracies_come_out_per_layer_and_strength():
    data = layer_sweep(sweep_table())
    assert isinstance(data, LayerSweep) and data.by == "strength"
    got = {(r.layer, r.strength): r.accuracy for r in data.curves.itertuples()}
    assert got == PLANTED
    assert set(data.curves["line"]) == {"add ×0.5", "add ×1"}
    assert data.curves["instruction"].unique().tolist() == ["lowercase"]  # from the table's id
    assert data.baseline.accuracy.tolist() == [BASELINE]
    # Layer 3 ties layer 2 in accuracy but breaks more answers than unsteered: not chosen.
    chosen = data.selected.iloc[0]
    assert (chosen.layer, chosen["mode"], chosen.strength, chosen.accuracy) == (2, "add", 1.0, 1.0)


def test_the_selected_setting_is_selects_choice_on_a_real_sweep_file():
    # Made by `make results` at the quick preset: layers 6, 10, ..., 26.
    table = merge_sweeps([RAW / "no_comma.val.no_instruction.jsonl"])
    data = layer_sweep(table)
    chosen = data.selected.iloc[0]
    assert Setting(int(chosen.layer), chosen["mode"], chosen.strength) == select(table).setting
    assert set(data.curves.layer) == set(range(6, 30, 4))


def test_layer_sweep_figure_draws_the_lines_baseline_and_selection(tmp_path):
    fig = plot_layer_sweep(layer_sweep(sweep_table()))
    top, bottom = _lines(fig, "y"), _lines(fig, "y2")
    assert top["add ×1"] == ([1, 2, 3], [0.25, 1.0, 1.0])
    assert top["add ×0.5"] == ([1, 2, 3], [0.0, 0.5, 0.25])
    assert bottom["add ×1"] == ([1, 2, 3], [0.0, 0.0, 0.5])
    # The baseline is a grey horizontal line at the baseline accuracy, across the layers.
    base = [t for t in fig.data if t.name == "unsteered" and t.yaxis == "y"][0]
    assert list(base.y) == [BASELINE, BASELINE] and list(base.x) == [1, 3]
    assert base.line.color == BASELINE_COLOUR
    star = [t for t in fig.data if t.name.startswith("selected") and t.yaxis == "y"][0]
    assert (list(star.x), list(star.y), star.marker.symbol) == ([2], [1.0], "star")
    # Steered lines of one instruction take its colour.
    steered = [t for t in fig.data if t.name.startswith("add")]
    assert {t.line.color for t in steered} == {instruction_colour("lowercase")}
    assert fig.layout.xaxis2.title.text == LAYER_AXIS
    assert "0–1" in fig.layout.yaxis.title.text and "0–1" in fig.layout.yaxis2.title.text
    _check_figure(fig, tmp_path)


def test_one_line_per_instruction_follows_each_selected_strength(tmp_path):
    low = sweep_table()
    caps = sweep_table(
        {(1, 0.5): 0.75, (1, 1.0): 0.0, (2, 0.5): 0.5, (2, 1.0): 0.0},
        degenerate={},
        instruction_id="change_case:english_capital",
    )
    data = layer_sweep({"lowercase": low, "capitals": caps}, by="instruction")
    lines = {k: g for k, g in data.curves.groupby("line", sort=False)}
    assert list(lines) == ["lowercase", "capitals"]
    assert lines["lowercase"].strength.unique().tolist() == [1.0]  # its selection
    assert lines["capitals"].strength.unique().tolist() == [0.5]
    assert lines["capitals"].accuracy.tolist() == [0.75, 0.5]
    fig = plot_layer_sweep(data)
    top = {t.name: t for t in fig.data if t.yaxis == "y" and t.mode == "lines+markers"}
    assert set(top) == {"lowercase: lowercase", "capitals: capitals"}
    assert top["capitals: capitals"].line.color == instruction_colour("capitals")
    assert top["capitals: capitals"].line.color != top["lowercase: lowercase"].line.color
    # A given strength replaces the selected ones.
    fixed = layer_sweep({"lowercase": low, "capitals": caps}, by="instruction", strength=1.0)
    assert fixed.curves.strength.unique().tolist() == [1.0]
    _check_figure(fig, tmp_path)


def test_a_sweep_without_baseline_has_no_baseline_and_no_selection(tmp_path):
    data = layer_sweep(sweep_table(baseline=None))
    assert data.baseline.empty and data.selected.empty
    fig = plot_layer_sweep(data)
    assert not [t for t in fig.data if "unsteered" in t.name or "selected" in t.name]
    _check_figure(fig, tmp_path)
    heat = plot_accuracy_heatmap(accuracy_grid(sweep_table(baseline=None)))
    assert "no unsteered baseline" in heat.layout.title.subtitle.text and not heat.layout.shapes


def test_when_not_steering_is_chosen_the_baseline_says_so():
    data = layer_sweep(sweep_table(baseline=1.0))
    assert data.selected.layer.isna().all()
    names = [t.name for t in plot_layer_sweep(data).data if t.line.color == BASELINE_COLOUR]
    assert (
        names == ["unsteered (selected)"] * 2
        and not accuracy_grid(sweep_table(baseline=1.0)).selected.any()
    )


def test_heatmap_z_is_the_planted_grid_with_the_selected_cell_marked(tmp_path):
    grid = accuracy_grid(sweep_table())
    assert grid.selected.tolist() == [False, False, False, True, False, False]
    assert grid.baseline_accuracy.unique().tolist() == [BASELINE]
    assert grid.eligible.tolist() == [True, True, True, True, True, False]
    fig = plot_accuracy_heatmap(grid)
    (heat,) = fig.data
    assert list(heat.y) == ["1", "2", "3"] and list(heat.x) == ["0.5", "1"]
    assert [list(r) for r in heat.z] == [[0.0, 0.25], [0.5, 1.0], [0.25, 1.0]]
    # The marks sit beside the values and outline their cells (x, y: category indices).
    assert [list(r) for r in heat.text] == [
        ["0.00", "0.25"], ["0.50", "1.00 ★"], ["0.25", "1.00 ×"],
    ]  # fmt: skip
    outlined = {(s.name, round(s.x0 + 0.46), round(s.y0 + 0.46)) for s in fig.layout.shapes}
    assert outlined == {("★ selected setting", 1, 1), ("× more degenerate than unsteered", 1, 2)}
    baseline = f"unsteered {round(BASELINE * N)}/{N} = {BASELINE:.2f}"
    assert baseline in fig.layout.title.subtitle.text and baseline in heat.hovertemplate
    _check_figure(fig, tmp_path)


def test_heatmap_of_one_mode_when_the_sweep_has_two():
    both = pd.concat([sweep_table(), sweep_table(mode="project", baseline=None)])
    with pytest.raises(InvalidArgumentError, match=r"\['add', 'project'\]"):
        accuracy_grid(both)
    grid = accuracy_grid(both, mode="project")
    assert set(grid["mode"]) == {"project"} and len(grid) == len(PLANTED)
    with pytest.raises(InvalidArgumentError, match="ablate"):
        accuracy_grid(both, mode="ablate")
    with pytest.raises(InvalidArgumentError, match="objective 'best' is not one of"):
        accuracy_grid(both, mode="add", objective="best")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"by": "layer"},
            InvalidArgumentError,
            r"by 'layer' is not one of \('strength', 'instruction'\)",
        ),
        ({"mode": "push"}, InvalidArgumentError, "mode 'push' is not one of"),
        ({"mode": "project"}, InvalidArgumentError, r"modes \['add'\]"),
        ({"strength": 3.0}, InvalidArgumentError, r"strengths \[0.5, 1.0\]"),
        ({"strength": float("nan")}, InvalidArgumentError, "strength nan"),
        ({"metric": "accuracy"}, InvalidArgumentError, "metric 'accuracy'"),
        ({"objective": "best"}, InvalidArgumentError, "objective 'best' is not one of"),
    ],
)
def test_bad_layer_sweep_arguments_name_the_value_and_the_choices(kwargs, error, match):
    with pytest.raises(error, match=match):
        layer_sweep(sweep_table(), **kwargs)


def test_bad_tables_are_refused_naming_what_is_wrong():
    with pytest.raises(InvalidArgumentError, match=r"lack columns \['degenerate'\]"):
        layer_sweep(sweep_table().drop(columns="degenerate"))
    with pytest.raises(ArgumentTypeError, match="list"):
        layer_sweep([sweep_table()])
    with pytest.raises(ArgumentTypeError, match=r"results\['x'\]"):
        layer_sweep({"x": "table.jsonl"})
    with pytest.raises(InvalidArgumentError, match="no steered rows"):
        layer_sweep(sweep_table({}))
    with pytest.raises(InvalidArgumentError, match="no steered setting was selected"):
        layer_sweep(sweep_table(baseline=None), by="instruction")
    with pytest.raises(ArgumentTypeError, match="once per instruction"):
        accuracy_grid({"x": sweep_table()})
    with pytest.raises(ArgumentTypeError, match="LayerSweep"):
        plot_layer_sweep(sweep_table())
    with pytest.raises(InvalidArgumentError, match=r"lacks columns \['selected'\]"):
        plot_accuracy_heatmap(accuracy_grid(sweep_table()).drop(columns="selected"))
    assert issubclass(InvalidArgumentError, WorkbenchError)


# Stability ----------------------------------------------------------------------


def test_stability_figure_has_one_line_per_layer_with_error_bars(tmp_path):
    curve = stability_curve(torch.randn(16, 3, 32), n_draws=4, seed=1)
    fig = plot_stability(curve, label="noise")
    assert [t.name for t in fig.data] == ["layer 0", "layer 1", "layer 2"]
    layer1 = curve[curve.layer == 1].sort_values("n_pairs")
    assert list(fig.data[1].x) == layer1.n_pairs.tolist() == [1, 2, 4, 8]
    assert list(fig.data[1].y) == pytest.approx(layer1.cosine.tolist())
    assert list(fig.data[1].error_y.array) == pytest.approx(layer1.cosine_std.tolist())
    assert "noise" in fig.layout.title.text and "unitless" in fig.layout.yaxis.title.text
    _check_figure(fig, tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"\['cosine_std'\]"):
        plot_stability(curve.drop(columns="cosine_std"))
    with pytest.raises(ArgumentTypeError, match="label"):
        plot_stability(curve, label=3)


# Composition and interference -----------------------------------------------------

PROMPTS = ["Name a tree.", "Describe rain."]
LAYER, STRENGTH, TOKENS = 1, 4.0, 3


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["bridge"]


@pytest.fixture(scope="module")
def vectors(model):
    return {
        name: compute_instruction_vector(model, make_pairs(name, n=3))
        for name in ("lowercase", "one_sentence")
    }


@pytest.fixture(scope="module")
def responses(model, vectors):
    kw = {"layer": LAYER, "strength": STRENGTH, "max_new_tokens": TOKENS}
    return joint_responses(model, vectors, PROMPTS, **kw)


def test_joint_responses_cover_every_condition_prompt_and_checker(responses, vectors):
    # unsteered, each alone, the pair; × 2 prompts × 2 checkers
    assert len(responses) == 4 * 2 * 2
    conditions = responses[["a", "b"]].fillna("-").drop_duplicates().values.tolist()
    assert conditions == [["-", "-"], ["lowercase", "-"], ["one_sentence", "-"],
                          ["lowercase", "one_sentence"]]  # fmt: skip
    for row in responses.itertuples():
        vec = vectors[row.checked]
        assert row.follows_strict == score(row.response, vec.instruction_id, vec.kwargs)


def test_the_pair_is_steered_with_both_vectors_at_once(model, vectors, responses):
    terms = [Setting(LAYER, "add", STRENGTH).term(v) for v in vectors.values()]
    both = generate(model, PROMPTS, steering=terms, max_new_tokens=TOKENS)
    rows = responses[responses.b.notna() & (responses.checked == "lowercase")]
    assert rows.response.tolist() == both


def test_composition_table_is_the_scores_of_the_joint_responses(responses, vectors, tmp_path):
    table = composition_table(responses, vectors)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.a, row.b, row.layer, row.n) == ("lowercase", "one_sentence", LAYER, 2)
    joint = responses[responses.b.notna()]
    texts = joint[joint.checked == "lowercase"].response.tolist()
    low = [score(t, "change_case:english_lowercase") for t in texts]
    one = [
        score(t, vectors["one_sentence"].instruction_id, vectors["one_sentence"].kwargs)
        for t in texts
    ]
    assert row.accuracy_a == sum(low) / 2 and row.accuracy_b == sum(one) / 2
    assert row.joint_accuracy == sum(a and b for a, b in zip(low, one, strict=True)) / 2
    a, b = (v.diffs[v.row(LAYER)] for v in vectors.values())
    assert row.cosine == pytest.approx(float(torch.cosine_similarity(a, b, dim=0)))
    assert row.cosine == pytest.approx(pair_cosines(vectors, layer=LAYER).cosine.iloc[0])
    fig = plot_composition(table)
    assert [t.name for t in fig.data] == [
        "steered with both",
        "unsteered",
        "lowercase",
        "one_sentence",
    ]
    assert (list(fig.data[0].x), list(fig.data[0].y)) == ([row.cosine], [row.joint_accuracy])
    assert list(fig.data[1].y) == [row.baseline_joint_accuracy]
    assert fig.data[1].marker.color == BASELINE_COLOUR
    assert "lowercase + one_sentence" in fig.data[0].text
    _check_figure(fig, tmp_path)


def test_interference_table_checks_every_instruction_under_each_vector(responses, tmp_path):
    table = interference_table(responses)
    names = ["lowercase", "one_sentence"]
    assert table[["steered_with", "checked"]].values.tolist() == [
        [a, b] for a in names for b in names
    ]
    assert table.own.tolist() == [True, False, False, True]
    for row in table.itertuples():
        steered = responses[(responses.a == row.steered_with) & responses.b.isna()]
        base = responses[responses.a.isna()]
        expect = steered[steered.checked == row.checked].follows_strict.mean()
        assert row.accuracy == expect
        assert row.delta == expect - base[base.checked == row.checked].follows_strict.mean()
    fig = plot_interference(table)
    heat = fig.data[0]
    assert list(heat.y) == ["lowercase", "one_sentence"] and list(heat.x) == list(heat.y)
    assert [list(r) for r in heat.z] == [
        table.delta.tolist()[:2],
        table.delta.tolist()[2:],
    ]
    # The own diagonal is outlined (x, y: category positions), its values left readable.
    own = [(round(s.x0 + 0.46), round(s.y0 + 0.46)) for s in fig.layout.shapes]
    assert own == [(0, 0), (1, 1)] and len(fig.data) == 1
    _check_figure(fig, tmp_path)


def test_bad_composition_input_is_refused(model, vectors, responses):
    kw = {"layer": LAYER, "max_new_tokens": TOKENS}
    with pytest.raises(ArgumentTypeError, match="prompts"):
        joint_responses(model, vectors, "Name a tree.", **kw)
    with pytest.raises(InvalidArgumentError, match="mode 'push'"):
        joint_responses(model, vectors, PROMPTS, mode="push", **kw)
    with pytest.raises(WorkbenchError, match="layer 7"):
        joint_responses(model, vectors, PROMPTS, layer=7, max_new_tokens=TOKENS)
    anonymous = compute_instruction_vector(model, [("Hi. Be brief.", "Hi.")] * 2)
    with pytest.raises(InvalidArgumentError, match="carries no instruction_id"):
        joint_responses(model, {"mine": anonymous}, PROMPTS, **kw)
    with pytest.raises(InvalidArgumentError, match="no rows steered with two vectors"):
        composition_table(responses[responses.b.isna()], vectors)
    with pytest.raises(InvalidArgumentError, match=r"\['one_sentence'\]"):
        composition_table(responses, {"lowercase": vectors["lowercase"]})
    with pytest.raises(InvalidArgumentError, match=r"lack columns \['checked'\]"):
        interference_table(responses.drop(columns="checked"))
    with pytest.raises(InvalidArgumentError, match="metric 'exact'"):
        interference_table(responses, metric="exact")
    with pytest.raises(InvalidArgumentError, match=r"lacks columns \['delta'\]"):
        plot_interference(interference_table(responses).drop(columns="delta"))
