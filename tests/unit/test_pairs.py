"""The bundled pair dataset and user-supplied pairs."""

from __future__ import annotations

import pytest

from workbench import Pair, base_queries, instruction, instruction_names, make_pairs
from workbench.errors import ArgumentTypeError, InvalidArgumentError, UnknownNameError
from workbench.vectors.pairs import (
    SPLITS,
    Placeholder,
    as_pairs,
    instruction_placeholders,
)

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


def test_render_rejects_unknown_placeholder_and_lists_the_valid_ones():
    with pytest.raises(InvalidArgumentError) as err:
        instruction("bullets", colour="red")
    assert str(err.value) == (
        "instruction 'bullets' has no placeholder 'colour'; it takes num_bullets "
        "(an int in [1..10])"
    )
    with pytest.raises(
        InvalidArgumentError, match="'lowercase' has no placeholder 'x'; it takes none"
    ):
        instruction("lowercase", x=1)


@pytest.mark.parametrize(
    ("name", "values", "shown"),
    [
        (
            "bullets",
            {"num_bullets": "four"},
            "num_bullets must be an int in [1..10], got str 'four'",
        ),
        ("bullets", {"num_bullets": "4"}, "got str '4'"),
        ("bullets", {"num_bullets": 4.0}, "got float 4.0"),
        ("bullets", {"num_bullets": True}, "got bool True"),
        ("bullets", {"num_bullets": -3}, "num_bullets must be an int in [1..10], got -3"),
        ("bullets", {"num_bullets": 11}, "got 11"),
        ("max_sentences", {"num_sentences": 0}, "num_sentences must be an int in [1..20], got 0"),
        ("highlights", {"num_highlights": 10**6}, "got 1000000"),
        ("include_keyword", {"keyword": ""}, "keyword must be one word of 1..30 letters"),
        ("include_keyword", {"keyword": "two words"}, "got 'two words'"),
        ("exclude_keyword", {"keyword": "a.*"}, "got 'a.*'"),
        ("exclude_keyword", {"keyword": 3}, "got int 3"),
        ("start_word", {"start_word": "Sure!"}, "got 'Sure!'"),
        ("end_phrase", {"end_phrase": 'Say "bye"'}, "without double quotes, got 'Say \"bye\"'"),
        ("end_phrase", {"end_phrase": "Bye.\nNow"}, "one line of 1..100 characters"),
        ("end_phrase", {"end_phrase": " Bye."}, "got ' Bye.'"),
        ("end_phrase", {"end_phrase": "x" * 101}, "one line of 1..100 characters"),
    ],
)
def test_render_checks_each_value_against_its_declared_type(name, values, shown):
    with pytest.raises(InvalidArgumentError) as err:
        instruction(name, **values)
    message = str(err.value)
    assert message.startswith(f"instruction {name!r}: placeholder {next(iter(values))} ")
    assert shown in message


def test_every_placeholder_is_declared_with_type_range_and_default():
    declared = {n: instruction_placeholders(n) for n in instruction_names()}
    assert {n: sorted(p) for n, p in declared.items() if p} == {
        "bullets": ["num_bullets"],
        "highlights": ["num_highlights"],
        "end_phrase": ["end_phrase"],
        "start_word": ["start_word"],
        "max_sentences": ["num_sentences"],
        "exact_sentences": ["num_sentences"],
        "include_keyword": ["keyword"],
        "exclude_keyword": ["keyword"],
    }
    for name, placeholders in declared.items():
        for p in placeholders.values():
            assert p.check(p.default) == p.default and p.description
            assert instruction(name, **{p.name: p.default}).values == {p.name: p.default}


def test_values_at_the_edges_of_a_range_are_accepted_and_parsed():
    assert instruction("bullets", num_bullets=10).kwargs == {"num_bullets": 10}
    assert instruction("include_keyword", keyword="well-being").kwargs == {
        "keywords": ["well-being"]
    }
    count = instruction_placeholders("max_sentences")["num_sentences"]
    assert count.parse(" 20 ") == 20 and count.parse("+1") == 1
    with pytest.raises(InvalidArgumentError, match="got '2.5'"):
        count.parse("2.5")
    assert instruction_placeholders("end_phrase")["end_phrase"].parse("Bye now.") == "Bye now."


def test_placeholder_declarations_are_checked():
    with pytest.raises(InvalidArgumentError, match="placeholder type 'float' is not one of"):
        Placeholder("x", "float", 1.0, 0, 1)
    with pytest.raises(
        InvalidArgumentError, match="placeholder x must be an int in \\[1..3\\], got 0"
    ):
        Placeholder("x", "int", 0, 1, 3)


def test_unknown_instruction_suggests_the_nearest_and_lists_all():
    with pytest.raises(UnknownNameError) as err:
        instruction("lowercas")
    message = str(err.value)
    assert message.startswith("unknown instruction 'lowercas'; did you mean one of ['lowercase'")
    assert message.endswith(f"Bundled: {sorted(instruction_names())}")
    with pytest.raises(ArgumentTypeError, match="instruction name must be a str, got int 3"):
        instruction(3)


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


def test_bad_split_and_count_are_named():
    with pytest.raises(
        InvalidArgumentError, match=r"split 'dev' is not one of \('train', 'validation', 'test'\)"
    ):
        make_pairs("concise", split="dev")
    with pytest.raises(InvalidArgumentError, match="split 'dev'"):
        base_queries("dev")
    with pytest.raises(InvalidArgumentError, match=r"n 0 is out of range \[1\.\.\]"):
        make_pairs("concise", n=0)
    with pytest.raises(ArgumentTypeError, match="n must be an int, got float 2.0"):
        make_pairs("concise", n=2.0)


def test_bad_user_queries_are_named():
    with pytest.raises(ArgumentTypeError, match="got str 'Describe rain.'; wrap one query"):
        make_pairs("concise", queries="Describe rain.")
    with pytest.raises(ArgumentTypeError, match="query 1 must be a str or BaseQuery, got bytes"):
        make_pairs("concise", queries=["Describe rain.", b"Tell me about owls."])
    with pytest.raises(InvalidArgumentError, match="queries is empty"):
        make_pairs("concise", queries=[])
    with pytest.raises(ArgumentTypeError, match="instr must be an Instruction"):
        make_pairs(None)


def test_as_pairs_validates_user_input():
    assert as_pairs([("a b", "a")]) == [Pair("a b", "a")]
    with pytest.raises(InvalidArgumentError, match="no pairs"):
        as_pairs([])
    with pytest.raises(InvalidArgumentError, match="pair 0 has identical"):
        as_pairs([("same", "same")])
    with pytest.raises(InvalidArgumentError, match=r"pair 1 .* got 1 item\(s\)"):
        as_pairs([("a b", "a"), ("only one",)])


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ("a b", "pairs must be a list .* got str 'a b'"),
        ([42], "pair 0 must be a Pair or a .* got int 42"),
        ([("a b", b"a")], "pair 0: the without-instruction side must be a str, got bytes b'a'"),
        ([Pair(None, "a")], "pair 0: the with-instruction side must be a str, got NoneType"),
    ],
)
def test_as_pairs_names_the_wrong_type(items, match):
    with pytest.raises(ArgumentTypeError, match=match):
        as_pairs(items)
