"""Refilled batches and loop stop on tiny models: the tokens of static batches, exactly.

Refill hands a finished row's slot to the next prompt; loop stop ends a row whose
tail is one short cycle repeated. Neither may change a token that is kept.
"""

from __future__ import annotations

import pytest

from workbench import PerRow, Sampling, SteeringTerm, generate
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.model import kv
from workbench.steering.generation import iter_generate
from workbench.steering.loops import LoopStop

# Ten prompts of different lengths: on the tiny models rows end at 3 to 40 tokens.
PROMPTS = [
    "hello there",
    "a",
    "tell me a story about owls",
    "why?",
    "abc def ghi",
    "zz",
    "one two",
    "the quick brown fox jumps",
    "x",
    "yes no yes",
]
N_NEW = 40


def _run(model, **kwargs):
    kwargs.setdefault("max_new_tokens", N_NEW)
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("stop", "w")  # a frequent character: rows end at many lengths
    return generate(model, PROMPTS, return_tokens=True, **kwargs)


def _rows(vec):
    """One entry per prompt: none, shared-style terms, several terms, position windows."""
    return [
        None,
        SteeringTerm(vec, layer=1, mode="add", weight=6.0),
        [
            SteeringTerm(vec, layer=0, mode="add", weight=3.0),
            SteeringTerm(vec, layer=2, mode="project"),
        ],
        SteeringTerm(vec, layer=1, mode="add", weight=-5.0, positions="generated"),
        SteeringTerm(vec, layer=1, mode="add", weight=8.0, positions="prompt"),
        SteeringTerm(vec, layer=0, mode="ablate"),
        None,
        SteeringTerm(vec, layer=2, mode="project", target=-3.0),
        [],
        SteeringTerm(vec, layer=1, mode="add", weight=2.0),
    ]


@pytest.fixture
def appends(monkeypatch):
    """Counts the rows put into a running cache (refills)."""
    seen = {"rows": 0}
    real = kv.append_rows

    def counting(model, cache, new):
        holder, name, _ = kv._tensors(model, new)[0]
        seen["rows"] += getattr(holder, name).shape[0]
        return real(model, cache, new)

    monkeypatch.setattr(kv, "append_rows", counting)
    return seen


def test_refill_gives_the_tokens_and_texts_of_static_batches(tiny_model, tiny_vec, appends):
    static = _run(tiny_model, steering=PerRow(_rows(tiny_vec)))
    assert appends["rows"] == 0
    refilled = _run(tiny_model, steering=PerRow(_rows(tiny_vec)), refill=True)
    assert refilled.tokens == static.tokens
    assert refilled.texts == static.texts
    assert refilled.finish == static.finish
    # Rows ended at different lengths, so slots really were handed on: 7 of the 10 rows
    # came in after the first batch of 3.
    assert len({len(t) for t in static.tokens}) > 3
    assert appends["rows"] == len(PROMPTS) - 3


def test_per_row_terms_follow_their_prompts_into_refilled_slots(tiny_model, tiny_vec):
    rows = _rows(tiny_vec)
    refilled = _run(tiny_model, steering=PerRow(rows), refill=True, batch_size=2)
    alone = [
        generate(tiny_model, [p], steering=r, max_new_tokens=N_NEW, stop="w", return_tokens=True)
        for p, r in zip(PROMPTS, rows, strict=True)
    ]
    assert refilled.tokens == [a.tokens[0] for a in alone]


def test_shared_terms_and_no_steering_refill_to_the_same_tokens(tiny_model, tiny_vec):
    for steering in (None, SteeringTerm(tiny_vec, layer=1, mode="project")):
        assert _run(tiny_model, steering=steering, refill=True).tokens == (
            _run(tiny_model, steering=steering).tokens
        )


def test_refilled_samples_follow_each_prompts_own_seed(tiny_model):
    sampling = Sampling(temperature=1.2, seed=11)
    static = _run(tiny_model, sampling=sampling)
    assert _run(tiny_model, sampling=sampling, refill=True).tokens == static.tokens
    assert _run(tiny_model, sampling=sampling, refill=True, batch_size=7).tokens == static.tokens


def test_the_backends_refill_to_the_same_tokens(tiny_models, tiny_vecs):
    out = {
        b: _run(m, steering=PerRow(_rows(tiny_vecs[b])), refill=True).tokens
        for b, m in tiny_models.items()
    }
    assert out["bridge"] == out["hooked"]


def test_iter_generate_yields_each_prompt_once_as_it_ends(tiny_model):
    done = list(
        iter_generate(
            tiny_model, PROMPTS, max_new_tokens=N_NEW, stop="w", batch_size=3, refill=True
        )
    )
    assert sorted(c.index for c in done) == list(range(len(PROMPTS)))
    static = _run(tiny_model)
    for c in done:
        assert c.tokens == static.tokens[c.index] and c.finish == static.finish[c.index]
    # Short rows come back before the long ones they started with.
    assert [c.index for c in done] != sorted(c.index for c in done)


# A rule loose enough to fire on a random tiny model: any token said twice in a row.
TWICE = LoopStop(max_period=4, min_copies=2, min_tokens=2, min_letters=0)


