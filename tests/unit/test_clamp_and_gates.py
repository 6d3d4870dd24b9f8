"""Conditional steering on tiny models: the one-sided clamp, and gated terms.

- ``mode="clamp"`` raises each position's projection onto u to the target where it is
  below, and leaves every other position bit for bit as it was.
- A gated term steers a prompt only on its side of the threshold, decided once from
  the prompt's last token, unsteered; `generate` equals an oracle that reads the gate
  and then runs the reference loop with or without the term.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench import PerRow, SteeringTerm, format_prompt, generate, read_residuals, steer
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    VectorError,
    VectorMismatchError,
)
from workbench.model.prompts import tokenize_prompts
from workbench.steering.gates import Gate, describe_gates
from workbench.steering.reference import reference_generate
from workbench.steering.settings import Setting, default_coefficient

PROMPTS = ["hello there", "a", "tell me a story about owls", "why?", "abc def ghi", "zz"]
N_NEW = 8
LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_post"


def _resid(model, ids, steering=None):
    seen = {}

    def grab(x, hook):
        seen["x"] = x.clone()

    with torch.inference_mode(), steer(model, steering), model.hooks(fwd_hooks=[(HOOK, grab)]):
        model(ids)
    return seen["x"]


def test_clamp_raises_what_is_below_target_and_leaves_the_rest_bit_for_bit(tiny_model, tiny_vec):
    ids, _ = tokenize_prompts(tiny_model, ["tell me a story about owls and rain"])
    u = tiny_vec.direction(LAYER).to(tiny_model.cfg.device)
    natural = _resid(tiny_model, ids)
    proj = natural @ u
    # A target inside the natural range, so that both sides hold positions.
    target = float(proj.flatten().median())
    clamped = _resid(
        tiny_model, ids, SteeringTerm(tiny_vec, layer=LAYER, mode="clamp", target=target)
    )
    # The hook's own x . u may round to either side of a target equal to a position's
    # projection; every position clear of it must be untouched.
    above = proj > target + 1e-4
    assert 0 < int(above.sum()) < above.numel() - 1
    assert torch.equal(clamped[above], natural[above])
    expected = torch.maximum(proj, torch.full_like(proj, target))
    torch.testing.assert_close(clamped @ u, expected, atol=1e-4, rtol=0)


def test_clamp_at_a_target_below_every_position_changes_nothing(tiny_model, tiny_vec):
    ids, _ = tokenize_prompts(tiny_model, ["hello world"])
    natural = _resid(tiny_model, ids)
    low = float((natural @ tiny_vec.direction(LAYER)).min()) - 1.0
    term = SteeringTerm(tiny_vec, layer=LAYER, mode="clamp", target=low)
    assert torch.equal(_resid(tiny_model, ids, term), natural)


def test_clamp_generation_equals_the_reference_loop_batched_and_per_row(tiny_model, tiny_vec):
    term = SteeringTerm(tiny_vec, layer=LAYER, mode="clamp", target=2.0)
    ours = generate(tiny_model, PROMPTS, steering=term, max_new_tokens=N_NEW, return_tokens=True)
    oracle = [reference_generate(tiny_model, p, term, N_NEW) for p in PROMPTS]
    assert ours.tokens == oracle
    rows = [term, None, SteeringTerm(tiny_vec, layer=2, mode="project"), term, None, term]
    per_row = generate(
        tiny_model, PROMPTS, steering=PerRow(rows), max_new_tokens=N_NEW, return_tokens=True
    )
    assert per_row.tokens == [
        reference_generate(tiny_model, p, r, N_NEW) for p, r in zip(PROMPTS, rows, strict=True)
    ]


def test_clamp_gives_the_same_tokens_on_both_backends(tiny_models, tiny_vecs):
    out = {
        b: generate(
            m,
            PROMPTS,
            steering=SteeringTerm(tiny_vecs[b], layer=LAYER, mode="clamp"),
            max_new_tokens=N_NEW,
            return_tokens=True,
        ).tokens
        for b, m in tiny_models.items()
    }
    assert out["bridge"] == out["hooked"]


def test_clamp_strength_is_a_multiple_of_the_mean_with_projection(tiny_vec):
    z = float(tiny_vec.mean_proj_with[tiny_vec.row(LAYER)])
    assert default_coefficient(tiny_vec, LAYER, "clamp") == z
    assert Setting(LAYER, "clamp", 0.5).term(tiny_vec).target == 0.5 * z


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"mode": "clamp", "weight": 1.0},
            "weight=1.0 is used only by mode='add'; mode='clamp' takes target=",
        ),
        ({"mode": "add", "target": 1.0}, "used only by mode='project' or mode='clamp'"),
    ],
)
def test_clamp_takes_a_target_and_nothing_else(tiny_vec, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        SteeringTerm(tiny_vec, layer=LAYER, **kwargs)


def test_clamp_on_a_tensor_vector_needs_a_target():
    with pytest.raises(
        InvalidArgumentError, match="mode='clamp' with a tensor vector needs target="
    ):
        SteeringTerm(torch.ones(4), layer=0, mode="clamp")


# -- gates ------------------------------------------------------------------------------


def _projections(model, vec, prompts, layer=LAYER):
    texts = [format_prompt(model, p) for p in prompts]
    acts = read_residuals(model, texts, layers=[layer], share_prefix=False)[:, 0]
    return (acts @ vec.direction(layer).cpu()).tolist()


def _oracle(model, vec, prompts, term, threshold, side="below"):
    """Read each prompt's gate, then steer it with the ungated term or not at all."""
    out, on = [], []
    for p, proj in zip(prompts, _projections(model, vec, prompts), strict=True):
        steered = proj < threshold if side == "below" else proj > threshold
        on.append((steered,))
        out.append(reference_generate(model, p, term if steered else None, N_NEW))
    return out, on


