"""IFEval scoring, offline: every bundled instruction passes and fails where it should.

Every test runs with nltk's downloader replaced by one that raises, and with the
workbench cache in a fresh temporary directory, so the sentence-splitter data must
be written locally by the workbench itself.
"""

from __future__ import annotations

import random

import langdetect
import nltk
import pytest

from workbench import instruction, instruction_names
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    UnknownNameError,
    WorkbenchError,
)
from workbench.evaluation.scoring import score, score_frame
from workbench.files import temp_name
from workbench.vectors.ifeval import (
    CONCISE_MAX_WORDS,
    VERBOSE_MIN_WORDS,
    count_sentences,
    count_words,
    instruction_ids,
)

PUNKT_FILES = {"abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"}
SKY = "The sky is blue because air scatters short wavelengths of sunlight."
END = "Is there anything else I can help with?"

# Per bundled instruction name: (a response that follows it, one that does not).
CASES = {
    "lowercase": (SKY.lower(), SKY),
    "capitals": (SKY.upper(), SKY),
    "no_comma": ("Rain falls when droplets grow heavy.", "Rain falls, then it stops."),
    "json": ('{"answer": "blue", "reason": "scattering"}', "The answer is blue."),
    "title": ("<<Why the Sky Is Blue>>\n" + SKY, "Why the Sky Is Blue\n" + SKY),
    "bullets": ("* wind\n* rain\n* snow", "* wind\n* rain"),
    "highlights": ("Owls hunt *at night* and *in silence*.", "Owls hunt *at night*."),
    "quotation": ('"Owls hunt at night."', "Owls hunt at night."),
    "end_phrase": (f"Owls hunt at night. {END}", f"{END} Owls hunt at night."),
    "start_word": ("Certainly, owls hunt at night.", "Owls certainly hunt at night."),
    "french": ("Le ciel est bleu parce que l'air diffuse la lumière du soleil.", SKY),
    "spanish": ("El cielo es azul porque el aire dispersa la luz del sol.", SKY),
    "german": ("Der Himmel ist blau, weil die Luft das Sonnenlicht streut.", SKY),
    "max_sentences": ("Owls hunt at night. They see well.", "Owls hunt. They see. They fly."),
    "exact_sentences": ("Owls hunt. They see well. They fly.", "Owls hunt. They see well."),
    "one_sentence": ("Mr. Owl hunts at night.", "Owls hunt at night. They see well."),
    "concise": ("word " * CONCISE_MAX_WORDS, "word " * (CONCISE_MAX_WORDS + 1)),
    "verbose": ("word " * VERBOSE_MIN_WORDS, "word " * (VERBOSE_MIN_WORDS - 1)),
    "include_keyword": ("For example, owls hunt at night.", "Owls hunt at night."),
    "exclude_keyword": ("Owls hunt there at night.", "The owls hunt at night."),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list:
    """Downloads raise (and are recorded); the cache is fresh; nltk's path is restored."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise RuntimeError("a download was attempted")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(nltk.downloader, "download", refuse)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    saved_path = list(nltk.data.path)
    yield attempts
    nltk.data.path[:] = saved_path


def punkt_dir(tmp_path):
    return tmp_path / "cache" / "nltk_data" / "tokenizers" / "punkt_tab" / "english"


def test_every_bundled_instruction_has_a_case():
    assert set(CASES) == set(instruction_names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundled_instruction_passes_and_fails(name):
    spec = instruction(name)
    follows, breaks = CASES[name]
    assert score(follows, spec.instruction_id, spec.kwargs) is True
    assert score(breaks, spec.instruction_id, spec.kwargs) is False
    # Loose mode tries the response as is first, so it never fails what strict passes.
    assert score(follows, spec.instruction_id, spec.kwargs, loose=True) is True


@pytest.mark.parametrize(
    ("name", "response"),
    [
        ("lowercase", "Sure! here is my answer:\n" + SKY.lower()),  # first line
        ("json", 'Sure! here is my answer:\n{"answer": "blue"}'),  # first line
        ("end_phrase", f"Owls hunt at night. {END}\nHope this helps!"),  # last line
        ("quotation", '**"Owls hunt at night."**'),  # asterisks
        ("bullets", "Here you go:\n* wind\n* rain\n* snow\n* and more"),  # both lines
    ],
)
def test_loose_mode_forgives_a_preamble_a_signoff_and_asterisks(name, response):
    spec = instruction(name)
    assert score(response, spec.instruction_id, spec.kwargs) is False
    assert score(response, spec.instruction_id, spec.kwargs, loose=True) is True


@pytest.mark.parametrize("response", ["", "   \n ", "\n\n"])
@pytest.mark.parametrize("loose", [False, True])
@pytest.mark.parametrize(
    ("instruction_id", "kwargs"),
    [("punctuation:no_comma", None), ("language:response_language", {"language": "de"})],
)
def test_a_blank_response_follows_nothing(response, loose, instruction_id, kwargs):
    # IFEval's checkers pass a blank text here (it has no comma; langdetect cannot read
    # it, which counts as followed); IFEval's evaluation, and score, count it as failed.
    assert score(response, instruction_id, kwargs, loose=loose) is False


@pytest.mark.parametrize(
    "response",
    [
        "Certainly!",
        '"Certainly," she said.',
        "**Certainly** yes",
        "  \n_certainly_ yes",
        "CERTAINLY.",
    ],
)
def test_start_word_skips_quotes_emphasis_and_case(response):
    assert score(response, "startend:start_word", {"start_word": "Certainly"})


@pytest.mark.parametrize(
    "response", ["Certainly-not", "Certainlyy.", "I certainly will.", "# Certainly"]
)
def test_start_word_compares_the_whole_first_word(response):
    assert not score(response, "startend:start_word", {"start_word": "Certainly"})


def test_sentence_counter_works_offline_from_the_cache(offline, tmp_path):
    assert not (tmp_path / "cache").exists()  # importing wrote nothing
    assert count_sentences("Hello there. Mr. Smith went home. Bye.") == 3
    assert {p.name for p in punkt_dir(tmp_path).iterdir()} == PUNKT_FILES
    assert str(tmp_path / "cache" / "nltk_data") in nltk.data.path
    assert offline == []


def test_punkt_data_is_written_once(tmp_path):
    score("One. Two.", "length_constraints:exact_sentences", {"num_sentences": 2})
    mtimes = {p.name: p.stat().st_mtime_ns for p in punkt_dir(tmp_path).iterdir()}
    assert score("One. Two.", "length_constraints:exact_sentences", {"num_sentences": 2})
    assert count_sentences("One. Two. Three.") == 3
    assert {p.name: p.stat().st_mtime_ns for p in punkt_dir(tmp_path).iterdir()} == mtimes


def test_a_dead_writers_temporary_is_cleaned_up(tmp_path):
    # A writer that died mid-write left its temporary directory behind (pid 2**22 + 1 is
    # above Linux's pid limit, so no live process owns it).
    stale = temp_name(punkt_dir(tmp_path))
    pid = stale.name.rsplit(".tmp-", 1)[1].split("-")[1]
    stale = stale.with_name(stale.name.replace(f"-{pid}-", f"-{2**22 + 1}-"))
    stale.mkdir(parents=True)
    assert count_sentences("One. Two.") == 2
    assert not stale.exists()
    assert [p.name for p in punkt_dir(tmp_path).parent.iterdir()] == ["english"]


def test_language_verdicts_are_deterministic(monkeypatch):
    # Unseeded, langdetect reads "bien" as Latvian or German at random (about 2 : 1).
    monkeypatch.setattr(langdetect.DetectorFactory, "seed", None)
    verdicts = {score("bien", "language:response_language", {"language": "de"}) for _ in range(20)}
    assert len(verdicts) == 1


def test_building_a_checker_leaves_the_callers_random_state_alone():
    random.seed(1234)
    before = random.getstate()
    score(
        "Owls hunt.", "length_constraints:number_words", {"num_words": 3, "relation": "less than"}
    )
    assert random.getstate() == before


def test_a_cached_checker_does_not_see_later_changes_to_the_callers_kwargs():
    keywords = ["example"]
    assert score("For example, owls.", "keywords:existence", {"keywords": keywords})
    keywords[0] = "zebra"
    assert score("For example, owls.", "keywords:existence", {"keywords": ["example"]})
    assert not score("For example, owls.", "keywords:existence", {"keywords": keywords})


def test_none_and_empty_kwargs_are_dropped_as_in_ifevals_data():
    kwargs = {"num_bullets": 2, "keywords": None, "end_phrase": "", "forbidden_words": []}
    assert score("* a\n* b", "detectable_format:number_bullet_lists", kwargs)


def test_every_ifeval_and_workbench_id_is_known():
    assert len(instruction_ids()) == 25 + 4
    assert {"startend:start_word", "length:concise", "length:verbose"} <= set(instruction_ids())
    assert {"length_constraints:exact_sentences", "punctuation:no_comma"} <= set(instruction_ids())


def test_count_words_counts_word_character_runs():
    assert count_words("Don't panic: it's 42.") == 6
    assert count_words("") == 0


def test_unknown_id_names_the_nearest():
    with pytest.raises(UnknownNameError, match="nearest.*'length_constraints:number_sentences'"):
        score("x", "length_constraints:number_sentence")


def test_unknown_kwargs_name_the_id_the_bad_keys_and_the_valid_keys():
    with pytest.raises(InvalidArgumentError) as info:
        score("* a", "detectable_format:number_bullet_lists", {"num_bulets": 3})
    message = str(info.value)
    assert "'detectable_format:number_bullet_lists'" in message
    assert "['num_bulets']" in message and "takes ['num_bullets']" in message


def test_missing_kwargs_are_refused_not_drawn_at_random():
    with pytest.raises(InvalidArgumentError, match=r"needs kwargs \['relation'\]"):
        score("x", "length_constraints:number_sentences", {"num_sentences": 2})


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "pattern"),
    [
        (
            "length_constraints:number_sentences",
            {"num_sentences": -1, "relation": "less than"},
            "random",
        ),
        (
            "keywords:letter_frequency",
            {"letter": "ab", "let_frequency": 2, "let_relation": "at least"},
            "random",
        ),
        ("length_constraints:number_words", {"num_words": 3, "relation": "more"}, "relation"),
        ("language:response_language", {"language": "xx"}, "'de'"),
        ("length_constraints:exact_sentences", {"num_sentences": 0}, "out of range"),
        ("startend:start_word", {"start_word": "I think"}, "one word"),
    ],
)
def test_kwargs_values_the_checker_cannot_use_are_refused(instruction_id, kwargs, pattern):
    with pytest.raises(InvalidArgumentError, match=pattern) as info:
        score("x", instruction_id, kwargs)
    assert instruction_id in str(info.value)


@pytest.mark.parametrize("response", [b"bytes", None, ["a list"]])
def test_a_response_that_is_not_a_str_is_refused(response):
    with pytest.raises(ArgumentTypeError, match="response must be a str"):
        score(response, "punctuation:no_comma")


def test_repeat_prompt_needs_the_prompt():
    with pytest.raises(InvalidArgumentError, match="prompt="):
        score("Tell me about owls. Owls hunt.", "combination:repeat_prompt")
    response = "Tell me about owls. Owls hunt at night."
    assert score(response, "combination:repeat_prompt", prompt="Tell me about owls.")
    assert not score(response, "combination:repeat_prompt", prompt="Tell me about bats.")


def test_score_frame_matches_score_row_by_row():
    rows = [
        {
            "response": "Sure! here is my answer:\nall lowercase",
            "instruction_id": "change_case:english_lowercase",
        },
        {
            "response": "* a\n* b",
            "instruction_id": "detectable_format:number_bullet_lists",
            "kwargs": {"num_bullets": 3},
        },
        {
            "response": "Tell me. Fine.",
            "instruction_id": "combination:repeat_prompt",
            "prompt": "Tell me.",
        },
        {"response": "word " * 130, "instruction_id": "length:verbose", "kwargs": None},
    ]
    frame = score_frame(rows)
    assert list(frame.columns) == [
        "instruction_id",
        "follows_strict",
        "follows_loose",
        "response_words",
    ]
    assert list(frame["instruction_id"]) == [row["instruction_id"] for row in rows]
    for row, out in zip(rows, frame.itertuples(), strict=True):
        args = (row["response"], row["instruction_id"], row.get("kwargs"))
        assert out.follows_strict == score(*args, prompt=row.get("prompt"))
        assert out.follows_loose == score(*args, loose=True, prompt=row.get("prompt"))
        assert out.response_words == count_words(row["response"])
    assert list(frame["follows_strict"]) == [False, False, True, True]
    assert list(frame["follows_loose"]) == [True, False, True, True]


def test_score_frame_names_the_bad_row():
    rows = [{"response": "ok", "instruction_id": "length:concise"}, {"response": "ok"}]
    with pytest.raises(InvalidArgumentError, match=r"row 1 lacks \['instruction_id'\]"):
        score_frame(rows)
    with pytest.raises(UnknownNameError, match="row 0: unknown instruction id 'nope'"):
        score_frame([{"response": "ok", "instruction_id": "nope"}])


def test_every_error_is_a_workbench_error():
    for bad in [("x", "nope"), (1, "length:concise"), ("x", "length:concise", {"a": 1})]:
        with pytest.raises(WorkbenchError):
            score(*bad)