@pytest.mark.parametrize("refill", [False, True])
def test_a_stopped_row_keeps_exactly_the_tokens_it_had(tiny_model, refill):
    kw = {"max_new_tokens": 60, "stop": [], "batch_size": 4}
    full = generate(tiny_model, PROMPTS, return_tokens=True, **kw)
    cut = generate(tiny_model, PROMPTS, return_tokens=True, loop_stop=TWICE, refill=refill, **kw)
    assert "loop" in cut.finish
    for whole, part, text, text_part, why in zip(
        full.tokens, cut.tokens, full.texts, cut.texts, cut.finish, strict=True
    ):
        assert whole[: len(part)] == part
        assert text.startswith(text_part)
        if why == "loop":
            assert len(part) < len(whole) or whole == part
            assert TWICE.find(part, tiny_model.tokenizer.decode) is not None
            # It stopped at the first token that closed the loop, unless that token
            # ended inside a character (the stop waits for the character to end).
            earlier = TWICE.find(part[:-1], tiny_model.tokenizer.decode)
            assert earlier is None or tiny_model.tokenizer.decode(part[:-1]).endswith("\ufffd")
        else:
            assert part == whole


def test_loop_stop_is_off_unless_asked():
    import inspect

    assert inspect.signature(generate).parameters["loop_stop"].default is None
    assert inspect.signature(generate).parameters["refill"].default is False


def _words(ids):
    return "".join(f"w{i}" for i in ids)  # every token decodes to letters


def _digits(ids):
    return "".join("0, " for _ in ids)


def test_the_rule_needs_enough_copies_of_a_short_cycle():
    rule = LoopStop()
    words = _words
    assert rule.find([1, 2, 3] + [5, 6] * 16, words) == 2
    assert rule.find([5, 6] * 15, words) is None  # 30 tokens: under min_tokens
    assert rule.find([7] * 32, words) == 1
    assert rule.find([7] * 31, words) is None
    assert rule.find(list(range(10)) * 8, words) == 10  # 8 copies of a 10-token cycle
    assert rule.find(list(range(10)) * 7, words) is None
    assert rule.find(list(range(40)) * 8, words) is None  # a cycle longer than max_period
    assert rule.copies_needed(1) == 32 and rule.copies_needed(16) == 8


def test_the_rule_ignores_cycles_without_letters():
    digits = _digits
    assert LoopStop().find([15, 11] * 40, digits) is None
    assert LoopStop(min_letters=0).find([15, 11] * 40, digits) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_period": 0}, "max_period"),
        ({"min_copies": 1}, "min_copies"),
        ({"min_tokens": True}, "min_tokens"),
        ({"min_letters": -1}, "min_letters"),
        ({"window_chars": 1}, "window_chars"),
        ({"max_window_ratio": 1.5}, r"max_window_ratio must be in \[0, 1\], got 1.5"),
        ({"max_window_ratio": float("nan")}, "max_window_ratio"),
        ({"max_window_ratio": "0.2"}, "max_window_ratio"),
    ],
)
def test_a_bad_rule_is_refused(kwargs, match):
    with pytest.raises((InvalidArgumentError, ArgumentTypeError), match=match):
        LoopStop(**kwargs)


def test_generate_refuses_what_is_not_a_rule_or_a_flag(tiny_model):
    with pytest.raises(ArgumentTypeError, match="loop_stop must be a LoopStop"):
        generate(tiny_model, ["hi"], loop_stop=8)
    with pytest.raises((InvalidArgumentError, ArgumentTypeError), match="refill"):
        generate(tiny_model, ["hi"], refill="yes")


def test_a_window_counts_once_whole_and_only_past_those_checked():
    rule = LoopStop(window_chars=64, max_window_ratio=0.5)
    loop = "ab" * 100
    assert rule.windows(loop) == (True, 5)  # 196 usable characters: windows at 0, 32, ..., 128
    assert rule.windows(loop, checked=5) == (False, 5)
    assert rule.windows("ab" * 33) == (False, 0)  # 62 usable characters: no whole window
    prose = "Owls hunt at night, and their soft feathers let them fly without a sound. " * 3
    assert rule.windows(prose[:200]) == (False, 5)


def test_a_refilled_sweep_guards_its_rows_unsteered_on_both_backends(tiny_model):
    """The guard's perplexity pass runs between rows; no steering hook may be on then."""
    from workbench import compute_instruction_vector, make_pairs, sweep

    lower = compute_instruction_vector(tiny_model, make_pairs("lowercase", n=4))

    kw = {"layers": [1, 2], "modes": ["add"], "strengths": [2.0], "max_new_tokens": 12}
    kw |= {"batch_size": 3, "progress": False}
    refilled = sweep(tiny_model, lower, PROMPTS[:5], **kw)
    static = sweep(tiny_model, lower, PROMPTS[:5], refill=False, loop_stop=None, **kw)
    assert refilled.response.tolist() == static.response.tolist()
    # Guarded in other groups of rows: equal up to float32 rounding of another padding.
    assert refilled.perplexity.tolist() == pytest.approx(static.perplexity.tolist(), rel=1e-5)
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())
