"""The bundled pair dataset and user-supplied pairs."""

from __future__ import annotations

import pytest

from workbench import Pair, as_pairs, base_queries, instruction, instruction_names, make_pairs
from workbench.pairs import SPLITS

IFEVAL_STYLE = (
    "change_case:",
    "punctuation:",
    "detectable_format:",
    "startend:",
    "language:",
    "length_constraints:",
    "length:",
    "keywords:",
)


def test_at_least_120_queries_in_disjoint_splits():
    queries = base_queries()
    assert len(queries) >= 120
    assert len({q.id for q in queries}) == len(queries)
    assert len({q.text for q in queries}) == len(queries)
    by_split = {s: {q.text for q in base_queries(s)} for s in SPLITS}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["validation"])
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["validation"] & by_split["test"])
    assert sum(len(v) for v in by_split.values()) == len(queries)


def test_every_category_is_in_every_split():
    categories = {q.category for q in base_queries()}
    assert len(categories) >= 8
    for split in SPLITS:
        assert {q.category for q in base_queries(split)} == categories


REQUIRED = {
    "lowercase": "change_case:english_lowercase",
    "capitals": "change_case:english_capital",
    "no_comma": "punctuation:no_comma",
    "json": "detectable_format:json_format",
    "title": "detectable_format:title",
    "bullets": "detectable_format:number_bullet_lists",
    "highlights": "detectable_format:number_highlighted_sections",
    "quotation": "startend:quotation",
    "end_phrase": "startend:end_checker",
    "start_word": "startend:start_word",
    "french": "language:response_language",
    "spanish": "language:response_language",
    "german": "language:response_language",
    "max_sentences": "length_constraints:number_sentences",
    "exact_sentences": "length_constraints:exact_sentences",
    "concise": "length:concise",
    "verbose": "length:verbose",
    "include_keyword": "keywords:existence",
    "exclude_keyword": "keywords:forbidden_words",
}


@pytest.mark.parametrize(("name", "instruction_id"), REQUIRED.items())
def test_required_instructions_carry_ifeval_ids(name, instruction_id):
    instr = instruction(name)
    assert instr.instruction_id == instruction_id
    assert len(instr.phrasings) >= 4
    assert not instr.placeholders, "defaults must fill every placeholder"
    assert instr.instruction_id.startswith(IFEVAL_STYLE)


def test_all_bundled_instructions_render_with_defaults():
    for name in instruction_names():
        assert not instruction(name).placeholders


def test_kwargs_are_filled_with_typed_values():
    assert instruction("bullets", num_bullets=4).kwargs == {"num_bullets": 4}
    assert instruction("french").kwargs == {"language": "fr"}
    assert instruction("max_sentences", num_sentences=2).kwargs == {
        "relation": "less than",
        "num_sentences": 3,
    }
    keyword = instruction("include_keyword", keyword="ocean")
    assert keyword.kwargs == {"keywords": ["ocean"]}
    assert all("ocean" in p for p in keyword.phrasings)
    banned = instruction("exclude_keyword", keyword="very")
    assert banned.kwargs == {"forbidden_words": ["very"]}


def test_render_rejects_unknown_placeholder_and_unknown_name():
    with pytest.raises(ValueError, match="colour"):
        instruction("bullets", colour="red")
    with pytest.raises(KeyError, match="'shouting'"):
        instruction("shouting")


def test_pairs_rotate_phrasings_and_keep_metadata():
    instr = instruction("lowercase")
    pairs = make_pairs(instr, split="train", n=2 * len(instr.phrasings))
    used = [p.with_instruction[len(p.without_instruction) + 1 :] for p in pairs]
    assert used == list(instr.phrasings) * 2
    assert all(p.instruction_id == "change_case:english_lowercase" for p in pairs)
    assert all(p.with_instruction.startswith(p.without_instruction) for p in pairs)
    assert {p.query_id for p in pairs} <= {q.id for q in base_queries("train")}


def test_pairs_from_user_queries_and_splits():
    pairs = make_pairs("concise", queries=["Tell me about owls.", "Describe rain."])
    assert [p.without_instruction for p in pairs] == ["Tell me about owls.", "Describe rain."]
    test_ids = {p.query_id for p in make_pairs("concise", split="test")}
    assert test_ids == {q.id for q in base_queries("test")}
    with pytest.raises(ValueError, match="split 'dev'"):
        make_pairs("concise", split="dev")
    with pytest.raises(ValueError, match="n must be at least 1"):
        make_pairs("concise", n=0)


def test_as_pairs_validates_user_input():
    assert as_pairs([("a b", "a")]) == [Pair("a b", "a")]
    with pytest.raises(ValueError, match="no pairs"):
        as_pairs([])
    with pytest.raises(ValueError, match="identical"):
        as_pairs([("same", "same")])
    with pytest.raises(ValueError, match="pair 1"):
        as_pairs([("a b", "a"), ("only one",)])
