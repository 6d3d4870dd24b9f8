"""Sweeps refuse what they cannot mean: grids, flags and paths checked before any generation,
shard sets merged only whole, and a sweep table checked against the vector it meets."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import workbench.evaluation.sweep_units as sweep_units
from analyses.report import report
from workbench import InstructionVector, compute_instruction_vector, make_pairs
from workbench.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SweepFileError,
    UnknownNameError,
    VectorMismatchError,
    WorkbenchError,
)
from workbench.evaluation.selection import select
from workbench.evaluation.sweep_files import diffs_digest, merge_sweeps, vector_id
from workbench.evaluation.sweeps import SweepPrompt, settings_grid, sweep
from workbench.steering.settings import Setting

PROMPTS = ["hi", "owls?", "why"]
KW = {"layers": [1], "modes": ["add"], "strengths": [1.0], "max_new_tokens": 2, "progress": False}
UNITS = 2 * len(PROMPTS)  # baseline + one setting, per prompt


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["bridge"]


@pytest.fixture(scope="module")
def lower(model):
    return compute_instruction_vector(model, make_pairs("lowercase", n=4))


@pytest.fixture(scope="module")
def other(model):
    return compute_instruction_vector(model, make_pairs("capitals", n=4))


@pytest.fixture(scope="module")
def shards(model, lower, tmp_path_factory):
    """The three shard files of one sweep, and its unsharded table."""
    root = tmp_path_factory.mktemp("shards")
    paths = [root / f"part{i}.jsonl" for i in range(3)]
    for i, path in enumerate(paths):
        sweep(model, lower, PROMPTS, out=path, shard=(i, 3), **KW)
    return paths, sweep(model, lower, PROMPTS, **KW)


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if a sweep gets as far as generating."""

    def refuse(*args, **kwargs):
        raise AssertionError("the sweep generated before refusing its arguments")

    monkeypatch.setattr(sweep_units, "iter_generate", refuse)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"modes": ()}, InvalidArgumentError, r"modes is empty; give at least one of \('add'"),
        (
            {"modes": "add"},
            ArgumentTypeError,
            r"modes must be a list, got str 'add'; give a list such as \['add'\]",
        ),
        (
            {"modes": ["add", "add"]},
            InvalidArgumentError,
            "modes .* contain duplicates: 'add' repeated",
        ),
        ({"modes": {"add"}}, ArgumentTypeError, "modes must be a list"),
        ({"layers": ()}, InvalidArgumentError, "layers is empty"),
        ({"layers": 1}, ArgumentTypeError, "layers must be a list"),
        ({"layers": [1, 2, 1]}, InvalidArgumentError, "contain duplicates: 1 repeated"),
        ({"layers": [True]}, ArgumentTypeError, r"layers\[0\] must be an int, got bool True"),
        (
            {"layers": np.array([1.0])},
            ArgumentTypeError,
            r"layers\[0\] must be an int, got float 1.0",
        ),
        (
            {"layers": np.array([[1]])},
            InvalidArgumentError,
            r"one-dimensional, got an array of shape \(1, 1\)",
        ),
        ({"strengths": []}, InvalidArgumentError, "strengths is empty"),
        ({"strengths": "1"}, ArgumentTypeError, "strengths must be a list"),
        ({"strengths": [0.5, 0.5]}, InvalidArgumentError, "duplicates: 0.5 repeated"),
        ({"strengths": [1, 1.0]}, InvalidArgumentError, "duplicates: 1.0 repeated"),
        (
            {"strengths": [True]},
            ArgumentTypeError,
            r"strengths\[0\] must be a real number .* got bool",
        ),
        (
            {"strengths": [10**400]},
            InvalidArgumentError,
            r"strengths\[0\] 1000+ is not a finite number",
        ),
        ({"baseline": "no"}, ArgumentTypeError, "baseline must be True or False, got str 'no'"),
        ({"progress": 0}, ArgumentTypeError, "progress must be True or False"),
        ({"thresholds": {"ngram": 3}}, ArgumentTypeError, "thresholds must be a QualityThresholds"),
        ({"refill": 1}, ArgumentTypeError, "refill must be True or False, got int 1"),
        ({"loop_stop": True}, ArgumentTypeError, "loop_stop must be a LoopStop or None, got bool"),
        ({"loop_stop": {"max_period": 8}}, ArgumentTypeError, "loop_stop must be a LoopStop"),
    ],
)
def test_bad_grids_and_flags_are_refused_before_any_generation(
    model, lower, no_generation, change, error, match
):
    with pytest.raises(error, match=match) as info:
        sweep(model, lower, PROMPTS, **{**KW, **change})
    assert "\n" not in str(info.value)


