"""Vector geometry: planted cosines come out as planted, related vectors cluster together,
relative norms are norm / typical residual norm, and every figure draws its table."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from analyses.geometry import (
    cluster_order,
    cosine_table,
    layer_cosine_table,
    relative_norm_table,
    residual_norms,
)
from analyses.geometry_figures import (
    COSINE_UNITS,
    RELATIVE_AXIS,
    plot_cosine_heatmap,
    plot_layer_cosines,
    plot_relative_norms,
)
from analyses.style import LAYER_AXIS, instruction_colour, write_html
from workbench import InstructionVector, format_prompt
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    VectorMismatchError,
    WorkbenchError,
)
from workbench.model.prompts import encode_prompts

D = 16
PROMPTS = ["Hi", "Describe a long and winding river.", "Name a colour."]  # unequal lengths


def synthetic(
    rows: list[torch.Tensor], layers: tuple[int, ...] = (0, 1, 2), n_layers: int = 6
) -> InstructionVector:
    """A hand-built vector whose diff at ``layers[i]`` is ``rows[i]`` (any norm)."""
    diffs = torch.stack(rows).float()
    return InstructionVector(
        diffs=diffs,
        directions=diffs / diffs.norm(dim=-1, keepdim=True),
        mean_proj_with=diffs.norm(dim=-1),
        mean_proj_without=torch.zeros(len(rows)),
        layers=layers,
        n_pairs=1,
        model_name="synthetic",
        fingerprint="0",
        model_n_layers=n_layers,
    )


def e(i: int, d: int = D) -> torch.Tensor:
    return torch.eye(d)[i]


def flat(v: torch.Tensor) -> InstructionVector:
    """The same diff at layers 0, 1 and 2."""
    return synthetic([v, v, v])


# Planted: cos(a, b) = 0.6, cos(a, c) = -1, cos(b, c) = -0.6; norms differ on purpose.
PLANTED = {
    "a": flat(3 * e(0)),
    "b": flat(0.6 * e(0) + 0.8 * e(1)),
    "c": flat(-7 * e(0)),
}
EXPECTED = {("a", "b"): 0.6, ("a", "c"): -1.0, ("b", "c"): -0.6}


# --- cosine_table -------------------------------------------------------------------


@pytest.mark.parametrize("cluster", [False, True])
def test_cosine_table_reproduces_planted_cosines(cluster):
    table = cosine_table(PLANTED, layer=1, cluster=cluster)
    assert sorted(table.index) == ["a", "b", "c"] and list(table.index) == list(table.columns)
    for (x, y), cos in EXPECTED.items():
        assert table.loc[x, y] == pytest.approx(cos, abs=1e-6)
        assert table.loc[y, x] == pytest.approx(cos, abs=1e-6)
    assert [table.loc[x, x] for x in table.index] == pytest.approx([1.0] * 3)
    assert table.attrs["layer"] == 1
    if not cluster:
        assert list(table.index) == ["a", "b", "c"]


def test_cosine_table_reads_only_the_chosen_layer():
    # Same direction at layer 0, orthogonal at layer 2.
    vectors = {"p": synthetic([e(0), e(0), e(0)]), "q": synthetic([e(0), e(3), e(4)])}
    assert cosine_table(vectors, 0).loc["p", "q"] == pytest.approx(1.0)
    assert cosine_table(vectors, 2).loc["p", "q"] == pytest.approx(0.0, abs=1e-7)


def test_centred_cosines_remove_the_shared_component():
    # Three directions = a shared component s plus orthogonal parts: every raw cosine
    # is 0.5; after subtracting the mean direction they are -1/2 each (a regular
    # simplex), whatever the shared component was.
    s = e(0)
    vectors = {k: flat(s + e(i + 1)) for i, k in enumerate("xyz")}
    raw = cosine_table(vectors, layer=0, cluster=False)
    centred = cosine_table(vectors, layer=0, cluster=False, centred=True)
    off = [(a, b) for a in "xyz" for b in "xyz" if a != b]
    assert [raw.loc[a, b] for a, b in off] == pytest.approx([0.5] * 6)
    assert [centred.loc[a, b] for a, b in off] == pytest.approx([-0.5] * 6, abs=1e-6)
    assert raw.attrs["centred"] is False and centred.attrs["centred"] is True
    assert "centred" in plot_cosine_heatmap(centred).layout.title.text.lower()


@pytest.mark.parametrize(
    ("vectors", "centred", "match"),
    [
        ({"a": PLANTED["a"], "b": PLANTED["b"]}, True, r"at least 3 vectors, got 2"),
        # Three copies of one direction: nothing is left after centring.
        ({k: flat(e(0)) for k in "abc"}, True, r"\['a', 'b', 'c'\] equal the mean"),
        (PLANTED, "yes", r"centred must be True or False, got str 'yes'"),
    ],
)
def test_centred_cosine_bad_input(vectors, centred, match):
    with pytest.raises(WorkbenchError, match=match):
        cosine_table(vectors, layer=0, centred=centred)


@pytest.mark.parametrize("seed", range(5))
def test_clustering_puts_planted_groups_next_to_each_other(seed):
    gen = torch.Generator().manual_seed(seed)
    axes = {"x": e(0) + e(1), "y": e(5) - e(6), "z": e(10)}
    vectors = {}
    # Three tight groups of three around orthogonal axes, given interleaved.
    for k in range(3):
        for group, axis in axes.items():
            vectors[f"{group}{k}"] = flat(axis + 0.05 * torch.randn(D, generator=gen))
    order = list(cosine_table(vectors, 0).index)
    assert sorted(order) == sorted(vectors)
    groups = [name[0] for name in order]
    runs = [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]
    assert sorted(runs) == ["x", "y", "z"], order  # each group is one contiguous run


def test_clustering_puts_the_nearest_neighbour_at_the_seam():
    # b is near a; c is near b's group but nearer to b than to a: a, b, c or c, b, a.
    d = torch.tensor(
        [[0.0, 1.0, 5.0, 9.0], [1.0, 0.0, 3.0, 9.0], [5.0, 3.0, 0.0, 9.0], [9.0] * 3 + [0.0]]
    )
    order = cluster_order(d)
    assert order[:3] in ([0, 1, 2], [2, 1, 0]) and order[3] == 3


def test_cluster_order_is_deterministic_and_resolves_ties_by_input_order():
    assert cluster_order(torch.ones(5, 5) - torch.eye(5)) == [0, 1, 2, 3, 4]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, D, generator=gen)
    d = 1 - torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1)
    first = cluster_order(d)
    assert sorted(first) == list(range(8))
    assert all(cluster_order(d) == first for _ in range(3))
    assert cluster_order(torch.zeros(1, 1)) == [0]


def test_a_sequence_of_vectors_is_labelled_like_style_labels_it():
    table = cosine_table([PLANTED["a"], PLANTED["b"]], layer=0, cluster=False)
    assert list(table.index) == ["vector", "vector (2)"]
    assert table.iloc[0, 1] == pytest.approx(0.6)


def test_cosine_table_refuses_a_layer_not_every_vector_holds():
    vectors = {"a": PLANTED["a"], "late": synthetic([e(0), e(1)], layers=(1, 4))}
    with pytest.raises(InvalidArgumentError, match=r"layer 2 .*'late'.*\[1\]") as err:
        cosine_table(vectors, 2)
    assert isinstance(err.value, WorkbenchError)
    disjoint = {"a": PLANTED["a"], "late": synthetic([e(0)], layers=(5,))}
    with pytest.raises(InvalidArgumentError, match="share no layer"):
        cosine_table(disjoint, 0)


def test_cosine_table_refuses_vectors_of_different_widths():
    narrow = synthetic([e(0, 8)] * 3)
    with pytest.raises(VectorMismatchError, match=r"'a' \(d_model=16\).*'narrow' \(d_model=8\)"):
        cosine_table({"a": PLANTED["a"], "narrow": narrow}, 0)


@pytest.mark.parametrize(
    ("vectors", "layer", "error", "match"),
    [
        ({}, 0, InvalidArgumentError, "empty"),
        ({"a": "not a vector"}, 0, ArgumentTypeError, r"vectors\['a'\].*str"),
        ([PLANTED["a"], 3], 0, ArgumentTypeError, r"vectors\[1\].*int"),
        ("lowercase", 0, ArgumentTypeError, "mapping or a list"),
        (PLANTED, 1.0, ArgumentTypeError, "layer must be an int"),
        (PLANTED, "1", ArgumentTypeError, "layer must be an int"),
    ],
)
def test_cosine_table_bad_input(vectors, layer, error, match):
    with pytest.raises(error, match=match):
        cosine_table(vectors, layer)


def test_cluster_order_refuses_distances_it_cannot_link():
    # (A non-square matrix is refused too; under the test suite jaxtyping's shape
    # check catches it first, so it is not exercised here.)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        cluster_order(torch.full((2, 2), float("nan")))


# --- layer_cosine_table -------------------------------------------------------------


def test_layer_cosine_table_reproduces_planted_drift():
    # The direction turns by a planted angle between layers 0 -> 2 -> 5.
    vec = synthetic([e(0), 2 * (0.8 * e(0) + 0.6 * e(1)), 5 * e(1)], layers=(0, 2, 5))
    table = layer_cosine_table(vec)
    assert list(table.index) == list(table.columns) == [0, 2, 5]
    expected = [[1.0, 0.8, 0.0], [0.8, 1.0, 0.6], [0.0, 0.6, 1.0]]
    assert table.to_numpy().tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_layer_cosine_table_refuses_a_non_vector():
    with pytest.raises(ArgumentTypeError, match="InstructionVector.*dict"):
        layer_cosine_table({"a": PLANTED["a"]})


# --- residual_norms and relative_norm_table ----------------------------------------


def reference_norms(model, prompts, layers):
    """Norms at every position of each prompt run alone (no padding), pooled."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    pooled = {layer: [] for layer in layers}
    for prompt in prompts:
        ids = torch.tensor(encode_prompts(model, [format_prompt(model, prompt)]))
        with torch.inference_mode():
            _, cache = model.run_with_cache(ids, names_filter=names)
        for layer, name in zip(layers, names, strict=True):
            pooled[layer].append(cache[name][0].double().norm(dim=-1).cpu())
    return {layer: torch.cat(parts) for layer, parts in pooled.items()}


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_residual_norms_pool_every_non_pad_position(tiny_model, batch_size):
    layers = [2, 0]
    table = residual_norms(tiny_model, PROMPTS, layers=layers, batch_size=batch_size)
    ref = reference_norms(tiny_model, PROMPTS, layers)
    assert table.columns.tolist() == ["layer", "median_norm", "mean_norm", "std_norm", "n_tokens"]
    assert table.layer.tolist() == layers
    for row in table.itertuples():
        norms = ref[row.layer]
        assert row.n_tokens == norms.numel()  # pads are not counted
        assert row.median_norm == pytest.approx(float(norms.quantile(0.5)), rel=1e-4)
        assert row.mean_norm == pytest.approx(float(norms.mean()), rel=1e-4)
        assert row.std_norm == pytest.approx(float(norms.std(correction=0)), rel=1e-3)


