"""Projection, PCA and token-level analyses: planted structure comes out as planted,
the numbers equal the library's own readouts, and each figure draws its table."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from analyses.projection_figures import (
    plot_difference_pca,
    plot_projections,
    plot_token_projections,
)
from analyses.projections import difference_pca, projections
from analyses.style import BASELINE_COLOUR, instruction_colour, write_html
from analyses.tokens import token_projections
from tests.conftest import LOWERCASE_PAIRS
from workbench import (
    Generation,
    SteeringTerm,
    compute_instruction_vector,
    generate,
    separability,
    steer,
)
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    VectorMismatchError,
    WorkbenchError,
)
from workbench.model.prompts import encode_prompts, format_prompt
from workbench.vectors import diagnostics
from workbench.vectors.diagnostics import separability_from_activations

HELD_OUT = [
    ("Describe a storm. Answer in lowercase.", "Describe a storm."),
    ("Name a river. Use only lowercase letters.", "Name a river."),
    ("Explain tides. Answer in lowercase.", "Explain tides."),
    ("List two birds. Use only lowercase letters.", "List two birds."),
]
PROMPT = "Name a colour."


def _by_layer(values: pd.DataFrame, side: str) -> torch.Tensor:
    """``[n_pairs, n_layers]`` projections of one side, layers in table order."""
    part = values[values.side == side].pivot(index="pair", columns="layer", values="projection")
    ordered = part[list(dict.fromkeys(values.layer))].to_numpy().copy()
    return torch.tensor(ordered, dtype=torch.float32)


# --- projections: the pairs read the vector's way, onto its directions -------------


# Planted projections, [n_pairs=4, n_layers=3] per side, where AUC and d' are known by hand:
# layer 0: every with-value is above every without-value, so AUC = 1; means 4.5 and 1.375,
#   sample variances 5/3 and 59/48, so d' = 3.125 / sqrt((5/3 + 59/48) / 2).
# layer 1: with 1, 3, 5, 7 vs without 0, 2, 2, 4. With beats without in 1 + 3 + 4 + 4 = 12
#   of the 16 pairs, so AUC = 0.75; means 4 and 2, sample variances 20/3 and 8/3, so
#   d' = (4 - 2) / sqrt((20/3 + 8/3) / 2) = 2 / sqrt(14/3).
# layer 2: the two sides are the same values, so every comparison is a tie: AUC 0.5, d' 0.
PLANTED_WITH = [[3.0, 1.0, 1.0], [4.0, 3.0, 2.0], [5.0, 5.0, 3.0], [6.0, 7.0, 4.0]]
PLANTED_WITHOUT = [[0.0, 0.0, 1.0], [1.0, 2.0, 2.0], [2.0, 2.0, 3.0], [2.5, 4.0, 4.0]]
PLANTED_AUC = [1.0, 0.75, 0.5]
PLANTED_D_PRIME = [3.125 / ((5 / 3 + 59 / 48) / 2) ** 0.5, 2 / (14 / 3) ** 0.5, 0.0]
PLANTED_MEANS = ([4.5, 4.0, 2.5], [1.375, 2.0, 2.5])


def _planted_acts(values: list[list[float]], d_model: int, seed: int) -> torch.Tensor:
    """``[n_pairs, 3, d_model]``: value times e_l at layer l, plus noise off e_0..e_2."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(values), 3, d_model, generator=gen)
    noise[:, :, :3] = 0.0  # orthogonal to every planted direction: it must not count
    return torch.tensor(values)[:, :, None] * torch.eye(d_model)[:3] + noise


@pytest.fixture
def planted(tiny_model, tiny_vec, monkeypatch):
    """`tiny_vec` pointing along e_0, e_1, e_2, and the pairs' reads replaced by planted ones."""
    d = tiny_vec.d_model
    directions = torch.eye(d)[:3]
    vec = replace(
        tiny_vec, diffs=2.0 * directions, directions=directions, pair_diffs=None, layers=(0, 1, 2)
    )
    acts = (_planted_acts(PLANTED_WITH, d, seed=1), _planted_acts(PLANTED_WITHOUT, d, seed=2))
    calls = []

    def fake_pair_activations(model, pairs, **kwargs):
        calls.append(kwargs)
        cols = [vec.layers.index(layer) for layer in kwargs["layers"]]
        return acts[0][:, cols], acts[1][:, cols]

    monkeypatch.setattr(diagnostics, "pair_activations", fake_pair_activations)
    return vec, acts, calls