@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize("refill", [False, True])
def test_a_gated_term_equals_reading_the_gate_then_steering_or_not(
    tiny_model, tiny_vec, side, refill
):
    projs = sorted(_projections(tiny_model, tiny_vec, PROMPTS))
    threshold = (projs[2] + projs[3]) / 2  # three prompts on each side
    plain = SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0)
    gated = SteeringTerm(
        tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=Gate(threshold=threshold, side=side)
    )
    ours = generate(
        tiny_model,
        PROMPTS,
        steering=gated,
        max_new_tokens=N_NEW,
        batch_size=4,
        refill=refill,
        return_tokens=True,
    )
    tokens, on = _oracle(tiny_model, tiny_vec, PROMPTS, plain, threshold, side)
    assert ours.gates == on
    assert sum(g[0] for g in on) == 3
    assert ours.tokens == tokens


def test_gates_follow_their_rows_under_per_row_steering(tiny_model, tiny_vec):
    projs = _projections(tiny_model, tiny_vec, PROMPTS)
    ranked = sorted(projs)
    threshold = (ranked[2] + ranked[3]) / 2  # midway: no prompt sits on the threshold
    gate = Gate(threshold=threshold)
    add = SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0)
    ablate = SteeringTerm(tiny_vec, layer=0, mode="ablate")
    rows = [
        SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=gate),
        None,
        [ablate, SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=gate)],
        ablate,
        SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=gate),
        SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=gate),
    ]
    ours = generate(
        tiny_model, PROMPTS, steering=PerRow(rows), max_new_tokens=N_NEW, return_tokens=True
    )
    expected_gates, expected = [], []
    for i, (p, proj) in enumerate(zip(PROMPTS, projs, strict=True)):
        on = proj < threshold
        if i in (1, 3):
            expected_gates.append(())
            terms = None if i == 1 else ablate
        elif i == 2:
            expected_gates.append((on,))
            terms = [ablate, add] if on else [ablate]
        else:
            expected_gates.append((on,))
            terms = add if on else None
        expected.append(reference_generate(tiny_model, p, terms, N_NEW))
    assert ours.gates == expected_gates
    assert ours.tokens == expected


def _shift(x, u):
    return x + 4.0 * u