def test_numpy_layers_and_strengths_give_the_grid_of_the_same_lists(lower):
    lists = settings_grid(lower, [1, 2], ["add", "ablate"], [0.5, 1.0])
    arrays = settings_grid(lower, np.array([1, 2]), ("add", "ablate"), np.array([0.5, 1.0]))
    scalars = settings_grid(
        lower, [np.int64(1), np.int32(2)], ["add", "ablate"], [np.float32(0.5), 1]
    )
    tensors = settings_grid(
        lower, torch.tensor([1, 2]), ["add", "ablate"], torch.tensor([0.5, 1.0])
    )
    assert lists == arrays == scalars == tensors
    assert all(
        type(s.layer) is int and type(s.strength) is float for s in arrays if s.mode == "add"
    )


def test_a_vector_that_is_not_one_is_refused(model, no_generation):
    with pytest.raises(ArgumentTypeError, match="vector must be an InstructionVector, got str"):
        sweep(model, "lowercase.safetensors", PROMPTS, **KW)


def test_string_kwargs_where_a_list_is_wanted_are_refused_before_generating(
    model, lower, no_generation
):
    bad = SweepPrompt("hi", "keywords:existence", {"keywords": "ocean"})
    with pytest.raises(ArgumentTypeError, match=r"prompt 1: .*kwargs\['keywords'\] must be a list"):
        sweep(model, lower, ["hey", bad], **KW)
    # A vector's own kwargs are what its string prompts are scored with.
    keyword = dataclasses.replace(
        lower, instruction_id="keywords:forbidden_words", kwargs={"forbidden_words": "no"}
    )
    with pytest.raises(ArgumentTypeError, match=r"prompt 0: .*\['no'\]"):
        sweep(model, keyword, ["hey"], **KW)
    with pytest.raises(UnknownNameError, match="prompt 0: unknown instruction id"):
        sweep(model, lower, [SweepPrompt("hi", "keywords:existance", {})], **KW)


def test_sweep_prompt_and_setting_check_their_fields():
    with pytest.raises(ArgumentTypeError, match="SweepPrompt kwargs must be a mapping"):
        SweepPrompt("hi", "keywords:existence", "ocean")
    with pytest.raises(ArgumentTypeError, match="SweepPrompt text must be a str"):
        SweepPrompt(b"hi")
    with pytest.raises(InvalidArgumentError, match="finite number for mode 'add', got None"):
        Setting(1, "add")
    with pytest.raises(InvalidArgumentError, match="Setting mode 'amplify'"):
        Setting(1, "amplify", 1.0)
    with pytest.raises(InvalidArgumentError, match="baseline Setting\\(None\\) takes no mode"):
        Setting(None, "add", 1.0)
    # A table's missing values (NaN, <NA>) read as None, so any row makes its Setting.
    assert Setting(pd.NA, float("nan"), float("nan")) == Setting(None)
    assert Setting(np.int64(2), "ablate", float("nan")) == Setting(2, "ablate")


def test_out_expands_home_and_refuses_what_is_not_a_regular_file(
    model, lower, tmp_path, monkeypatch
):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    sweep(model, lower, PROMPTS[:1], out="~/s.jsonl", **KW)
    assert (home / "s.jsonl").is_file() and not (cwd / "~").exists()
    # A symlink to a sweep file is followed: the sweep resumes in the file it points to.
    (cwd / "link.jsonl").symlink_to(home / "s.jsonl")
    before = (home / "s.jsonl").read_bytes()
    sweep(model, lower, PROMPTS[:1], out=cwd / "link.jsonl", **KW)
    assert (cwd / "link.jsonl").is_symlink() and (home / "s.jsonl").read_bytes() == before
    os.mkfifo(cwd / "fifo")
    for out, match in [
        (cwd, "is a directory, not a regular file"),
        (cwd / "fifo", "is a FIFO, not a regular file"),
        ("", "out '' is empty"),
    ]:
        with pytest.raises(InvalidArgumentError, match=match):
            sweep(model, lower, PROMPTS[:1], out=out, **KW)


