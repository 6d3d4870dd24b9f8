"""Analyses: tables from vectors, figures from tables, files written atomically."""

from __future__ import annotations

import pytest
import torch

from analyses import layer_table, plot_layer_profile, write_html
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
