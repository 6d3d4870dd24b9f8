"""Arguments the library once read by truthiness or by iteration, and prompts longer than
the model's context: each refused with a one-line WorkbenchError naming the value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import (
    compute_instruction_vector,
    format_prompt,
    generate,
    instruction,
    make_pairs,
    read_residuals,
    separability,
)
from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.evaluation.quality import quality_frame, response_perplexity
from workbench.evaluation.scoring import score
from workbench.evaluation.selection import select, summarize
from workbench.vectors.diagnostics import (
    pairs_to_settle,
    separability_from_activations,
    stability_curve,
)
from workbench.vectors.extraction import pair_activations
from workbench.vectors.ifeval import check_instruction
from workbench.vectors.pairs import Pair

LONG = "x" * 300  # byte-level tokenizer: 300 tokens, past the tiny model's 256
PAIRS = [("Tell me about owls. Be brief.", "Tell me about owls."), ("Hi. Be brief.", "Hi.")]


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "match"),
    [
        (
            "keywords:existence",
            {"keywords": "ocean"},
            r"\['keywords'\] must be a list of str such as \['ocean'\], got str 'ocean'",
        ),
        ("keywords:existence", {"keywords": ["ocean", 3]}, "must be a list of str"),
        ("keywords:forbidden_words", {"forbidden_words": "no"}, r"such as \['no'\]"),
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": True},
            "must be an int, got bool True",
        ),
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": 3.0},
            "must be an int, got float 3.0",
        ),
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": "3"},
            "must be an int, got str '3'",
        ),
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": np.array([3])},
            "must be an int, got ndarray",
        ),
        (
            "keywords:frequency",
            {"keyword": ["ocean"], "frequency": 2, "relation": "at least"},
            r"\['keyword'\] must be a str",
        ),
        ("startend:end_checker", {"end_phrase": 7}, r"\['end_phrase'\] must be a str"),
        (
            "length_constraints:exact_sentences",
            {"num_sentences": False},
            "must be an int, got bool",
        ),
    ],
)
def test_every_checker_argument_is_checked_for_its_type(instruction_id, kwargs, match):
    for call in (
        lambda: score("I once ate.", instruction_id, kwargs),
        lambda: check_instruction(instruction_id, kwargs),
    ):
        with pytest.raises(ArgumentTypeError, match=match) as info:
            call()
        assert instruction_id in str(info.value) and "\n" not in str(info.value)


def test_a_string_of_keywords_no_longer_passes_letter_by_letter():
    # "ocean" read as o, c, e, a, n: "I once ate." holds every letter and passed.
    assert not score("I once ate.", "keywords:existence", {"keywords": ["ocean"]})
    assert score("The ocean.", "keywords:existence", {"keywords": ("ocean",)})
    assert score("- a", "detectable_format:number_bullet_lists", {"num_bullets": np.int64(1)})


def test_every_checker_argument_has_a_declared_type():
    from workbench.vectors import ifeval, placeholders

    declared = placeholders.INT_ARGS | placeholders.STR_ARGS | placeholders.WORDS_ARGS
    taken = {k for i in ifeval.instruction_ids() for k in ifeval._arg_keys(i)}
    assert taken <= declared


def test_other_score_arguments_are_checked():
    with pytest.raises(ArgumentTypeError, match="loose must be True or False, got str 'no'"):
        score("hi", "length:concise", loose="no")
    with pytest.raises(InvalidArgumentError, match=r"does not take kwargs \[1\]"):
        score("hi", "length:concise", {1: 2})


def test_a_vector_records_kwargs_the_scorer_accepts(tiny_models):
    model = tiny_models["bridge"]
    with pytest.raises(ArgumentTypeError, match=r"kwargs\['keywords'\] must be a list"):
        compute_instruction_vector(
            model, PAIRS, instruction_id="keywords:existence", kwargs={"keywords": "ocean"}
        )
    mixed = [
        Pair(*PAIRS[0], "keywords:existence", {"keywords": ["ocean"]}),
        Pair(*PAIRS[1], "keywords:existence", {"keywords": ["music"]}),
    ]
    with pytest.raises(InvalidArgumentError, match="carry 2 different kwargs .* pass kwargs="):
        compute_instruction_vector(model, mixed)
    vec = compute_instruction_vector(model, mixed, kwargs={"keywords": ["ocean", "music"]})
    assert vec.instruction_id == "keywords:existence" and vec.kwargs == {
        "keywords": ["ocean", "music"]
    }
    with pytest.raises(ArgumentTypeError, match="keep_pair_diffs must be True or False"):
        compute_instruction_vector(model, PAIRS, keep_pair_diffs="yes")


def test_placeholders_refuse_a_bool_for_a_count():
    with pytest.raises(
        InvalidArgumentError, match="num_bullets must be an int in .* got bool True"
    ):
        instruction("bullets", num_bullets=True)


def test_every_reader_refuses_a_prompt_longer_than_the_context_as_generate_does(tiny_model):
    pairs = [PAIRS[0], (LONG + " Be brief.", LONG)]
    with pytest.raises(InvalidArgumentError, match="context of 256 tokens"):
        generate(tiny_model, [LONG], max_new_tokens=1)
    with pytest.raises(
        InvalidArgumentError,
        match=r"^prompt 1 has 3\d\d tokens, which exceeds the model's context of 256 tokens$",
    ):
        read_residuals(
            tiny_model, [format_prompt(tiny_model, "hi"), format_prompt(tiny_model, LONG)]
        )
    pair_message = r"^pair 1's with-instruction prompt has 3\d\d tokens, which exceeds the model's context of 256 tokens$"
    with pytest.raises(InvalidArgumentError, match=pair_message):
        compute_instruction_vector(tiny_model, pairs)
    with pytest.raises(InvalidArgumentError, match=pair_message):
        pair_activations(tiny_model, pairs)


def test_separability_and_residual_norms_check_the_context(tiny_model, tiny_vec):
    from analyses.geometry import residual_norms

    with pytest.raises(InvalidArgumentError, match="pair 1's with-instruction prompt has"):
        separability(tiny_model, tiny_vec, [PAIRS[0], (LONG + " Be brief.", LONG)])
    with pytest.raises(InvalidArgumentError, match="prompt 0 has .* context of 256 tokens"):
        residual_norms(tiny_model, [LONG])


def test_perplexity_checks_the_context_and_one_response_per_prompt(tiny_models):
    model = tiny_models["bridge"]
    with pytest.raises(InvalidArgumentError, match="prompt 0 with its response has 300 tokens"):
        response_perplexity(model, [[1] * 200], [[5] * 100])
    with pytest.raises(InvalidArgumentError, match="got 2 prompts and 1 responses"):
        response_perplexity(model, [[1, 5], [1, 6]], [[7]])
    with pytest.raises(ArgumentTypeError, match="thresholds must be a QualityThresholds"):
        quality_frame(model, [[1, 5]], [[7]], ["x"], max_new_tokens=2, thresholds={"ngram": 2})


def _table(follows, degenerate=(False, False)):
    return pd.DataFrame(
        {
            "layer": [None, 1],
            "mode": [None, "add"],
            "strength": [None, 1.0],
            "coefficient": [None, 3.0],
            "follows_strict": list(follows),
            "degenerate": list(degenerate),
        }
    )


def test_select_on_missing_values_says_so_instead_of_an_index_error(tiny_vec):
    nan = float("nan")
    with pytest.raises(InvalidArgumentError, match="baseline rows hold no follows_strict"):
        select(_table([nan, nan]), tiny_vec)
    with pytest.raises(InvalidArgumentError, match="baseline rows hold no .* degenerate"):
        select(_table([True, True], [nan, nan]), tiny_vec)
    # A steered setting without a measured accuracy is never chosen.
    chosen = select(_table([False, nan]), tiny_vec)
    assert chosen.setting.layer is None
    assert chosen.evidence["eligible"].tolist() == [True, False]


def test_select_refuses_what_is_not_a_sweep_table(tiny_vec):
    with pytest.raises(ArgumentTypeError, match="results must be a sweep table"):
        select([{"layer": None}], tiny_vec)
    with pytest.raises(ArgumentTypeError, match="vector must be an InstructionVector or None"):
        select(_table([True, False]), "lowercase.safetensors")
    with pytest.raises(
        InvalidArgumentError, match="follows_strict column must hold True/False, got 'yes'"
    ):
        summarize(_table(["yes", "no"]))
    with pytest.raises(InvalidArgumentError, match="results has no rows"):
        summarize(_table([True, False]).iloc[:0])


def test_diagnostics_check_sizes_thresholds_and_shapes():
    diffs = torch.randn(8, 2, 4, generator=torch.Generator().manual_seed(0))
    assert stability_curve(diffs, sizes=np.array([1, 2]), n_draws=2).n_pairs.unique().tolist() == [
        1,
        2,
    ]
    with pytest.raises(InvalidArgumentError, match="sizes .* duplicates: 2 repeated"):
        stability_curve(diffs, sizes=[2, 2], n_draws=2)
    with pytest.raises(ArgumentTypeError, match="sizes must be a list"):
        stability_curve(diffs, sizes="12", n_draws=2)
    curve = stability_curve(diffs, n_draws=2)
    with pytest.raises(ArgumentTypeError, match="threshold must be a real number"):
        pairs_to_settle(curve, threshold="0.9")
    with pytest.raises(InvalidArgumentError, match="threshold must be a cosine"):
        pairs_to_settle(curve, threshold=1.5)
    with pytest.raises(ArgumentTypeError, match="curve must be a stability_curve table"):
        pairs_to_settle(diffs)
    # Our own check in normal use; jaxtyping's shape check when tests enable it.
    with pytest.raises((InvalidArgumentError, TypeError), match=r"acts_with"):
        separability_from_activations(torch.ones(2, 4), torch.ones(3, 2, 5), torch.ones(3, 2, 4))


def test_readers_refuse_non_bool_switches(tiny_models):
    model = tiny_models["bridge"]
    with pytest.raises(ArgumentTypeError, match="share_prefix must be True or False, got str 'no'"):
        read_residuals(model, [format_prompt(model, "hi")], share_prefix="no")
    with pytest.raises(ArgumentTypeError, match=r"layers\[\d\] must be an int, got float 1.0"):
        read_residuals(model, [format_prompt(model, "hi")], layers=[1.0])
    got = read_residuals(model, [format_prompt(model, "hi")], layers=np.array([2, 0]))
    want = read_residuals(model, [format_prompt(model, "hi")], layers=[2, 0])
    torch.testing.assert_close(got, want)


def test_every_refusal_here_is_a_workbench_error(tiny_models):
    model = tiny_models["bridge"]
    calls = [
        lambda: score("x", "keywords:existence", {"keywords": "ocean"}),
        lambda: make_pairs("lowercase", n=True),
        lambda: read_residuals(model, [format_prompt(model, LONG)]),
    ]
    for call in calls:
        with pytest.raises(WorkbenchError):
            call()


def test_a_pair_carries_a_str_id_and_a_mapping_of_kwargs():
    from workbench.vectors.pairs import as_pairs

    with pytest.raises(ArgumentTypeError, match="pair 0: kwargs must be a mapping"):
        as_pairs([Pair("a b", "a", "keywords:existence", "ocean")])
    with pytest.raises(ArgumentTypeError, match="pair 0: instruction_id must be a str or None"):
        as_pairs([Pair("a b", "a", 3)])


def test_an_empty_keyword_is_refused_not_found_in_every_text():
    with pytest.raises(InvalidArgumentError, match="must be non-empty words"):
        score("anything at all", "keywords:existence", {"keywords": [""]})
    with pytest.raises(InvalidArgumentError, match="must be non-empty words"):
        score("anything", "keywords:forbidden_words", {"forbidden_words": ["no", " "]})


@pytest.mark.parametrize("not_a_model", ["model", None, 3])
def test_a_non_model_in_the_model_slot_is_one_line(not_a_model, tiny_vec):
    from workbench import model_info

    with pytest.raises(ArgumentTypeError, match="model must be a TransformerLens model"):
        model_info(not_a_model)
    with pytest.raises(ArgumentTypeError, match="model must be a TransformerLens model"):
        format_prompt(not_a_model, "Hi")
    with pytest.raises(ArgumentTypeError, match="model must be a TransformerLens model"):
        compute_instruction_vector(not_a_model, PAIRS)
