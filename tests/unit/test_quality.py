"""The quality guard: near-empty, looping, cycling and symbol answers; the recorded
repetition, perplexity and cut outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from workbench.errors import InvalidArgumentError
from workbench.evaluation.quality import (
    QUALITY_COLUMNS,
    QualityThresholds,
    compression_ratio,
    duplicate_line_share,
    letter_share,
    quality_frame,
    repeated_ngram_share,
    response_perplexity,
)

PROMPT = [1, 40, 41, 42]
RESPONSE = [50, 51, 52, 53]
LABELS = Path(__file__).resolve().parents[1] / "data" / "degenerate_labels.jsonl"
LONG_PROSE = (
    "Rivers shape the land they cross. Over thousands of years, water wears down rock, "
    "carries sand and silt downstream, and lays it out again where the current slows. "
    "Farmers settled on these plains because the soil was rich, and towns grew at fords "
    "and bridges where roads met the water. Floods brought both ruin and fertile ground, "
    "so people learned to build levees, dig canals and read the seasons. Today engineers "
    "measure flow with sensors, ecologists track fish that migrate upstream to spawn, and "
    "planners weigh the needs of cities against those of wetlands, which filter pollution "
    "and shelter birds. A river is a system: rain, groundwater, sediment, plants and people "
    "all change one another, and a dam or a drought in one place is felt far away."
)


def test_repeated_ngram_share_counts_repeats_of_earlier_ngrams():
    assert repeated_ngram_share(list(range(20))) == 0.0
    assert repeated_ngram_share([5] * 20, n=4) == pytest.approx(16 / 17)
    # "a b c d a b c d": of 5 four-grams, the last one repeats the first.
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repeated_ngram_share([1, 2]) == 0.0


def test_perplexity_is_the_exponent_of_the_mean_response_nll(tiny_model):
    ids = torch.tensor([PROMPT + RESPONSE], device=tiny_model.cfg.device)
    with torch.inference_mode():
        logp = tiny_model(ids).log_softmax(-1)[0]
    targets = ids[0, len(PROMPT) :]
    nll = -logp[len(PROMPT) - 1 : -1].gather(-1, targets[:, None]).mean()
    (ppl,) = response_perplexity(tiny_model, [PROMPT], [RESPONSE])
    assert ppl == pytest.approx(float(nll.exp()), rel=1e-4)


def test_perplexity_does_not_depend_on_the_batch(tiny_model):
    prompts = [PROMPT, [1, 60], [1, 61, 62, 63, 64, 65, 66]]
    responses = [RESPONSE, [70, 71, 72], [80]]
    batched = response_perplexity(tiny_model, prompts, responses, batch_size=3)
    alone = [
        response_perplexity(tiny_model, [p], [r])[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    assert batched == pytest.approx(alone, rel=1e-4)
    assert math.isnan(response_perplexity(tiny_model, [PROMPT], [[]])[0])


def test_degenerate_means_empty_looping_cycling_or_salad(tiny_model):
    eos = tiny_model.tokenizer.eos_token_id
    texts = [
        "A fine answer that says what it means and stops there.",
        "search " * 40,
        " ",
        "The A A A A A A A B H L X A X X X",
        "- bread\n- milk\n- bread\n- milk\n- bread",
        "* 2 # 7 = ; 9 & % 4 ! 8 ) ( + 1 6 - 3 ^ 5 @ 0 | ~ > < ? / [ ] { } $ 2 9 4 7 * # & 1",
    ]
    responses = [RESPONSE, [7, 8] * 6, [], [50, eos], RESPONSE, RESPONSE]
    table = quality_frame(tiny_model, [PROMPT] * 6, responses, texts, max_new_tokens=4)
    assert list(table.columns) == list(QUALITY_COLUMNS)
    assert table.degenerate.tolist() == [False, True, True, True, True, True]
    # Short numeric answers and pretty-printed JSON are not symbol salad or cycling lines.
    for right in [
        "1990.",
        "2 + 2 = 4",
        '{"x": 1, "y": 2}',
        '{\n "a": {\n  "b": 1\n },\n "c": {\n  "d": 2\n }\n}',
    ]:
        assert not QualityThresholds().flags(right)["degenerate"], right
    # One word can be a right answer ("Suggest a name."); fewer than min_words is not.
    assert not QualityThresholds().flags("Eco-Savvy")["degenerate"]
    assert QualityThresholds(min_words=3).flags("Eco-Savvy")["degenerate"]
    assert table["empty"].tolist() == [False, False, True, False, False, False]
    # Cut at the limit: four tokens without an end-of-sequence token.
    assert table.truncated.tolist() == [True, True, False, False, True, True]
    # Each cut alone decides: loosened, the same texts pass.
    loose = QualityThresholds(
        min_words=0,
        min_compression_ratio=0,
        max_duplicate_line_share=1,
        min_letter_share=0,
        max_single_character_share=1,
        max_unit_copies=10**6,
        max_unknown_word_share=1,
    )
    table = quality_frame(
        tiny_model, [PROMPT] * 6, responses, texts, max_new_tokens=4, thresholds=loose
    )
    assert not table.degenerate.any()


def test_a_short_loop_after_a_normal_start_is_degenerate_and_a_repeated_phrase_is_not():
    guard = QualityThresholds()
    # The demo's steered answer once: one sentence, then a URL that loops. Its 512-
    # character windows still compress like prose, so only the copies count sees it.
    url = (
        "Forests are full of tall trees, soft moss and the calls of birds, and you can "
        "read more at https://www.example.com/search/" + "search/" * 7
    )
    assert guard.flags(url)["compression_ratio"] > guard.min_compression_ratio
    assert guard.flags(url)["unit_copies"] == 8
    assert guard.flags(url)["degenerate"]
    assert QualityThresholds(max_unit_copies=8).flags(url)["degenerate"] is False
    for right in [
        # A refrain said twice, a stutter, a list of numbers: under six copies.
        "Row, row, row your boat, gently down the stream.",
        "It is very, very, very good, and I mean it.",
        "Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
        # Repeated punctuation or digits have under two letters per unit.
        "Wait for it............ and then the answer comes, at last, to all of us.",
    ]:
        assert guard.flags(right)["unit_copies"] <= 5, right
        assert not guard.flags(right)["degenerate"], right


def test_word_salad_is_degenerate_and_foreign_languages_names_and_code_are_not():
    guard = QualityThresholds()
    # Invented words, no loop and ordinary letters: the example, once missed.
    salad = "Hindi A Adindi, FULL INLINING A LINULLING A FORTULLING"
    assert guard.flags(salad)["unknown_word_share"] > 0.5
    assert guard.flags(salad)["degenerate"]
    for right in [
        "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
        "El perro corre por el parque todas las mañanas con su dueño.",
        "Der Hund läuft jeden Morgen mit seinem Besitzer durch den Park.",
        # Identifiers are not words: code is not read.
        "```python\ndef fibsq(nmax):\n    return [k * k for k in range(nmax)]\n```\n"
        "This returns the squares.",
        "Use `np.zeros_like` and `torch.einsum` here.",
        # A suggested name or two is under the five words the cut needs.
        "Zentrix Lumora",
    ]:
        assert not guard.flags(right)["degenerate"], right
    # The cut alone decides: without it the salad passes.
    assert not QualityThresholds(max_unknown_word_share=1).flags(salad)["degenerate"]
    assert not QualityThresholds(unknown_word_min_words=7).flags(salad)["degenerate"]


def test_the_compression_ratio_is_read_over_windows():
    prose = LONG_PROSE
    # A long normal answer is judged by its worst window, not as one long text.
    assert compression_ratio(prose) > 0.42
    # A loop after normal text is seen in its window, however late it starts.
    assert compression_ratio(prose + "and again " * 60) < 0.2
    assert compression_ratio("") == 1.0
    assert duplicate_line_share("1. a\n2. b\n3. a") == pytest.approx(1 / 3)
    assert letter_share("ab12") == 0.5


def test_the_guard_meets_its_stated_precision_and_recall_on_the_labelled_set():
    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 150
    flags = [bool(QualityThresholds().flags(r["response"])["degenerate"]) for r in rows]
    labels = [bool(r["degenerate"]) for r in rows]
    hits = sum(f and y for f, y in zip(flags, labels, strict=True))
    # The figures in docs/evaluation.md: precision 98/101, recall 98/108 (cuts fitted on halves of it).
    assert hits / sum(flags) >= 0.9
    assert hits / sum(labels) >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ngram": 0}, "ngram 0 is out of range"),
        ({"unknown_word_min_words": 0}, "unknown_word_min_words 0 is out of range"),
        ({"max_unknown_word_share": 2}, r"max_unknown_word_share must be in \[0, 1\]"),
        ({"min_compression_ratio": 1.5}, r"min_compression_ratio must be in \[0, 1\]"),
        ({"max_duplicate_line_share": -0.1}, r"max_duplicate_line_share must be in \[0, 1\]"),
        ({"window_chars": 4}, "window_chars 4 is out of range"),
        ({"min_words": -1}, "min_words -1 is out of range"),
    ],
)
def test_thresholds_are_checked(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        QualityThresholds(**kwargs)


def test_one_record_per_response_or_a_clear_error(tiny_model):
    with pytest.raises(InvalidArgumentError, match="one per response"):
        quality_frame(tiny_model, [PROMPT], [RESPONSE, RESPONSE], ["a"], max_new_tokens=4)


def test_a_row_stopped_for_a_loop_is_marked_and_counted_degenerate(tiny_model):
    text = "A short, plain and normal answer here."
    kw = {"max_new_tokens": 4}
    table = quality_frame(
        tiny_model,
        [PROMPT, PROMPT],
        [RESPONSE, RESPONSE],
        [text, text],
        finish=["loop", "eos"],
        **kw,
    )
    assert table.stopped_loop.tolist() == [True, False]
    assert table.degenerate.tolist() == [True, False]
    unmarked = quality_frame(tiny_model, [PROMPT], [RESPONSE], [text], **kw)
    assert not unmarked.stopped_loop[0] and not unmarked.degenerate[0]
    with pytest.raises(InvalidArgumentError, match="one reason per response"):
        quality_frame(tiny_model, [PROMPT], [RESPONSE], [text], finish=["loop", "eos"], **kw)
    with pytest.raises(InvalidArgumentError, match="one reason per response"):
        quality_frame(tiny_model, [PROMPT], [RESPONSE], [text], finish="loop", **kw)