def test_planted_separability_has_the_auc_and_d_prime_computed_by_hand(planted):
    vec, (acts_with, acts_without), _ = planted
    table = separability_from_activations(vec.directions, acts_with, acts_without, vec.layers)
    assert table.auc.tolist() == PLANTED_AUC
    assert table.d_prime.tolist() == pytest.approx(PLANTED_D_PRIME)
    assert table.mean_proj_with.tolist() == pytest.approx(PLANTED_MEANS[0])
    assert table.mean_proj_without.tolist() == pytest.approx(PLANTED_MEANS[1])


def test_projections_of_planted_reads_are_the_planted_values(tiny_model, planted):
    vec, _, calls = planted
    proj = projections(tiny_model, vec, HELD_OUT)
    # The pairs were read the vector's way.
    assert calls == [
        {
            "layers": [0, 1, 2],
            "position": vec.position,
            "prompt_style": vec.prompt_style,
            "hook_name": vec.hook_name,
            "batch_size": 16,
        }
    ]
    torch.testing.assert_close(_by_layer(proj.values, "with"), torch.tensor(PLANTED_WITH))
    torch.testing.assert_close(_by_layer(proj.values, "without"), torch.tensor(PLANTED_WITHOUT))
    assert proj.separability.layer.tolist() == [0, 1, 2]
    assert proj.separability.auc.tolist() == PLANTED_AUC
    assert proj.separability.d_prime.tolist() == pytest.approx(PLANTED_D_PRIME)
    assert proj.separability.mean_proj_without.tolist() == pytest.approx(PLANTED_MEANS[1])
    assert len(proj.values) == 3 * len(HELD_OUT) * 2
    first = proj.values.iloc[0]
    assert (first.side, first.prompt) == ("with", HELD_OUT[0][0])
    last = proj.values.iloc[-1]
    assert (last.layer, last.pair, last.side, last.prompt) == (2, 3, "without", HELD_OUT[3][1])
    assert proj.label == "vector"  # hand-made pairs carry no instruction id


def test_a_planted_layer_subset_keeps_each_layers_values(tiny_model, planted):
    vec, _, _ = planted
    proj = projections(tiny_model, vec, HELD_OUT, layers=[2, 1])
    assert proj.separability.auc.tolist() == [PLANTED_AUC[2], PLANTED_AUC[1]]
    expected = torch.tensor(PLANTED_WITH)[:, [2, 1]]
    torch.testing.assert_close(_by_layer(proj.values, "with"), expected)


def test_projection_separability_is_the_diagnostics_separability(tiny_model, tiny_vec):
    proj = projections(tiny_model, tiny_vec, HELD_OUT)
    pd.testing.assert_frame_equal(proj.separability, separability(tiny_model, tiny_vec, HELD_OUT))


def test_on_its_training_pairs_the_mean_projections_are_the_vectors_own(tiny_model, tiny_vec):
    values = projections(tiny_model, tiny_vec, LOWERCASE_PAIRS).values
    means = values.groupby(["side", "layer"]).projection.mean()
    torch.testing.assert_close(
        torch.tensor(means["with"].tolist()), tiny_vec.mean_proj_with, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        torch.tensor(means["without"].tolist()), tiny_vec.mean_proj_without, atol=1e-4, rtol=1e-4
    )


def test_a_plain_style_mean_position_vector_is_read_plain_and_mean(tiny_models):
    model = tiny_models["bridge"]
    vec = compute_instruction_vector(
        model, LOWERCASE_PAIRS, layers=[1], prompt_style="plain", position="mean"
    )
    means = projections(model, vec, LOWERCASE_PAIRS).values.groupby("side").projection.mean()
    assert means["with"] == pytest.approx(float(vec.mean_proj_with[0]), abs=1e-4)
    assert means["without"] == pytest.approx(float(vec.mean_proj_without[0]), abs=1e-4)