def test_a_function_term_beside_built_in_terms_keeps_them_all(tiny_model, tiny_vec):
    # Every row of a hook's slot applies its own term, function or built-in.
    z = float(tiny_vec.mean_proj_with[tiny_vec.row(LAYER)])
    clamp = SteeringTerm(tiny_vec, layer=LAYER, mode="clamp", target=3 * z)
    fn = SteeringTerm(tiny_vec, layer=LAYER, mode=_shift)
    rows = [[clamp, fn], [fn], [clamp], None, [fn, clamp], [clamp, clamp]]
    ours = generate(
        tiny_model, PROMPTS, steering=PerRow(rows), max_new_tokens=N_NEW, return_tokens=True
    )
    expected = [
        reference_generate(tiny_model, p, t, N_NEW) for p, t in zip(PROMPTS, rows, strict=True)
    ]
    assert ours.tokens == expected
    # A shared list with a gated term: rows whose gate opened keep both terms.
    projs = _projections(tiny_model, tiny_vec, PROMPTS)
    ranked = sorted(projs)
    threshold = (ranked[2] + ranked[3]) / 2  # midway: no prompt sits on the threshold
    gated = SteeringTerm(
        tiny_vec, layer=LAYER, mode="add", weight=6.0, gate=Gate(threshold=threshold)
    )
    plain = SteeringTerm(tiny_vec, layer=LAYER, mode="add", weight=6.0)
    ours = generate(
        tiny_model, PROMPTS, steering=[gated, fn], max_new_tokens=N_NEW, return_tokens=True
    )
    expected = [
        reference_generate(tiny_model, p, [plain, fn] if proj < threshold else [fn], N_NEW)
        for p, proj in zip(PROMPTS, projs, strict=True)
    ]
    assert sum(proj < threshold for proj in projs) == 3
    assert ours.tokens == expected


def test_clamp_returns_positions_past_target_as_they_came_negative_zeros_included(tiny_vec):
    from workbench.steering.plan import ResolvedTerm, _Slot

    u = tiny_vec.direction(LAYER)
    x = torch.randn(2, 5, u.shape[0], generator=torch.Generator().manual_seed(0))
    k = int(u.argmax())  # u_k > 0, where x + 0 * u would turn -0.0 into +0.0
    x[0, 0, k] = -0.0
    clamp = ResolvedTerm(HOOK, u, -100.0, -1.0, "all", None, "clamp", True, None)
    out = _Slot([clamp], "all").apply(x)
    assert bool(((x @ u) > -100.0).all())  # every position is past the target
    assert out.view(torch.int32).equal(x.view(torch.int32))
    assert torch.signbit(out[0, 0, k])


def test_the_default_threshold_is_midway_between_the_mean_projections(tiny_model, tiny_vec):
    from workbench.steering.gates import resolve_gate

    row = tiny_vec.row(LAYER)
    midway = float((tiny_vec.mean_proj_with[row] + tiny_vec.mean_proj_without[row]) / 2)
    g = resolve_gate(tiny_model, Gate(), tiny_vec, LAYER, tiny_vec.hook_name)
    assert math.isclose(g.threshold, midway, rel_tol=0, abs_tol=1e-9)
    assert g.side == "below"
    # Another layer of the same vector moves the threshold with it.
    other = resolve_gate(tiny_model, Gate(layer=2), tiny_vec, LAYER, tiny_vec.hook_name)
    assert other.layer == 2
    row2 = tiny_vec.row(2)
    assert math.isclose(
        other.threshold,
        float((tiny_vec.mean_proj_with[row2] + tiny_vec.mean_proj_without[row2]) / 2),
        abs_tol=1e-9,
    )


def test_the_default_gate_separates_the_training_prompts(tiny_model, tiny_vec):
    from tests.conftest import LOWERCASE_PAIRS

    with_, without = [w for w, _ in LOWERCASE_PAIRS], [wo for _, wo in LOWERCASE_PAIRS]
    term = SteeringTerm(tiny_vec, layer=LAYER, mode="project", gate=Gate())
    out = generate(tiny_model, with_ + without, steering=term, max_new_tokens=2, return_tokens=True)
    # The vector's own pairs: every with-prompt sits above the midway, every without below.
    assert out.gates == [(False,)] * 3 + [(True,)] * 3
    assert describe_gates(out.gates) == "gate on for 3 of 6 prompts"


def test_nothing_is_gated_unless_asked(tiny_model, tiny_vec):
    out = generate(
        tiny_model,
        PROMPTS[:2],
        steering=SteeringTerm(tiny_vec, layer=LAYER),
        max_new_tokens=2,
        return_tokens=True,
    )
    assert out.gates == [(), ()]


