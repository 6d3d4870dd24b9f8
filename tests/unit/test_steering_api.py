"""The steering API's seams: explicit per-row intent, positions wherever the model runs,
vectors checked wherever they are used, and sampling seeds."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import LOWERCASE_PAIRS
from tests.tiny import make_tiny_checkpoint
from workbench import (
    PerRow,
    Sampling,
    SteeringTerm,
    compute_instruction_vector,
    format_prompt,
    generate,
    load_model,
    separability,
    steer,
)
from workbench.errors import (
    ArgumentTypeError,
    PositionsError,
    VectorMismatchError,
    WorkbenchError,
)
from workbench.model.prompts import tokenize_prompts
from workbench.steering.reference import reference_generate

PROMPTS = ["hello there", "tell me a story about owls", "why?"]
N_NEW = 8


def _tokens(model, prompts=PROMPTS, **kwargs):
    return generate(model, prompts, max_new_tokens=N_NEW, return_tokens=True, **kwargs).tokens


# ----- 1. a plain list always means shared terms -------------------------------------


def test_a_plain_list_of_terms_steers_every_row_with_all_of_them(tiny_model, tiny_vec):
    v = tiny_vec
    two = [
        SteeringTerm(v, layer=0, mode="add", weight=5.0),
        SteeringTerm(v, layer=2, mode="add", weight=-4.0),
    ]
    # Two terms for two prompts: the ambiguous case, read as shared terms all the same.
    together = _tokens(tiny_model, PROMPTS[:2], steering=two)
    alone = [_tokens(tiny_model, [p], steering=two)[0] for p in PROMPTS[:2]]
    assert together == alone
    # Per row, the same two terms mean something else: other logits (compared as
    # logits, since a random model's argmax may not move).
    ids, mask = tokenize_prompts(tiny_model, [format_prompt(tiny_model, p) for p in PROMPTS[:2]])
    with steer(tiny_model, two):
        shared = tiny_model(ids, attention_mask=mask)
    with steer(tiny_model, PerRow(two)):
        per_row = tiny_model(ids, attention_mask=mask)
    assert (shared - per_row).abs().max() > 0.1


@pytest.mark.parametrize("bad", [[None, None, None], [[], [], []], ("x",)])
def test_a_list_that_looks_per_row_is_refused_pointing_to_per_row(tiny_model, tiny_vec, bad):
    with pytest.raises(ArgumentTypeError, match=r"shared by every row.*PerRow\(\[\.\.\.\]\)"):
        generate(tiny_model, PROMPTS, steering=bad, max_new_tokens=2)
    with pytest.raises(ArgumentTypeError, match="PerRow"):
        with steer(tiny_model, bad):
            pass


def test_steer_and_generate_read_per_row_the_same_way(tiny_model, tiny_vec):
    """The forward pass under steer(PerRow) equals each row steered on its own."""
    v = tiny_vec
    rows = PerRow([SteeringTerm(v, layer=1, mode="add", weight=6.0), None])
    ids, mask = tokenize_prompts(tiny_model, [format_prompt(tiny_model, "same prompt")] * 2)
    with steer(tiny_model, rows):
        both = tiny_model(ids, attention_mask=mask)
    with steer(tiny_model, rows[0]):
        first = tiny_model(ids[:1], attention_mask=mask[:1])
    plain = tiny_model(ids[1:], attention_mask=mask[1:])
    torch.testing.assert_close(both[:1], first)
    torch.testing.assert_close(both[1:], plain)


@pytest.mark.parametrize("bad", [None, "abc", 3, [None, 3]])
def test_per_row_entries_are_checked(bad):
    with pytest.raises(ArgumentTypeError, match="PerRow"):
        PerRow(bad)


# ----- 2. positions, for every way of running the model ------------------------------


def _ids(model, prompt="tell me a story about owls"):
    return tokenize_prompts(model, [format_prompt(model, prompt)])[0]


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_position_restricted_terms_refuse_forward_passes_that_do_not_mark_the_prompt(
    tiny_model, tiny_vec, positions
):
    term = SteeringTerm(tiny_vec, layer=1, mode="add", positions=positions)
    ids = _ids(tiny_model)
    runs = {
        "forward": lambda: tiny_model(ids),
        "run_with_cache": lambda: tiny_model.run_with_cache(ids, names_filter="hook_embed"),
        "TransformerLens generate": lambda: tiny_model.generate(
            ids, max_new_tokens=3, do_sample=False, verbose=False
        ),
    }
    for name, run in runs.items():
        with steer(tiny_model, term):
            with pytest.raises(PositionsError, match="Use workbench.generate"):
                run()
        assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values()), name


def test_all_positions_under_transformer_lens_generate_equal_the_reference(tiny_model, tiny_vec):
    """steer() + TransformerLens' own KV-cached generate = the slow reference loop."""
    term = SteeringTerm(tiny_vec, layer=1, mode="add", weight=8.0)
    prompt = "tell me a story about owls"
    ids = _ids(tiny_model, prompt)
    with steer(tiny_model, term):
        out = tiny_model.generate(
            ids, max_new_tokens=N_NEW, do_sample=False, stop_at_eos=False, verbose=False
        )
        steered_logits = tiny_model(ids)[0, -1]
    theirs = out[0, ids.shape[1] :].tolist()
    # Neither side stops at EOS, so every one of the N_NEW tokens is compared.
    assert theirs == reference_generate(tiny_model, prompt, term, N_NEW, stop_at_eos=False)
    # The term really acts: the logits move, whatever the random model's argmax does.
    assert (steered_logits - tiny_model(ids)[0, -1]).abs().max() > 0.1