def test_residual_norms_cover_every_layer_by_default(tiny_model):
    assert residual_norms(tiny_model, ["Hi"]).layer.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [3]}, InvalidArgumentError, r"layer 3 is out of range.*\(0\.\.2\)"),
        ({"layers": []}, InvalidArgumentError, "layers is empty"),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size 0"),
        ({"prompts": "Hi"}, ArgumentTypeError, "bare str"),
        ({"prompts": []}, InvalidArgumentError, "non-empty"),
        ({"prompt_style": "markdown"}, WorkbenchError, "markdown"),
    ],
)
def test_residual_norms_bad_input(tiny_models, kwargs, error, match):
    args = {"prompts": ["Hi"], **kwargs}
    with pytest.raises(error, match=match):
        residual_norms(tiny_models["bridge"], **args)


def norms_frame(by_layer: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame({"layer": list(by_layer), "median_norm": list(by_layer.values())})


def test_relative_norms_are_norm_over_residual_norm():
    vec = synthetic([3 * e(0), 4 * e(1), 10 * e(2)], layers=(4, 0, 2))
    norms = norms_frame({0: 8.0, 1: 99.0, 2: 40.0, 4: 6.0})  # extra layer 1 is ignored
    table = relative_norm_table(vec, norms)
    assert table.columns.tolist() == ["layer", "norm", "residual_norm", "relative"]
    assert table.layer.tolist() == [4, 0, 2]  # the vector's order
    assert table.norm.tolist() == pytest.approx([3.0, 4.0, 10.0])
    assert table.residual_norm.tolist() == [6.0, 8.0, 40.0]
    assert table.relative.tolist() == pytest.approx([0.5, 0.5, 0.25])


def test_relative_norms_of_a_real_vector(tiny_model, tiny_vec):
    norms = residual_norms(tiny_model, PROMPTS)
    table = relative_norm_table(tiny_vec, norms)
    expected = tiny_vec.norms().double() / torch.tensor(norms.median_norm.tolist())
    assert table.relative.tolist() == pytest.approx(expected.tolist())


@pytest.mark.parametrize(
    ("norms", "error", "match"),
    [
        (
            norms_frame({0: 1.0, 2: 1.0}),
            InvalidArgumentError,
            r"lacks layers \[1\].*\[0, 1, 2\].*\[0, 2\]",
        ),
        (
            pd.DataFrame({"layer": [0, 1, 2]}),
            InvalidArgumentError,
            r"lacks columns \['median_norm'\]",
        ),
        (norms_frame({0: 1.0, 1: 0.0, 2: 1.0}), InvalidArgumentError, r"positive.*\{1: 0\.0\}"),
        (
            pd.DataFrame({"layer": [0, 0, 1, 2], "median_norm": [1.0] * 4}),
            InvalidArgumentError,
            r"layers \[0\] more than once",
        ),
        ({0: 1.0, 1: 1.0, 2: 1.0}, ArgumentTypeError, "residual_norms"),
    ],
)
def test_relative_norm_table_bad_input(norms, error, match):
    with pytest.raises(error, match=match):
        relative_norm_table(PLANTED["a"], norms)


def test_relative_norms_refuse_a_vector_read_at_another_hook():
    rows = [3 * e(0), 4 * e(1), 10 * e(2)]
    mid = dataclasses.replace(synthetic(rows), hook_name="blocks.{layer}.hook_resid_mid")
    norms = norms_frame({0: 8.0, 1: 9.0, 2: 40.0})
    with pytest.raises(VectorMismatchError, match=r"hook_resid_mid.*hook_resid_post"):
        relative_norm_table(mid, norms)
    assert relative_norm_table(synthetic(rows), norms).relative.tolist()[0] == 3 / 8


# --- figures ------------------------------------------------------------------------


def test_cosine_heatmap_draws_the_table_in_its_order(tmp_path):
    table = cosine_table(
        {"lowercase": PLANTED["a"], "capitals": PLANTED["b"], "json": PLANTED["c"]}, 2
    )
    fig = plot_cosine_heatmap(table)
    assert len(fig.data) == 1
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert list(heat.x) == list(heat.y) == list(table.index)
    assert [list(r) for r in heat.z] == table.to_numpy().tolist()
    assert (heat.zmin, heat.zmid, heat.zmax) == (-1.0, 0.0, 1.0)
    assert heat.colorbar.title.text and "%{text}" in heat.hovertemplate
    assert heat.text[0][1] == f"{table.iloc[0, 1]:.3f}"
    # Each label is drawn in its instruction's colour, as in every other figure.
    for label, tick in zip(table.index, fig.layout.xaxis.ticktext, strict=True):
        assert instruction_colour(label) in tick and label in tick
    assert fig.layout.yaxis.autorange == "reversed"
    assert "layer 2" in fig.layout.title.text
    html = write_html(fig, tmp_path / "cos.html").read_text()
    assert "capitals" in html and "plotly" in html.lower()


def test_layer_cosine_heatmap_draws_layers_on_both_axes():
    vec = synthetic([e(0), e(0) + e(1), e(1)], layers=(0, 2, 5))
    table = layer_cosine_table(vec)
    fig = plot_layer_cosines(table, label="lowercase")
    heat = fig.data[0]
    assert len(fig.data) == 1 and list(heat.x) == list(heat.y) == [0, 2, 5]
    assert [list(r) for r in heat.z] == table.to_numpy().tolist()
    assert (heat.zmin, heat.zmid, heat.zmax) == (-1.0, 0.0, 1.0)
    assert "lowercase" in heat.hovertemplate and "lowercase" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == fig.layout.yaxis.title.text == LAYER_AXIS
    assert fig.layout.xaxis.type == "category"  # layers 0, 2, 5 get equal cells
    assert "lowercase" in fig.to_html()


def test_relative_norm_figure_draws_one_line_in_the_instruction_colour(tmp_path):
    vec = synthetic([3 * e(0), 4 * e(1), 10 * e(2)])
    table = relative_norm_table(vec, norms_frame({0: 6.0, 1: 8.0, 2: 40.0}))
    fig = plot_relative_norms(table, label="french")
    assert len(fig.data) == 1
    line = fig.data[0]
    assert line.name == "french" and line.showlegend and fig.layout.showlegend
    assert list(line.x) == [0, 1, 2]
    assert list(line.y) == pytest.approx([0.5, 0.5, 0.25])
    assert [list(r) for r in line.customdata] == [[3.0, 6.0], [4.0, 8.0], [10.0, 40.0]]
    assert line.line.color == instruction_colour("french")
    assert "customdata[1]" in line.hovertemplate
    assert fig.layout.xaxis.title.text == LAYER_AXIS
    assert fig.layout.yaxis.title.text == RELATIVE_AXIS
    write_html(fig, tmp_path / "rel.html")
    assert plot_relative_norms(table).data[0].name == "vector"


def test_cosine_colour_bar_states_its_units():
    fig = plot_cosine_heatmap(cosine_table(PLANTED, 0))
    assert "cosine" in fig.data[0].colorbar.title.text
    assert "unitless" in COSINE_UNITS and "unitless" in fig.data[0].colorbar.title.text


@pytest.mark.parametrize(
    ("draw", "table", "error", "match"),
    [
        (plot_cosine_heatmap, norms_frame({0: 1.0}), InvalidArgumentError, "square.*cosine_table"),
        (plot_cosine_heatmap, [[1.0]], ArgumentTypeError, "cosine_table"),
        (plot_layer_cosines, pd.DataFrame(), InvalidArgumentError, "layer_cosine_table"),
        (
            plot_relative_norms,
            norms_frame({0: 1.0}),
            InvalidArgumentError,
            r"\['norm', 'relative', 'residual_norm'\]",
        ),
        (plot_relative_norms, None, ArgumentTypeError, "relative_norm_table"),
    ],
)
def test_figures_refuse_tables_they_do_not_draw(draw, table, error, match):
    with pytest.raises(error, match=match):
        draw(table)
