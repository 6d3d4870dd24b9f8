"""Reading one's own IFEval-format test rows (`workbench.evaluation.ifeval_rows`)."""

from __future__ import annotations

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.evaluation.ifeval_rows import bundled_for, read_ifeval_rows

LOWER = {
    "key": 1,
    "prompt": "Describe rain. Answer in lowercase.",
    "prompt_without_instruction": "Describe rain.",
    "instruction_id_list": ["change_case:english_lowercase"],
    "kwargs": [{}],
}
TWO = {
    "key": 2,
    "prompt": "Name three fruits in French, with no commas.",
    "instruction_id_list": ["language:response_language", "punctuation:no_comma"],
    # The Hugging Face copy of IFEval lists every key, unused ones as null.
    "kwargs": [{"language": "fr", "num_bullets": None}, {"language": None}],
}
POSTSCRIPT = {
    "prompt": "Write a note. End with P.S.",
    "instruction_id_list": ["detectable_content:postscript"],
    "kwargs": [{"postscript_marker": "P.S."}],
}


def write(tmp_path, *rows, raw: str = ""):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + raw)
    return path


def test_rows_are_grouped_by_the_bundled_instruction_that_steers_each_id(tmp_path):
    read = read_ifeval_rows(write(tmp_path, LOWER, TWO, LOWER))
    assert {name: [i.line for i in items] for name, items in read.groups.items()} == {
        "lowercase": [1, 3],
        "french": [2],
        "no_comma": [2],
    }
    (french,) = read.groups["french"]
    assert french.kwargs == {"language": "fr"}  # nulls dropped
    assert french.prompt_without_instruction is None and french.key == 2
    assert read.groups["lowercase"][0].prompt_without_instruction == "Describe rain."
    assert read.skipped == {}


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "name"),
    [
        ("language:response_language", {"language": "es"}, "spanish"),
        ("language:response_language", {"language": "ja"}, None),
        (
            "length_constraints:number_sentences",
            {"relation": "less than", "num_sentences": 2},
            "one_sentence",
        ),
        (
            "length_constraints:number_sentences",
            {"relation": "less than", "num_sentences": 6},
            "max_sentences",
        ),
        ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 6}, None),
        ("detectable_format:number_bullet_lists", {"num_bullets": 7}, "bullets"),
        ("keywords:existence", {"keywords": ["ocean", "sky"]}, "include_keyword"),
    ],
)
def test_an_id_maps_to_the_bundled_instruction_whose_fixed_kwargs_agree(
    instruction_id, kwargs, name
):
    assert bundled_for(instruction_id, kwargs) == name


def test_unsupported_ids_are_refused_by_name_or_skipped_and_listed(tmp_path):
    path = write(tmp_path, LOWER, POSTSCRIPT, POSTSCRIPT)
    with pytest.raises(
        WorkbenchError, match=r"\['detectable_content:postscript'\].*skip_unsupported"
    ):
        read_ifeval_rows(path)
    read = read_ifeval_rows(path, skip_unsupported=True)
    assert read.skipped == {"detectable_content:postscript": 2}
    assert list(read.groups) == ["lowercase"]
    with pytest.raises(WorkbenchError, match="holds no row a bundled vector steers"):
        read_ifeval_rows(write(tmp_path, POSTSCRIPT), skip_unsupported=True)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("{not json\n", "line 2: not valid JSON"),
        ('["a list"]\n', "line 2: a row must be a JSON object"),
        (json.dumps({**LOWER, "prompt": 3}) + "\n", "line 2: 'prompt' must be a str, got int 3"),
        (
            json.dumps({k: v for k, v in LOWER.items() if k != "kwargs"}) + "\n",
            "line 2: missing 'kwargs'",
        ),
        (json.dumps({**LOWER, "kwargs": []}) + "\n", "1 instruction ids but 0 kwargs objects"),
        (json.dumps({**LOWER, "instruction_id_list": []}) + "\n", "'instruction_id_list' is empty"),
        (
            json.dumps({**LOWER, "instruction_id_list": ["change_case:lowercase"]}) + "\n",
            "line 2: ",
        ),
        (
            json.dumps(
                {
                    **LOWER,
                    "instruction_id_list": ["detectable_format:number_bullet_lists"],
                    "kwargs": [{"num_bullets": "three"}],
                }
            )
            + "\n",
            "line 2: ",
        ),
        (json.dumps({**LOWER, "prompt_without_instruction": 1}) + "\n", "must be a str, got 1"),
    ],
)
def test_a_malformed_line_is_refused_in_one_line_naming_its_number(tmp_path, raw, shown):
    path = write(tmp_path, LOWER, raw=raw)
    with pytest.raises(WorkbenchError) as error:
        read_ifeval_rows(path)
    message = str(error.value)
    assert shown in message and str(path) in message and "\n" not in message


def test_a_missing_or_unreadable_file_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="cannot read test file"):
        read_ifeval_rows(tmp_path / "absent.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b"\xff\xfe\n")
    with pytest.raises(WorkbenchError, match="cannot read test file"):
        read_ifeval_rows(tmp_path / "latin1.jsonl")
    with pytest.raises(WorkbenchError, match="skip_unsupported must be True or False"):
        read_ifeval_rows(write(tmp_path, LOWER), skip_unsupported="yes")