# ----- 3. a vector is checked against the model wherever it is used ------------------


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("others")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "deeper": load_model(str(make_tiny_checkpoint(root / "deep", n_layers=4))),
            "reseeded": load_model(str(make_tiny_checkpoint(root / "seed", seed=7))),
        }


def test_a_vector_from_a_deeper_or_shallower_model_is_refused_everywhere(tiny_vecs, other_models):
    v, deeper = tiny_vecs["bridge"], other_models["deeper"]
    term = SteeringTerm(v, layer=1, mode="add")
    uses = {
        "generate": lambda: generate(deeper, ["hi"], steering=term, max_new_tokens=2),
        "steer": lambda: steer(deeper, term).__enter__(),
        "per-row": lambda: generate(deeper, ["hi"], steering=PerRow([term]), max_new_tokens=2),
        "separability": lambda: separability(deeper, v, LOWERCASE_PAIRS),
    }
    for name, use in uses.items():
        with pytest.raises(VectorMismatchError, match="3-layer model.*has 4 layers"):
            use()
        assert all(not hp.fwd_hooks for hp in deeper.hook_dict.values()), name


def test_a_vector_from_other_weights_of_the_same_shape_steers_with_a_warning(
    tiny_vecs, other_models
):
    term = SteeringTerm(tiny_vecs["bridge"], layer=1, mode="add")
    with pytest.warns(UserWarning, match="Using it as a transfer"):
        out = generate(other_models["reseeded"], ["hi"], steering=term, max_new_tokens=2)
    assert len(out) == 1


def test_diagnostics_read_pairs_the_way_the_vector_was_built(tiny_plain_dir):
    model = load_model(str(tiny_plain_dir))
    vec = compute_instruction_vector(model, LOWERCASE_PAIRS, position="mean", prompt_style="plain")
    table = separability(model, vec, LOWERCASE_PAIRS)
    # On the pairs it was built from, the read reproduces the vector's own statistics.
    torch.testing.assert_close(
        torch.tensor(table.mean_proj_with.tolist()), vec.mean_proj_with, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        torch.tensor(table.mean_proj_without.tolist()), vec.mean_proj_without, atol=1e-4, rtol=1e-4
    )


def test_diagnostics_use_the_vector_prompt_style_not_the_model_default(tiny_model):
    vec = compute_instruction_vector(tiny_model, LOWERCASE_PAIRS, prompt_style="plain")
    table = separability(tiny_model, vec, LOWERCASE_PAIRS)
    torch.testing.assert_close(
        torch.tensor(table.mean_proj_with.tolist()), vec.mean_proj_with, atol=1e-4, rtol=1e-4
    )


# ----- 7. seeds ----------------------------------------------------------------------


def test_no_seed_means_fresh_randomness_and_reports_the_seed_used(tiny_model):
    sampling = Sampling(temperature=1.5)
    runs = [
        generate(tiny_model, PROMPTS, sampling=sampling, max_new_tokens=N_NEW, return_tokens=True)
        for _ in range(2)
    ]
    assert runs[0].seed != runs[1].seed
    assert runs[0].tokens != runs[1].tokens
    again = _tokens(tiny_model, sampling=Sampling(temperature=1.5, seed=runs[0].seed))
    assert again == runs[0].tokens


def test_greedy_runs_report_no_seed(tiny_model):
    assert generate(tiny_model, ["hi"], max_new_tokens=2, return_tokens=True).seed is None


def test_a_vector_transfers_to_a_model_of_the_same_width_and_depth(tiny_vecs, other_models):
    """The reference work moves instruction-tuned vectors to the base model of the
    same family; here: a vector from one tiny model steers another of the same shape."""
    other = other_models["reseeded"]
    term = SteeringTerm(tiny_vecs["bridge"], layer=1, mode="add", weight=8.0)
    with pytest.warns(UserWarning, match="transfer"):
        steered = _tokens(other, steering=term)
    assert steered != _tokens(other)
    with pytest.warns(UserWarning, match="transfer"):
        oracle = [reference_generate(other, p, term, N_NEW) for p in PROMPTS]
    assert steered == oracle


# ----- steer() objects ------------------------------------------------------------------


def test_a_steer_object_can_be_entered_again_and_nested(tiny_model, tiny_vec):
    term = SteeringTerm(tiny_vec, layer=1, mode="add", weight=6.0)
    ids, mask = tokenize_prompts(tiny_model, [format_prompt(tiny_model, p) for p in PROMPTS])
    block = steer(tiny_model, term)
    with torch.inference_mode():
        with block:
            first = tiny_model(ids, attention_mask=mask)
        with block:
            again = tiny_model(ids, attention_mask=mask)
        with block, block:
            twice = tiny_model(ids, attention_mask=mask)
        with steer(tiny_model, [term, term]):
            doubled = tiny_model(ids, attention_mask=mask)
        plain = tiny_model(ids, attention_mask=mask)
    assert torch.equal(first, again)
    assert torch.equal(twice, doubled)
    assert not torch.equal(first, plain) and not torch.equal(first, twice)
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_a_steer_object_refuses_bad_terms_when_made_and_an_unmatched_exit(tiny_model, tiny_vec):
    with pytest.raises(ArgumentTypeError, match="PerRow"):
        steer(tiny_model, [None])  # before any block is entered
    block = steer(tiny_model, SteeringTerm(tiny_vec, layer=1))
    with pytest.raises(WorkbenchError, match="exited more often than entered"):
        block.__exit__(None, None, None)