def test_a_gated_term_under_steer_is_refused(tiny_model, tiny_vec):
    with pytest.raises(InvalidArgumentError, match="only generate"):
        steer(tiny_model, SteeringTerm(tiny_vec, layer=LAYER, gate=Gate()))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda v: Gate(side="left"), InvalidArgumentError, "gate side 'left' is not one of"),
        (lambda v: Gate(vector="lowercase"), ArgumentTypeError, "gate vector must be"),
        (lambda v: Gate(vector=torch.ones(4)), InvalidArgumentError, "needs threshold="),
        (
            lambda v: Gate(vector=torch.tensor([1.0, float("nan")]), threshold=0.0),
            InvalidArgumentError,
            "tensor vector holds NaN or inf",
        ),
        (lambda v: Gate(threshold=float("nan")), InvalidArgumentError, "not a finite number"),
        (lambda v: Gate(layer=-1), InvalidArgumentError, "gate layer -1 is out of range"),
        (
            lambda v: SteeringTerm(v, layer=1, gate={"side": "below"}),
            ArgumentTypeError,
            "gate must be a Gate",
        ),
    ],
)
def test_bad_gates_are_refused_at_construction(tiny_vecs, make, error, match):
    with pytest.raises(error, match=match):
        make(tiny_vecs["bridge"])


def test_a_gate_at_a_layer_the_vector_lacks_is_refused_before_decoding(tiny_models):
    from tests.conftest import LOWERCASE_PAIRS
    from workbench import compute_instruction_vector

    model = tiny_models["bridge"]
    vec = compute_instruction_vector(model, LOWERCASE_PAIRS, layers=[1])
    term = SteeringTerm(vec, layer=1, gate=Gate(layer=2))
    with pytest.raises(
        VectorMismatchError, match=r"gate layer 2: the gate's vector holds layers \[1\]"
    ):
        generate(model, ["hi"], steering=term, max_new_tokens=2)


def test_a_gated_sweep_records_each_rows_decision_and_resumes(tiny_model, tiny_vec, tmp_path):
    from workbench import sweep
    from workbench.evaluation.sweeps import SweepPrompt

    texts = ["Tell me about owls.", "Describe rain. Answer in lowercase.", "Name a fruit."]
    prompts = [SweepPrompt(t, "change_case:english_lowercase") for t in texts]
    kw = {"layers": [1, 2], "strengths": [1.0], "max_new_tokens": 3, "progress": False}
    out = tmp_path / "gated.jsonl"
    table = sweep(tiny_model, tiny_vec, prompts, gate=Gate(), out=out, **kw)
    base = table[table.layer.isna()]
    assert base.gate_on.isna().all()
    steered = table[table.layer.notna()]
    assert set(steered.gate_on.tolist()) <= {True, False}
    # Each steered row's decision is the default gate read at that row's own layer.
    for layer, rows in steered.groupby("layer"):
        term = SteeringTerm(tiny_vec, layer=int(layer), gate=Gate())
        seen = generate(tiny_model, texts, steering=term, max_new_tokens=1, return_tokens=True)
        assert rows.sort_values("prompt_index").gate_on.tolist() == [g[0] for g in seen.gates]
    again = sweep(tiny_model, tiny_vec, prompts, gate=Gate(), out=out, **kw)
    assert again.gate_on.tolist() == table.gate_on.tolist()
    # Another gate is another configuration: the file is not resumed with it.
    with pytest.raises(Exception, match="configuration|differs|other"):
        sweep(tiny_model, tiny_vec, prompts, gate=Gate(side="above"), out=out, **kw)
    with pytest.raises(ArgumentTypeError, match="gate must be a Gate"):
        sweep(tiny_model, tiny_vec, prompts, gate=True, **kw)


def _won_by_layer(table, layer):
    """`table` with `layer` the only setting that follows (the others, baseline too, fail)."""
    won = table.copy()
    won["follows_strict"] = (
        (won.layer.isna() if layer is None else won.layer == layer)
        .astype("boolean")
        .fillna(False)
        .astype(bool)
    )
    won["degenerate"] = False
    return won