def test_an_out_that_is_another_kind_of_file_is_left_alone(model, lower, tmp_path):
    vec_file = lower.save(tmp_path / "v.safetensors")
    before = vec_file.read_bytes()
    with pytest.raises(SweepFileError, match="not a workbench sweep file|not valid JSON"):
        sweep(model, lower, PROMPTS[:1], out=vec_file, **KW)
    assert vec_file.read_bytes() == before


def test_merge_refuses_a_bare_path_a_missing_file_and_a_directory(shards, tmp_path):
    paths, _ = shards
    for bare in (str(paths[0]), paths[0]):
        with pytest.raises(
            ArgumentTypeError, match=r"paths must be a list .* give a list such as \["
        ):
            merge_sweeps(bare)
    with pytest.raises(SweepFileError, match=r"sweep file '.*gone.jsonl' does not exist"):
        merge_sweeps([*paths, tmp_path / "gone.jsonl"])
    with pytest.raises(SweepFileError, match="is a directory"):
        merge_sweeps([tmp_path])
    with pytest.raises(ArgumentTypeError, match="partial must be True or False"):
        merge_sweeps(paths, partial="yes")


def test_an_incomplete_shard_set_is_refused_naming_the_missing_shards(shards, lower):
    paths, full = shards
    # (Perplexities may differ in the last digits: the shards batch differently.)
    same = ["unit", "prompt", "layer", "response"]
    assert merge_sweeps(paths)[same].equals(full[same])
    with pytest.raises(
        SweepFileError, match=f"hold 4 of the sweep's {UNITS} rows: shard 2 of 3 is missing"
    ):
        merge_sweeps(paths[:2])
    with pytest.raises(SweepFileError, match="shards 0, 2 of 3 are missing"):
        merge_sweeps(paths[1:2])
    part = merge_sweeps(paths[:2], partial=True)
    assert len(part) == 4
    # select would choose from two thirds of the evidence: it refuses the partial table.
    with pytest.raises(InvalidArgumentError, match=f"holds 4 of its {UNITS} rows; select needs"):
        select(part, lower)


def test_one_shards_own_table_is_partial_too(model, lower, shards):
    table = sweep(model, lower, PROMPTS, shard=(0, 3), **KW)
    with pytest.raises(InvalidArgumentError, match="select needs the whole sweep"):
        select(table)


def test_a_table_cut_or_doubled_after_the_sweep_is_refused(lower, shards):
    """pandas keeps attrs through filtering and concat: the rows themselves are counted."""
    _, full = shards
    assert select(full, lower).setting is not None
    with pytest.raises(InvalidArgumentError, match="select needs the whole sweep"):
        select(full[full.prompt_index == 0], lower)
    with pytest.raises(InvalidArgumentError, match=r"holds unit\(s\) \[0, 1.*more than once"):
        select(pd.concat([full, full]), lower)


def test_shards_of_different_counts_or_configurations_are_refused(model, lower, shards, tmp_path):
    paths, _ = shards
    halves = [tmp_path / f"half{i}.jsonl" for i in range(2)]
    for i, path in enumerate(halves):
        sweep(model, lower, PROMPTS, out=path, shard=(i, 2), **KW)
    with pytest.raises(
        SweepFileError, match=r"different counts .*half0.jsonl' is shard 0/2.*shard 1/3"
    ):
        merge_sweeps([halves[0], paths[1], paths[2]])
    longer = tmp_path / "longer.jsonl"
    sweep(model, lower, PROMPTS, out=longer, **{**KW, "max_new_tokens": 3})
    with pytest.raises(
        SweepFileError, match="longer.jsonl' holds a sweep of another configuration"
    ):
        merge_sweeps([paths[0], longer])


def test_the_vector_identity_survives_a_selection_and_a_file(lower, other, tmp_path):
    chosen = lower.with_selection({"layer": 1, "mode": "add", "coefficient": 2.0})
    loaded = InstructionVector.load(chosen.save(tmp_path / "v.safetensors"))
    assert vector_id(lower) == vector_id(chosen) == vector_id(loaded)
    assert vector_id(lower) != vector_id(other)
    # Same mean differences, another instruction to score: another vector.
    relabelled = dataclasses.replace(lower, instruction_id="change_case:english_capital")
    assert diffs_digest(relabelled) == diffs_digest(lower)
    assert vector_id(relabelled) != vector_id(lower)


