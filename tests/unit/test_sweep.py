"""Sweeps on a tiny model: the table, per-row batching, resuming after a crash, shards."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import workbench.evaluation.sweep_units as sweep_units
from tests.tables import assert_same_sweep
from workbench import compute_instruction_vector, generate, make_pairs
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SweepFileError,
    VectorMismatchError,
)
from workbench.evaluation.scoring import score
from workbench.evaluation.sweep_files import (
    COLUMNS,
    SWEEP_FORMAT,
    SWEEP_VERSION,
    merge_sweeps,
    vector_id,
)
from workbench.evaluation.sweeps import SweepPrompt, sweep
from workbench.model.info import model_info
from workbench.steering.settings import Setting

PROMPTS = ["hello there", "tell me about owls", "why?"]
GRID = {"layers": [1, 2], "modes": ["add", "project"], "strengths": [0.5, 1.0]}
KW = {**GRID, "max_new_tokens": 4, "progress": False}


@pytest.fixture(scope="module")
def lower(tiny_models):
    return compute_instruction_vector(tiny_models["bridge"], make_pairs("lowercase", n=4))


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["bridge"]


@pytest.fixture(scope="module")
def full(model, lower):
    return sweep(model, lower, PROMPTS, **KW)


# What each sweep-file column holds: a JSON value of these types (bool is not an int).
COLUMN_TYPES = {
    "unit": (int,),
    "prompt_index": (int,),
    "prompt": (str,),
    "instruction_id": (str,),
    "kwargs": (dict,),
    "layer": (int, type(None)),
    "mode": (str, type(None)),
    "strength": (float, type(None)),
    "coefficient": (float, type(None)),
    "gate_on": (bool, type(None)),  # null where nothing is gated
    "response": (str,),
    "follows_strict": (bool,),
    "follows_loose": (bool,),
    "degenerate": (bool,),
    "n_tokens": (int,),
    "empty": (bool,),
    "truncated": (bool,),
    "repeated_ngram_share": (float,),
    "perplexity": (float, type(None)),  # null where there is no token to score
    "n_words": (int,),
    "compression_ratio": (float,),
    "duplicate_line_share": (float,),
    "letter_share": (float,),
    "single_character_share": (float,),
    "unit_copies": (int,),
    "stopped_loop": (bool,),
    "unknown_word_share": (float,),
    "seconds": (float,),
}


def _check_sweep_file(path, full, model, vector, shard=None):
    """Each line of the sweep file at `path` against the header's schema, and its rows
    against the run's settings grid and prompts and the table `full` of the same run."""
    header, *lines = (json.loads(line) for line in path.read_text().splitlines())
    assert set(header) == {"format", "version", "config", "shard"}, header
    assert (header["format"], header["version"]) == (SWEEP_FORMAT, SWEEP_VERSION)
    assert header["shard"] == (None if shard is None else list(shard))
    config = header["config"]
    assert config["model"] == model_info(model).name
    assert config["vector_id"] == vector_id(vector)
    assert config["max_new_tokens"] == KW["max_new_tokens"]
    assert config["prompts"] == [[p, "change_case:english_lowercase", {}] for p in PROMPTS]
    grid = [[None, None, None]] + [
        [layer, mode, strength]
        for layer in GRID["layers"]
        for mode in GRID["modes"]
        for strength in GRID["strengths"]
    ]
    assert config["grid"] == grid
    units = [row["unit"] for row in lines]
    expected = range(len(grid) * len(PROMPTS))
    assert sorted(units) == [u for u in expected if shard is None or u % shard[1] == shard[0]]
    by_unit = full.set_index("unit")
    assert set(COLUMN_TYPES) == set(COLUMNS)
    for row in lines:
        assert set(row) == set(COLUMNS), sorted(set(row) ^ set(COLUMNS))
        wrong = {k: v for k, v in row.items() if type(v) not in COLUMN_TYPES[k]}
        assert wrong == {}, (row["unit"], wrong)
        unit = row["unit"]
        assert row["prompt_index"] == unit % len(PROMPTS)
        assert row["prompt"] == PROMPTS[row["prompt_index"]]
        assert [row["layer"], row["mode"], row["strength"]] == grid[unit // len(PROMPTS)]
        assert (row["layer"] is None) == (row["coefficient"] is None)
        assert row["follows_loose"] or not row["follows_strict"]
        assert 0 <= row["n_tokens"] <= KW["max_new_tokens"]
        assert row["response"] == by_unit.response[unit]
        assert row["follows_strict"] == by_unit.follows_strict[unit]
    return header, lines


def test_one_row_per_setting_and_prompt_with_the_baseline_first(full, lower):
    assert len(full) == (1 + 2 * 2 * 2) * len(PROMPTS)
    assert full.unit.tolist() == list(range(len(full)))
    base = full[full.layer.isna()]
    assert base.prompt.tolist() == PROMPTS and base.coefficient.isna().all()
    add = full[(full["mode"] == "add") & (full.layer == 2) & (full.strength == 0.5)]
    assert add.coefficient.iloc[0] == pytest.approx(0.5 * float(lower.diff(2).norm()))
    proj = full[(full["mode"] == "project") & (full.layer == 1) & (full.strength == 1.0)]
    assert proj.coefficient.iloc[0] == pytest.approx(float(lower.mean_proj_with[1]))
    assert set(full.instruction_id) == {"change_case:english_lowercase"}


def test_rows_are_what_generate_and_score_give_one_at_a_time(full, model, lower):
    for _, row in full.iloc[[0, 7, 20]].iterrows():
        layer = None if pd.isna(row.layer) else int(row.layer)
        term = Setting(layer, row["mode"], row.strength).term(lower)
        alone = generate(model, [row.prompt], steering=term, max_new_tokens=4)[0]
        assert row.response == alone
        assert row.follows_strict == score(alone, row.instruction_id, row.kwargs)
    assert (full.n_tokens <= 4).all() and full.perplexity.gt(1).all()


def test_batch_size_does_not_change_the_table(full, model, lower):
    assert_same_sweep(sweep(model, lower, PROMPTS, batch_size=5, **KW), full)


def test_a_killed_sweep_resumes_to_the_same_table(full, model, lower, tmp_path, monkeypatch):
    out = tmp_path / "s.jsonl"
    real, calls = sweep_units.score_rows, {"n": 0}

    def dies_on_the_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_units, "score_rows", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        sweep(model, lower, PROMPTS, out=out, batch_size=4, **KW)
    assert len(out.read_text().splitlines()) == 1 + 2 * 4  # header + two batches
    # The crash took the steering off at once (the traceback still holds the frames).
    decoder = getattr(model, "_workbench_fast_decoder", None)
    layers = [] if decoder is None else decoder.layers.values()
    assert all(not layer._forward_hooks for layer in layers)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    monkeypatch.setattr(sweep_units, "score_rows", real)
    assert_same_sweep(sweep(model, lower, PROMPTS, out=out, batch_size=4, **KW), full)
    _, rows = _check_sweep_file(out, full, model, lower)
    assert len(rows) == len(full)


def test_the_progress_bar_carries_its_label_and_draws_its_last_line_once(
    full, model, lower, capsys
):
    table = sweep(model, lower, PROMPTS, **{**KW, "progress": True, "batch_size": 5}, label="owls")
    assert_same_sweep(table, full)
    drawn = capsys.readouterr().err.replace("\r", "\n").splitlines()
    finished = [line for line in drawn if f"{len(full)}/{len(full)}" in line]
    assert len(finished) == 1 and finished[0].startswith("owls: 100%"), drawn


def test_a_torn_last_line_is_redone(full, model, lower, tmp_path):
    out = tmp_path / "s.jsonl"
    sweep(model, lower, PROMPTS, out=out, **KW)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    assert_same_sweep(sweep(model, lower, PROMPTS, out=out, **KW), full)
    _, rows = _check_sweep_file(out, full, model, lower)
    assert len(rows) == len(full)


def test_reading_a_file_never_changes_it(full, model, lower, tmp_path):
    """merge_sweeps may meet a line a running sweep is still writing: it skips it and
    leaves the bytes alone; a file that is not a sweep at all is refused untouched."""
    out = tmp_path / "s.jsonl"
    sweep(model, lower, PROMPTS, out=out, **KW)
    torn = out.read_bytes()[:-7]
    out.write_bytes(torn)
    with pytest.raises(
        SweepFileError, match=f"hold {len(full) - 1} of the sweep's {len(full)} rows"
    ):
        merge_sweeps([out])
    assert len(merge_sweeps([out], partial=True)) == len(full) - 1
    assert out.read_bytes() == torn
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nhalf a line")
    with pytest.raises(SweepFileError, match="not valid JSON|not a workbench sweep"):
        merge_sweeps([notes])
    assert notes.read_bytes() == b"my notes\nhalf a line"


def test_shards_merge_into_the_unsharded_table(full, model, lower, tmp_path):
    parts = [tmp_path / f"part{i}.jsonl" for i in range(3)]
    for i, path in enumerate(parts):
        part = sweep(model, lower, PROMPTS, out=path, shard=(i, 3), **KW)
        assert set(part.unit % 3) == {i}
        _check_sweep_file(path, full, model, lower, shard=(i, 3))
    assert_same_sweep(merge_sweeps(parts), full)


def test_a_file_of_another_sweep_is_refused(model, lower, tmp_path):
    out = tmp_path / "s.jsonl"
    sweep(model, lower, PROMPTS[:1], out=out, **KW)
    with pytest.raises(SweepFileError, match="another configuration"):
        sweep(model, lower, PROMPTS[:1], out=out, **{**KW, "strengths": [2.0]})
    with pytest.raises(SweepFileError, match="written by shard None, not"):
        sweep(model, lower, PROMPTS[:1], out=out, shard=(0, 2), **KW)
    out.write_text(out.read_text() + "not json\n" + out.read_text().splitlines()[-1] + "\n")
    with pytest.raises(SweepFileError, match="line .* is not valid JSON"):
        sweep(model, lower, PROMPTS[:1], out=out, **KW)


def test_prompts_may_carry_their_own_instruction(model, lower):
    table = sweep(
        model,
        lower,
        [SweepPrompt("hi", "punctuation:no_comma"), "hey"],
        **{**KW, "layers": [1], "modes": ["add"], "strengths": [1.0]},
    )
    assert (
        table.instruction_id.tolist()
        == ["punctuation:no_comma", "change_case:english_lowercase"] * 2
    )


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"layers": [7]}, VectorMismatchError, "not layer 7"),
        ({"layers": []}, InvalidArgumentError, "layers is empty"),
        ({"modes": ["amplify"]}, InvalidArgumentError, "mode 'amplify'"),
        (
            {"strengths": [float("nan")]},
            InvalidArgumentError,
            r"strengths\[\d\] nan is not a finite number",
        ),
        ({"shard": (2, 2)}, InvalidArgumentError, r"shard index 2 is out of range \[0..1\]"),
        ({"shard": 3}, InvalidArgumentError, r"shard must be \(i, n\)"),
        ({"max_new_tokens": 0}, InvalidArgumentError, "max_new_tokens 0"),
    ],
)
def test_bad_arguments_are_refused_before_any_generation(model, lower, change, error, match):
    with pytest.raises(error, match=match):
        sweep(model, lower, PROMPTS, **{**KW, **change})


def test_prompts_must_be_a_list_and_need_an_instruction(model, tiny_vecs):
    with pytest.raises(ArgumentTypeError, match="non-empty list"):
        sweep(model, tiny_vecs["bridge"], "hi", **KW)
    with pytest.raises(InvalidArgumentError, match="names no instruction"):
        sweep(model, tiny_vecs["bridge"], ["hi"], **KW)