def test_a_layer_subset_keeps_the_order_given(tiny_models, tiny_vecs):
    model, vec = tiny_models["bridge"], tiny_vecs["bridge"]
    proj = projections(model, vec, HELD_OUT, layers=[2, 0])
    assert list(proj.separability.layer) == [2, 0]
    assert list(dict.fromkeys(proj.values.layer)) == [2, 0]
    full = projections(model, vec, HELD_OUT).separability.set_index("layer")
    assert list(proj.separability.auc) == list(full.loc[[2, 0], "auc"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [1, 7]}, VectorMismatchError, r"holds layers \[0, 1, 2\], not layer 7"),
        ({"layers": [1, 1]}, InvalidArgumentError, "duplicates"),
        ({"layers": []}, InvalidArgumentError, r"\[0, 1, 2\]"),
        ({"layers": "1"}, ArgumentTypeError, r"\[0, 1, 2\]"),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size"),
    ],
)
def test_projections_refuse_bad_layers_and_options(tiny_models, tiny_vecs, kwargs, error, match):
    with pytest.raises(error, match=match):
        projections(tiny_models["bridge"], tiny_vecs["bridge"], HELD_OUT, **kwargs)


def test_projections_refuse_one_pair_a_non_vector_and_another_model(
    tiny_models, tiny_vecs, smol_like_width
):
    model, vec = tiny_models["bridge"], tiny_vecs["bridge"]
    with pytest.raises(InvalidArgumentError, match="at least 2 held-out pairs"):
        projections(model, vec, HELD_OUT[:1])
    with pytest.raises(ArgumentTypeError, match="InstructionVector, got Tensor"):
        projections(model, vec.diffs, HELD_OUT)
    with pytest.raises(VectorMismatchError, match="d_model=32"):
        projections(smol_like_width, vec, HELD_OUT)


# --- difference PCA: planted clusters separate -----------------------------------


def _planted(vec, centre: torch.Tensor, n: int = 6, seed: int = 0):
    """`vec` holding n per-pair differences = centre + small noise, at every layer."""
    gen = torch.Generator().manual_seed(seed)
    noise = 0.1 * torch.randn(n, len(vec.layers), vec.d_model, generator=gen)
    return replace(vec, pair_diffs=centre + noise, n_pairs=n)


@pytest.fixture(scope="module")
def two_clusters(tiny_vecs):
    base = tiny_vecs["bridge"]
    axis = torch.zeros(base.d_model)
    axis[3] = 3.0
    return {"lowercase": _planted(base, axis, seed=1), "capitals": _planted(base, -axis, seed=2)}


def test_pca_separates_two_planted_clusters_along_pc1(two_clusters):
    table = difference_pca(two_clusters, layer=1)
    assert table.columns.tolist() == ["label", "pair", "pc1", "pc2"]
    assert list(table.pair) == list(range(6)) * 2
    pc1 = table.groupby("label").pc1
    # Axis 3 carries the largest loading, signed positive: the +axis cluster is on the right.
    assert (pc1.min()["lowercase"] > 0) and (pc1.max()["capitals"] < 0)
    ratios = table.attrs["explained_variance_ratio"]
    assert ratios[0] > 0.9 and ratios[0] >= ratios[1] and sum(ratios) <= 1 + 1e-9
    assert table.attrs["layer"] == 1


def test_pca_scores_are_centred_uncorrelated_and_sign_stable(two_clusters):
    table = difference_pca(two_clusters, layer=0, n_components=3)
    scores = torch.tensor(table[["pc1", "pc2", "pc3"]].to_numpy())
    torch.testing.assert_close(scores.mean(0), torch.zeros(3, dtype=scores.dtype))
    cov = scores.T @ scores
    torch.testing.assert_close(cov - torch.diag(cov.diag()), torch.zeros(3, 3, dtype=cov.dtype))
    assert difference_pca(two_clusters, layer=0, n_components=3).equals(table)
    # The sign follows the loadings, not the data: mirrored data give mirrored scores.
    mirrored = {k: replace(v, pair_diffs=-v.pair_diffs) for k, v in two_clusters.items()}
    flipped = difference_pca(mirrored, layer=0, n_components=3)
    torch.testing.assert_close(torch.tensor(flipped.pc1.to_numpy()), -scores[:, 0])


def test_pca_of_a_list_labels_vectors_by_instruction(tiny_vecs):
    base = replace(tiny_vecs["bridge"], instruction_id="change_case:english_lowercase")
    axis = torch.ones(base.d_model)
    table = difference_pca([_planted(base, axis), _planted(base, -axis)], layer=2)
    assert list(dict.fromkeys(table.label)) == ["lowercase", "lowercase (2)"]