def test_a_table_meets_only_the_vector_it_was_swept_with(shards, lower, other, tmp_path):
    paths, full = shards
    merged = merge_sweeps(paths)
    # (A filtered table is refused as partial: test_a_table_cut_or_doubled_after_the_sweep…)
    for table in (full, merged):
        assert select(table, lower).setting in (Setting(None), Setting(1, "add", 1.0))
        with pytest.raises(
            VectorMismatchError, match=f"not with this vector {vector_id(other)}"
        ) as info:
            select(table, other)
        assert vector_id(lower) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(VectorMismatchError, match=r"the sweep in \[.*part0.jsonl"):
        select(merged, other)
    with pytest.raises(VectorMismatchError, match="was run with vector"):
        report(other, out=tmp_path / "page.html", sweep=paths)
    with pytest.raises(VectorMismatchError, match="was run with vector"):
        report(other, out=tmp_path / "page.html", sweep=full)
    assert not (tmp_path / "page.html").exists()
    # A table built by hand carries no identity and is taken as given.
    assert select(pd.DataFrame(full.to_dict("records")), other).setting is not None


def _as_format_1(path, to):
    """`path` rewritten as the previous format wrote it: no vector_id in the header."""
    lines = path.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["version"] = 1
    del header["config"]["vector_id"]
    to.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return to


def test_a_format_1_file_is_read_and_resumed_checked_by_its_diffs(model, lower, other, tmp_path):
    new = tmp_path / "new.jsonl"
    full = sweep(model, lower, PROMPTS, out=new, **KW)
    old = _as_format_1(new, tmp_path / "old.jsonl")
    table = merge_sweeps([old])
    assert select(table, lower).setting is not None
    with pytest.raises(VectorMismatchError, match="format-1 file: mean differences only"):
        select(table, other)
    # Resumed: the rows it holds are kept, the missing ones are run and appended.
    lines = old.read_text().splitlines(keepends=True)
    old.write_text("".join(lines[:-2]))
    resumed = sweep(model, lower, PROMPTS, out=old, **KW)
    assert sorted(resumed.response) == sorted(full.response)
    assert json.loads(old.read_text().splitlines()[0])["version"] == 1
    with pytest.raises(SweepFileError, match="another configuration"):
        sweep(model, other, PROMPTS, out=old, **KW)
    header = json.loads(new.read_text().splitlines()[0])
    header["version"] = 99
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps(header) + "\n")
    with pytest.raises(SweepFileError, match="format 99; this workbench reads formats"):
        merge_sweeps([future])


def test_every_refusal_is_a_workbench_error(model, lower, shards, no_generation):
    paths, _ = shards
    calls = [
        lambda: sweep(model, lower, PROMPTS, **{**KW, "modes": "add"}),
        lambda: merge_sweeps(str(paths[0])),
        lambda: merge_sweeps(paths[:1]),
    ]
    for call in calls:
        with pytest.raises(WorkbenchError):
            call()


def test_the_report_never_writes_over_its_own_inputs(lower, shards, tmp_path, monkeypatch):
    paths, _ = shards
    monkeypatch.setenv("HOME", str(tmp_path))
    vec_file = lower.save(tmp_path / "v.safetensors")
    link = tmp_path / "link.html"
    link.symlink_to(vec_file)
    before = vec_file.read_bytes()
    for out in (vec_file, link, "~/v.safetensors"):
        with pytest.raises(InvalidArgumentError, match="is the input file .* would replace it"):
            report(vec_file, out=out)
    sweep_before = paths[0].read_bytes()
    with pytest.raises(InvalidArgumentError, match="is the input file"):
        report(lower, out=paths[0], sweep=paths)
    assert vec_file.read_bytes() == before and paths[0].read_bytes() == sweep_before
    with pytest.raises(InvalidArgumentError, match="is a directory, not a regular file"):
        report(lower, out=tmp_path)


def test_a_strength_with_ablate_is_refused_not_ignored() -> None:
    with pytest.raises(InvalidArgumentError, match="no meaning for mode 'ablate'"):
        Setting(2, "ablate", 1.0)
