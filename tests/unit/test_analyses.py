"""Analyses: tables from vectors, figures from tables, files written atomically."""

from __future__ import annotations

import pytest
import torch

from analyses import instruction_colour, layer_table, plot_layer_profile, write_html
from workbench import compute_instruction_vector

PAIRS = [
    ("Tell me about owls. Be brief.", "Tell me about owls."),
    ("Describe rain. Be brief.", "Describe rain."),
]


@pytest.fixture(scope="module")
def vec(tiny_models):
    return compute_instruction_vector(tiny_models["bridge"], PAIRS, layers=[0, 2])


def test_layer_table_matches_the_vector(vec):
    table = layer_table(vec)
    assert list(table.layer) == [0, 2]
    torch.testing.assert_close(torch.tensor(table.norm.tolist()), vec.norms())
    # At the read position the projection gap is the norm of the mean difference.
    torch.testing.assert_close(torch.tensor(table.gap.tolist()), vec.norms(), atol=1e-4, rtol=1e-4)


def test_figure_draws_the_table_and_writes_offline_html(vec, tmp_path):
    fig = plot_layer_profile(layer_table(vec), title="owls")
    assert [list(t.x) for t in fig.data] == [[0, 2]] * 3
    assert list(fig.data[0].y) == pytest.approx(vec.norms().tolist())
    path = write_html(fig, tmp_path / "out" / "fig.html")
    html = path.read_text()
    assert "owls" in html and "plotly" in html.lower()
    assert [p.name for p in path.parent.iterdir()] == ["fig.html"]


def test_figure_names_missing_columns(vec):
    with pytest.raises(ValueError, match="mean_proj_with"):
        plot_layer_profile(layer_table(vec).drop(columns=["mean_proj_with"]))


def test_an_instruction_has_one_colour_in_every_figure(tiny_models):
    """lowercase is drawn in the same colour by the sweep, the PCA, the relative-norm and
    the projection figures, and capitals in another one."""
    from analyses import (
        difference_pca,
        instruction_colour,
        layer_sweep,
        plot_difference_pca,
        plot_layer_sweep,
        plot_projections,
        plot_relative_norms,
        projections,
        relative_norm_table,
        residual_norms,
    )
    from workbench import make_pairs, sweep

    model = tiny_models["bridge"]
    vecs = {
        name: compute_instruction_vector(model, make_pairs(name, n=3), keep_pair_diffs=True)
        for name in ["lowercase", "capitals"]
    }
    lower = vecs["lowercase"]
    table = sweep(
        model, lower, ["Hi"], layers=[1], strengths=[1.0], max_new_tokens=2, progress=False
    )
    figures = {
        "sweep": plot_layer_sweep(layer_sweep({"lowercase": table})),
        "pca": plot_difference_pca(difference_pca(vecs, 1)),
        "norms": plot_relative_norms(
            relative_norm_table(lower, residual_norms(model, ["Hi"])), label="lowercase"
        ),
        "projections": plot_projections(projections(model, lower, make_pairs("lowercase", n=3))),
    }

    def colours(fig, picked):
        found = set()
        for trace in fig.data:
            if picked(str(trace.name)):
                for part in (getattr(trace, "line", None), getattr(trace, "marker", None)):
                    if part is not None and isinstance(part.color, str):
                        found.add(part.color)
        return found

    want = instruction_colour("lowercase")
    assert want != instruction_colour("capitals")
    # Which traces draw the lowercase vector: the sweep's lines are named by setting,
    # the projections' by prompt side.
    lowercase_traces = {
        "sweep": lambda n: n.startswith("project"),
        "pca": lambda n: n == "lowercase",
        "norms": lambda n: n == "lowercase",
        "projections": lambda n: n == "with instruction",
    }
    for name, picked in lowercase_traces.items():
        assert colours(figures[name], picked) == {want}, name
    assert colours(figures["pca"], lambda n: n == "capitals") == {instruction_colour("capitals")}


def test_instruction_colours_are_far_apart_and_far_from_grey_and_white():
    """CIEDE2000 distances (about 2.3 is a just-noticeable difference; Dark24, the earlier
    palette, had spanish and title 8.7 apart and one_sentence 14.9 from the grey)."""
    from itertools import combinations

    from coloraide import Color

    from analyses.style import BASELINE_COLOUR, COLOUR_ORDER, PALETTE
    from workbench import instruction_names

    names = instruction_names()
    assert sorted(COLOUR_ORDER) == sorted(names)  # every bundled instruction has a slot
    colours = {name: instruction_colour(name) for name in names}
    assert len(set(colours.values())) == len(names)

    def distance(a: str, b: str) -> float:
        return Color(a).delta_e(Color(b), method="2000")

    def closest(group) -> tuple[float, tuple[str, str]]:
        pairs = combinations(group, 2)
        return min((distance(colours[a], colours[b]), (a, b)) for a, b in pairs)

    assert closest(names)[0] >= 12, closest(names)
    # The eight drawn together in notebook 03 are farther apart still.
    assert closest(COLOUR_ORDER[:8])[0] >= 20, closest(COLOUR_ORDER[:8])
    for name, colour in colours.items():
        assert distance(colour, BASELINE_COLOUR) >= 15, name
        assert distance(colour, "#ffffff") >= 20, name
    # A label of no bundled instruction never takes a bundled instruction's colour.
    others = {instruction_colour(f"my-instruction-{i}") for i in range(50)}
    assert others <= set(PALETTE) and not others & set(colours.values())