def test_pca_refuses_vectors_without_pair_diffs_naming_them(two_clusters, tiny_vecs):
    vectors = {**two_clusters, "plain": tiny_vecs["bridge"]}
    with pytest.raises(WorkbenchError, match="vector 'plain' has no per-pair differences"):
        difference_pca(vectors, layer=1)


def test_pca_refuses_bad_layers_components_and_containers(two_clusters, smol_like_width):
    with pytest.raises(VectorMismatchError, match=r"'lowercase' holds layers \[0, 1, 2\]"):
        difference_pca(two_clusters, layer=5)
    with pytest.raises(VectorMismatchError, match=r"not layer '1'"):
        difference_pca(two_clusters, layer="1")
    with pytest.raises(InvalidArgumentError, match="n_components 13 exceeds"):
        difference_pca(two_clusters, layer=1, n_components=13)
    with pytest.raises(InvalidArgumentError, match="n_components"):
        difference_pca(two_clusters, layer=1, n_components=0)
    with pytest.raises(InvalidArgumentError, match="empty"):
        difference_pca({}, layer=1)
    with pytest.raises(ArgumentTypeError, match=r"wrap it: \[vec\]"):
        difference_pca(two_clusters["lowercase"], layer=1)
    with pytest.raises(ArgumentTypeError, match="vector 1 must be an InstructionVector"):
        difference_pca([two_clusters["lowercase"], "capitals"], layer=1)
    wide = compute_instruction_vector(smol_like_width, HELD_OUT, layers=[1], keep_pair_diffs=True)
    with pytest.raises(VectorMismatchError, match="different d_model"):
        difference_pca({"lowercase": two_clusters["lowercase"], "wide": wide}, layer=1)


# --- token projections: one unsteered forward over prompt + response --------------


def _manual_readout(model, vec, layer: int, response_ids: list[int]) -> torch.Tensor:
    text = format_prompt(model, PROMPT, style=vec.prompt_style)
    prompt_ids = encode_prompts(model, [text], style=vec.prompt_style)[0]
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(torch.tensor([prompt_ids + response_ids]), names_filter=name)
    return cache[name][0, len(prompt_ids) :].float().cpu() @ vec.direction(layer)


def test_token_projections_equal_a_manual_run_with_cache_readout(tiny_model, tiny_vec):
    steered = generate(
        tiny_model,
        [PROMPT],
        steering=SteeringTerm(tiny_vec, layer=1, mode="project"),
        max_new_tokens=5,
        return_tokens=True,
    )
    table = token_projections(
        tiny_model, tiny_vec, 1, PROMPT, {"unsteered": "blue sky", "steered": steered}
    )
    text_ids = tiny_model.tokenizer("blue sky", add_special_tokens=False)["input_ids"]
    for setting, ids in [("unsteered", text_ids), ("steered", steered.tokens[0])]:
        part = table[table.setting == setting]
        assert list(part.position) == list(range(len(ids)))
        assert list(part.token_id) == ids
        assert list(part.token) == [tiny_model.tokenizer.decode([i]) for i in ids]
        torch.testing.assert_close(
            torch.tensor(part.projection.tolist()), _manual_readout(tiny_model, tiny_vec, 1, ids)
        )
    assert table.attrs["mean_proj_without"] == pytest.approx(float(tiny_vec.mean_proj_without[1]))
    assert table.attrs["layer"] == 1


def test_token_projections_agree_across_backends(tiny_models, tiny_vecs):
    vec = tiny_vecs["bridge"]
    responses = {"unsteered": "blue sky", "steered": "RED"}
    bridge, hooked = (
        token_projections(tiny_models[b], vec, 2, PROMPT, responses) for b in tiny_models
    )
    assert bridge[["setting", "position", "token"]].equals(hooked[["setting", "position", "token"]])
    torch.testing.assert_close(
        torch.tensor(bridge.projection.tolist()),
        torch.tensor(hooked.projection.tolist()),
        atol=1e-4,
        rtol=1e-4,
    )


def test_the_read_is_unsteered_because_project_steering_pins_the_layer(tiny_models, tiny_vecs):
    model, vec = tiny_models["bridge"], tiny_vecs["bridge"]
    ids = model.tokenizer("blue sky", add_special_tokens=False)["input_ids"]
    with steer(model, SteeringTerm(vec, layer=1, mode="project")):
        pinned = _manual_readout(model, vec, 1, ids)
    # Under `project` every position reads the target: nothing left to see there.
    torch.testing.assert_close(pinned, torch.full_like(pinned, float(vec.mean_proj_with[1])))
    natural = token_projections(model, vec, 1, PROMPT, {"steered": "blue sky"}).projection
    assert natural.std() > 0.1