def test_a_setting_selected_from_a_gated_sweep_is_stored_and_steered_gated(
    tiny_model, tiny_vec, tmp_path
):
    from workbench import select, sweep
    from workbench.evaluation.sweep_files import merge_sweeps
    from workbench.evaluation.sweeps import SweepPrompt

    kw = {"layers": [1, 2], "strengths": [1.0], "max_new_tokens": 2, "progress": False}
    texts = ["Tell me about owls.", "Name a fruit."]
    prompts = [SweepPrompt(t, "change_case:english_lowercase") for t in texts]
    out = tmp_path / "g.jsonl"
    table = sweep(
        tiny_model, tiny_vec, prompts, gate=Gate(threshold=1.5, side="above"), out=out, **kw
    )
    for source in (table, merge_sweeps([out])):  # in memory, and read back from the file
        chosen = select(_won_by_layer(source, 2), tiny_vec)
        assert chosen.setting.layer == 2
        assert chosen.record()["gate"] == {"side": "above", "threshold": 1.5}
        assert (chosen.term.gate.threshold, chosen.term.gate.side) == (1.5, "above")
    stored = tiny_vec.with_selection(chosen.record())
    gate = SteeringTerm(stored).concrete().gate
    assert (gate.threshold, gate.side) == (1.5, "above")
    # An ungated sweep's selection is ungated; "do not steer" holds no gate.
    plain = sweep(tiny_model, tiny_vec, prompts, **kw)
    assert "gate" not in select(_won_by_layer(plain, 2), tiny_vec).record()
    assert "gate" not in select(_won_by_layer(table, None), tiny_vec).record()
    # A gate on another layer cannot travel with this vector's selection.
    other = sweep(tiny_model, tiny_vec, prompts, gate=Gate(layer=0, threshold=1.0), **kw)
    with pytest.raises(InvalidArgumentError, match="gated on another vector or layer"):
        select(_won_by_layer(other, 2), tiny_vec)
    assert select(_won_by_layer(other, 2)).setting.layer == 2  # evidence alone still works


def _gated_selection(vec, gate):
    z = float(vec.mean_proj_with[vec.row(LAYER)])
    return vec.with_selection({"layer": LAYER, "mode": "project", "coefficient": z, "gate": gate})


def test_a_setting_chosen_gated_steers_gated_after_save_and_load(tiny_model, tiny_vec, tmp_path):
    chosen = _gated_selection(tiny_vec, {"side": "below", "threshold": None})
    chosen.save(tmp_path / "v.safetensors")
    loaded = type(tiny_vec).load(tmp_path / "v.safetensors")
    assert loaded.selection["gate"] == {"side": "below", "threshold": None}
    gate = SteeringTerm(loaded).concrete().gate
    assert (gate.vector, gate.layer, gate.threshold, gate.side) == (None, None, None, "below")
    z = float(tiny_vec.mean_proj_with[tiny_vec.row(LAYER)])
    spelled = SteeringTerm(tiny_vec, layer=LAYER, mode="project", target=z, gate=Gate())
    ours = generate(
        tiny_model, PROMPTS, steering=SteeringTerm(loaded), max_new_tokens=N_NEW, return_tokens=True
    )
    theirs = generate(
        tiny_model, PROMPTS, steering=spelled, max_new_tokens=N_NEW, return_tokens=True
    )
    assert ours.gates == theirs.gates and ours.tokens == theirs.tokens
    # A gate given with the term is the user's, not the stored one.
    assert SteeringTerm(loaded, gate=Gate(side="above")).concrete().gate.side == "above"
    # An ungated selection stays ungated.
    plain = tiny_vec.with_selection({"layer": LAYER, "mode": "project", "coefficient": z})
    assert SteeringTerm(plain).concrete().gate is None


def test_a_do_not_steer_selection_holds_no_gate(tiny_vec):
    sel = {
        "layer": None,
        "mode": None,
        "coefficient": None,
        "gate": {"side": "below", "threshold": None},
    }
    with pytest.raises(VectorError, match="'do not steer' .* holds no gate"):
        tiny_vec.with_selection(sel)


@pytest.mark.parametrize(
    "gate",
    [
        {"side": "sideways", "threshold": None},
        {"side": "below", "threshold": float("nan")},
        {"side": "below"},
        {"side": "below", "threshold": None, "layer": 2},
        "below",
    ],
)
def test_a_selection_with_a_malformed_gate_is_refused(tiny_vec, gate):
    with pytest.raises(VectorError, match="gate .* must map side"):
        _gated_selection(tiny_vec, gate)
