"""Loop stop and refill on the embedded model: fewer tokens decoded, no verdict changed.

A sweep now decodes in refilled batches and ends looping answers early (the
defaults of `sweep`, so of the evaluation protocol). Against the static path it
replaced, every answer it did not stop is the same text, every stopped one a prefix
of the old answer, and every row's degenerate flag and clean verdicts are the same.
The loop rule is also run over the guard's labelled set, where it must never stop an
answer read as sound.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench import base_queries, compute_instruction_vector, make_pairs, sweep
from workbench.steering.loops import LoopStop, LoopWatch

LABELS = Path(__file__).resolve().parents[1] / "data" / "degenerate_labels.jsonl"

# Legitimate repetition the rule must let through, whatever its length.
REPETITIVE_BUT_SOUND = {
    "markdown list": "".join(
        f"- Step {i}: add the {w} and stir.\n"
        for i, w in enumerate(
            "flour sugar eggs milk butter salt yeast water oil honey rice oats nuts figs "
            "plums pears lemon lime mint basil".split()
        )
    ),
    "table": "| name | kind |\n|---|---|\n" + "".join(f"| item {i} | tool |\n" for i in range(30)),
    "code": "".join(f"    self.field_{i} = field_{i}\n" for i in range(30)),
    "refrain": "".join(
        f"{verse}\nSing it loud, sing it clear,\nthe summer road is nearly here.\n\n"
        for verse in [
            "We packed the car before the dawn and drove until the hills were gone.",
            "The radio played an old refrain, we sang along through wind and rain.",
            "At night we slept beneath the stars and counted all the passing cars.",
            "And when at last the sea came near, we shouted so the world could hear.",
        ]
    ),
    "zeros": "x = [" + ", ".join(["0"] * 120) + "]\n",
}


def _first_stop(tokens: list[int], decode) -> int | None:
    watch = LoopWatch(LoopStop())
    watch.extend(1)
    for k in range(1, len(tokens) + 1):
        if watch.looped(0, tokens[:k], decode):
            return k
    return None


def test_the_loop_rule_stops_no_sound_answer_of_the_labelled_set(smol):
    tok = smol.tokenizer

    def decode(ids):
        return tok.decode(ids, skip_special_tokens=True)

    rows = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]
    stops = {
        r["id"]: _first_stop(tok(r["response"], add_special_tokens=False)["input_ids"], decode)
        for r in rows
    }
    sound = [r["id"] for r in rows if not r["degenerate"]]
    broken = [r["id"] for r in rows if r["degenerate"]]
    false_stops = [i for i in sound if stops[i] is not None]
    caught = [i for i in broken if stops[i] is not None]
    print(
        f"labelled set: {len(false_stops)} of {len(sound)} sound answers stopped, "
        f"{len(caught)} of {len(broken)} degenerate ones"
    )
    assert false_stops == []
    # The rule does catch loops: the labelled set's answers are 64-128 tokens long, so
    # only the tightest loops close within them.
    assert len(caught) >= 10
    for name, text in REPETITIVE_BUT_SOUND.items():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert _first_stop(ids, decode) is None, name


@pytest.fixture(scope="module")
def no_comma(smol):
    return compute_instruction_vector(smol, make_pairs("no_comma", n=32), layers=[14])


def test_a_sweep_stops_loops_and_refills_without_changing_a_verdict(smol, no_comma):
    prompts = [q.text for q in base_queries("validation")[:8]]
    # Unsteered and a project strength that loops on most prompts (measured: 3 of 8
    # rows stopped at 160 tokens, 24 of 64 at 512 across ×0.25-×2).
    kw = {
        "layers": [14],
        "modes": ["project"],
        "strengths": [2.0],
        "max_new_tokens": 160,
        "batch_size": 4,
        "progress": False,
    }
    static = sweep(smol, no_comma, prompts, refill=False, loop_stop=None, **kw)
    new = sweep(smol, no_comma, prompts, **kw)
    assert not static.stopped_loop.any()
    stopped = new.stopped_loop.to_numpy(dtype=bool)
    assert stopped.any()
    assert new.degenerate[stopped].all()
    assert (new.n_tokens[stopped] <= kw["max_new_tokens"]).all()
    assert new.n_tokens.sum() < static.n_tokens.sum()
    for old, ours, cut in zip(static.response, new.response, stopped, strict=True):
        assert old.startswith(ours) if cut else old == ours
    for column in ("degenerate", "follows_strict", "follows_loose"):
        clean = ~new.degenerate if column != "degenerate" else True
        clean_static = ~static.degenerate if column != "degenerate" else True
        assert (new[column] & clean).tolist() == (static[column] & clean_static).tolist(), column