@pytest.mark.parametrize(
    ("layer", "responses", "error", "match"),
    [
        (7, {"a": "hi"}, VectorMismatchError, r"holds layers \[0, 1, 2\], not layer 7"),
        (1, ["hi"], ArgumentTypeError, "mapping"),
        (1, {}, InvalidArgumentError, "responses is empty"),
        (1, {"steered": b"hi"}, ArgumentTypeError, "response 'steered' must be a str"),
        (1, {"steered": ""}, InvalidArgumentError, "response 'steered' has no tokens"),
        (1, {3: "hi"}, ArgumentTypeError, r"setting labels .* \[3\]"),
        (1, {"long": "a" * 300}, InvalidArgumentError, "context of 256 tokens"),
        (
            1,
            {"steered": Generation(["a", "b"], [[1], [2]])},
            InvalidArgumentError,
            "Generation of 2 completions",
        ),
    ],
)
def test_token_projections_refuse_bad_input(tiny_models, tiny_vecs, layer, responses, error, match):
    with pytest.raises(error, match=match):
        token_projections(tiny_models["bridge"], tiny_vecs["bridge"], layer, PROMPT, responses)


def test_token_projections_refuse_a_non_string_prompt(tiny_models, tiny_vecs):
    with pytest.raises(ArgumentTypeError, match="prompt must be a str"):
        token_projections(tiny_models["bridge"], tiny_vecs["bridge"], 1, ["hi"], {"a": "x"})


# --- figures draw exactly their tables ---------------------------------------------


def test_projection_violins_show_both_sides_with_auc_and_d_prime(tiny_models, tiny_vecs, tmp_path):
    proj = projections(tiny_models["bridge"], tiny_vecs["bridge"], HELD_OUT)
    proj = replace(proj, label="lowercase")
    fig = plot_projections(proj)
    assert [t.type for t in fig.data] == ["violin", "violin"]
    with_trace, without_trace = fig.data
    assert with_trace.line.color == instruction_colour("lowercase")
    assert without_trace.line.color == BASELINE_COLOUR
    assert list(with_trace.y) == list(proj.values[proj.values.side == "with"].projection)
    first = proj.separability.iloc[0]
    assert with_trace.x[0] == f"0<br>AUC {first.auc:.2f}<br>d′ {first.d_prime:.2f}"
    assert all(t.hovertemplate and "AUC" in t.hovertemplate for t in fig.data)
    assert "residual units" in fig.layout.yaxis.title.text
    assert fig.layout.xaxis.title.text.startswith("layer")
    assert "AUC" in write_html(fig, tmp_path / "proj.html").read_text()


def test_pca_scatter_has_one_coloured_trace_per_instruction(two_clusters, tmp_path):
    table = difference_pca(two_clusters, layer=1)
    fig = plot_difference_pca(table)
    assert [t.name for t in fig.data] == ["lowercase", "capitals"]
    assert [t.marker.color for t in fig.data] == [
        instruction_colour("lowercase"),
        instruction_colour("capitals"),
    ]
    assert all(t.hovertemplate for t in fig.data)
    share = 100 * table.attrs["explained_variance_ratio"][0]
    assert f"{share:.1f}% of variance" in fig.layout.xaxis.title.text
    assert "residual units" in fig.layout.yaxis.title.text
    write_html(fig, tmp_path / "pca.html")
    with pytest.raises(InvalidArgumentError, match=r"\['pc2'\]"):
        plot_difference_pca(difference_pca(two_clusters, layer=1, n_components=1))


def test_token_heatmap_has_a_row_per_setting_centred_on_the_without_level(
    tiny_models, tiny_vecs, tmp_path
):
    table = token_projections(
        tiny_models["bridge"], tiny_vecs["bridge"], 1, PROMPT, {"unsteered": "ab\n", "steered": "a"}
    )
    fig = plot_token_projections(table)
    heat, *legend = fig.data
    assert heat.type == "heatmap" and heat.y == ("unsteered", "steered")
    assert [list(row) for row in heat.z] == [
        table[table.setting == "unsteered"].projection.tolist(),
        [table[table.setting == "steered"].projection.iloc[0], None, None],
    ]
    assert list(heat.text[0]) == ["a", "b", "\\n"]
    assert heat.zmid == pytest.approx(table.attrs["mean_proj_without"])
    assert heat.colorbar.title.text == "projection on u (residual units)"
    assert [t.showlegend for t in legend] == [True, True]
    assert all(t.hovertemplate for t in fig.data)
    write_html(fig, tmp_path / "tokens.html")


def test_long_responses_wrap_onto_rows_labelled_with_their_positions():
    tokens = [f"t{i}" for i in range(10)]
    table = pd.DataFrame(
        {
            "setting": ["unsteered"] * 10 + ["steered"] * 3,
            "position": list(range(10)) + list(range(3)),
            "token": tokens + tokens[:3],
            "projection": [float(i) for i in range(10)] + [-1.0, -2.0, -3.0],
        }
    )
    heat = plot_token_projections(table, per_line=4).data[0]
    assert heat.y == (
        "unsteered · 0–3",
        "unsteered · 4–7",
        "unsteered · 8–9",
        "steered · 0–2",  # the shorter response needs one row
    )
    assert list(heat.text[1]) == ["t4", "t5", "t6", "t7"]
    assert list(heat.z[2]) == [8.0, 9.0, None, None]
    # Hover shows the position and the whole token.
    assert list(heat.customdata[2]) == [[8, "t8"], [9, "t9"], None, None]
    assert list(heat.z[3]) == [-1.0, -2.0, -3.0, None]
    with pytest.raises(WorkbenchError, match="per_line"):
        plot_token_projections(table, per_line=0)


def test_a_long_token_is_cut_in_its_cell_and_whole_in_the_hover():
    tokens = [" headphones", *["ok"] * 15]  # a full row of 16: narrow cells
    table = pd.DataFrame(
        {"setting": ["steered"] * 16, "position": range(16), "token": tokens,
         "projection": [1.0] * 16}
    )  # fmt: skip
    heat = plot_token_projections(table).data[0]
    assert list(heat.text[0][:2]) == ["␣head…", "ok"]
    assert heat.customdata[0][0] == [0, "␣headphones"]
    # Two tokens get wide cells, and the whole text.
    assert plot_token_projections(table.head(2)).data[0].text[0][0] == "␣headphones"


def test_the_violins_can_show_the_gate_threshold_the_gate_uses(tiny_models, tiny_vecs):
    from workbench.steering.gates import Gate, resolve_gate

    model, vec = tiny_models["bridge"], tiny_vecs["bridge"]
    proj = projections(model, vec, HELD_OUT)  # held-out pairs: their means are not the gate's
    assert len(plot_projections(proj).data) == 2
    fig = plot_projections(proj, gate=True)
    line = fig.data[-1]
    assert line.name.startswith("default gate threshold")
    expected = [
        resolve_gate(model, Gate(), vec, layer, vec.hook_name).threshold for layer in vec.layers
    ]
    assert list(line.y) == pytest.approx(expected)
    sep = proj.separability
    held_out = ((sep.mean_proj_with + sep.mean_proj_without) / 2).tolist()
    assert list(line.y) != pytest.approx(held_out)
    with pytest.raises(ArgumentTypeError, match="gate must be True or False"):
        plot_projections(proj, gate="yes")
    with pytest.raises(InvalidArgumentError, match="needs a vector read at the last prompt"):
        plot_projections(replace(proj, gate_thresholds={}), gate=True)


def test_the_token_view_marks_where_a_clamp_acted(tiny_models, tiny_vecs):
    model, vec = tiny_models["bridge"], tiny_vecs["bridge"]
    responses = {"unsteered": "hello there friend", "steered": "HELLO THERE"}
    plain = token_projections(model, vec, 1, "Hi", responses)
    target = float(plain["projection"].median())
    table = token_projections(model, vec, 1, "Hi", responses, clamp_target=target)
    assert table["clamp_acts"].tolist() == (plain["projection"] < target).tolist()
    assert table.attrs["clamp_target"] == target
    fig = plot_token_projections(table, per_line=4)
    marks = [t for t in fig.data if t.name and t.name.startswith("clamp raised")]
    assert len(marks) == 1 and len(marks[0].x) == int(table["clamp_acts"].sum())
    assert not [t for t in plot_token_projections(plain).data if (t.name or "").startswith("clamp")]
    with pytest.raises(InvalidArgumentError, match="clamp_target"):
        token_projections(model, vec, 1, "Hi", responses, clamp_target=float("inf"))
