"""The train → validation → select → test protocol (`workbench.evaluation.protocol`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

import workbench.evaluation.selection as selection
import workbench.evaluation.sweeps as sweeps
from workbench import compute_instruction_vector, make_pairs, sweep
from workbench.cli.console import main
from workbench.errors import WorkbenchError
from workbench.evaluation.protocol import (
    RAW_PARTS,
    SETTINGS,
    ProtocolConfig,
    evaluate_instruction,
    raw_file,
    summarize_column,
)
from workbench.evaluation.sweep_files import read_rows
from workbench.evaluation.sweeps import Setting, SweepPrompt
from workbench.vectors.pairs import base_queries

TINY = ProtocolConfig(
    layers=(1, 2),
    modes=("add",),
    strengths=(1.0,),
    train_pairs=2,
    val_queries=2,
    test_queries=2,
    max_new_tokens=2,
    batch_size=8,
)
RUN = {"max_new_tokens": 2, "batch_size": 8, "progress": False}


@pytest.fixture
def model(tiny_models: dict):
    return tiny_models["bridge"]


def force(monkeypatch: pytest.MonkeyPatch, setting: Setting) -> None:
    """Make selection choose `setting` (a random model rarely beats its own baseline)."""
    real = selection.select

    def pick(results, vector, *, metric):
        ev = real(results, vector, metric=metric).evidence
        layer = ev["layer"]
        match = layer.isna() if setting.layer is None else (layer == setting.layer).fillna(False)
        evidence = ev.assign(chosen=ev.index == ev.index[match.to_numpy(dtype=bool)][0])
        return selection.Selection(setting, setting.term(vector), evidence, metric)

    monkeypatch.setattr(selection, "select", pick)


def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a sweep generated although its raw file held every row")

    monkeypatch.setattr(sweeps, "_score_batch", refuse)


def test_the_result_equals_running_the_steps_by_hand(model, monkeypatch):
    force(monkeypatch, Setting(2, "add", 1.0))
    result = evaluate_instruction(model, "no_comma", TINY)

    vec = compute_instruction_vector(
        model, make_pairs("no_comma", split="train", n=2), layers=[1, 2]
    )
    val = sweep(
        model,
        vec,
        [q.text for q in base_queries("validation")[:2]],
        layers=[1, 2],
        modes=["add"],
        strengths=[1.0],
        **RUN,
    )
    chosen = selection.select(val, vec, metric="follows_strict")
    assert result.selection.setting == chosen.setting == Setting(2, "add", 1.0)
    assert result.selection.record() == chosen.record()
    assert result.vector.selection == chosen.record()
    assert list(result.vector.layers) == [1, 2]
    prompt_sets = {
        "no_instruction": [q.text for q in base_queries("test")[:2]],
        "instruction": [
            SweepPrompt(p.with_instruction, p.instruction_id, p.kwargs)
            for p in make_pairs("no_comma", split="test", n=2)
        ],
    }
    for label, prompts in prompt_sets.items():
        table = sweep(model, vec, prompts, layers=[2], modes=["add"], strengths=[1.0], **RUN)
        plain, steered = table[table.layer.isna()], table[table.layer.notna()]
        assert result.test[label] == summarize_column(plain, "follows_strict")
        assert result.test[label + "+steer"] == summarize_column(steered, "follows_strict")
    assert list(result.test) == list(SETTINGS)
    assert all(column.n == 2 for column in result.test.values())


@pytest.mark.parametrize("unsteered", ["zero_add", "baseline"])
def test_do_not_steer_runs_the_test_prompts_unsteered_once_for_both_columns(
    model, monkeypatch, tmp_path, unsteered
):
    force(monkeypatch, Setting(None))
    config = replace(TINY, unsteered=unsteered)
    result = evaluate_instruction(model, "no_comma", config, raw_dir=tmp_path)
    assert result.selection.setting == Setting(None)
    assert result.vector.selection["layer"] is None
    for label in ("no_instruction", "instruction"):
        assert result.test[label] == result.test[label + "+steer"]
        assert result.test[label].n == 2
        header, rows = read_rows(tmp_path / raw_file("no_comma", f"test.{label}"), None)
        grid = header["config"]["grid"]
        # One unsteered pass: a zero-weight add, with the baseline only in the old layout.
        zero = [1, "add", 0.0]
        assert grid == ([zero] if unsteered == "zero_add" else [[None, None, None], zero])
        assert len(rows) == 2 * len(grid)
        # The zero-weight add is the unsteered model: the responses of a sweep that holds
        # both are the same.
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))
        table = sweep(
            model, result.vector, prompts, layers=[1], modes=["add"], strengths=[0.0], **RUN
        )
        by_setting = [table[table.layer.isna()], table[table.layer.notna()]]
        assert by_setting[0].response.tolist() == by_setting[1].response.tolist()


def test_a_rerun_resumes_from_the_raw_files_without_generating(model, monkeypatch, tmp_path):
    force(monkeypatch, Setting(1, "add", 1.0))
    first = evaluate_instruction(model, "lowercase", TINY, raw_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        raw_file("lowercase", part) for part in RAW_PARTS
    )
    no_generation(monkeypatch)
    again = evaluate_instruction(model, "lowercase", TINY, raw_dir=tmp_path)
    assert again.test == first.test
    assert again.selection.record() == first.selection.record()


def test_vectors_read_at_every_layer_when_asked(model, monkeypatch):
    force(monkeypatch, Setting(None))
    result = evaluate_instruction(model, "no_comma", replace(TINY, vector_layers="all"))
    assert list(result.vector.layers) == list(range(model.cfg.n_layers))


def test_the_cli_writes_the_files_the_protocol_resumes(
    model, tiny_dir, tmp_path, capsys, monkeypatch
):
    argv = ["evaluate", "no_comma", "--model", str(tiny_dir), "--train-pairs", "2"]
    argv += ["--val-queries", "2", "--test-queries", "2", "--layers", "1,2", "--modes", "add"]
    argv += ["--strengths", "1", "--max-new-tokens", "2", "--batch-size", "8"]
    assert main([*argv, "--out-dir", str(tmp_path), "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (tmp_path / "no_comma.safetensors").is_file()
    no_generation(monkeypatch)
    result = evaluate_instruction(model, "no_comma", TINY, raw_dir=tmp_path)
    assert printed["test"] == {
        k: {
            "accuracy": v.accuracy,
            "strict": v.strict,
            "loose": v.loose,
            "degenerate": v.degenerate,
            "n": v.n,
        }
        for k, v in result.test.items()
    }
    assert printed["validation"] == result.selection.record()


def test_summaries_report_the_metric_and_both_checks():
    rows = pd.DataFrame(
        {
            "follows_strict": [True, False, False, False],
            "follows_loose": [True, True, False, False],
            "degenerate": [False, False, False, True],
        }
    )
    column = summarize_column(rows, "follows_loose")
    assert (column.accuracy, column.strict, column.loose) == (0.5, 0.25, 0.5)
    assert (column.degenerate, column.n) == (0.25, 4)


def test_a_config_holds_tuples_of_checked_values():
    config = ProtocolConfig(layers=[2, 1], modes=["project"], strengths=[1, 0.5])
    assert (config.layers, config.modes, config.strengths) == ((2, 1), ("project",), (1.0, 0.5))
    with pytest.raises(AttributeError):
        config.layers = (3,)


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"layers": ()}, "layers is empty"),
        ({"layers": (1, 1)}, "1 repeated"),
        ({"layers": (-1,)}, "-1"),
        ({"layers": (1.5,)}, "1.5"),
        ({"modes": ("steer",)}, "'steer'"),
        ({"modes": ()}, "modes is empty"),
        ({"modes": ("add", "add")}, "'add' repeated"),
        ({"strengths": ()}, "strengths is empty"),
        ({"strengths": (float("nan"),)}, "nan"),
        ({"metric": "follows"}, "'follows'"),
        ({"train_pairs": 0}, "train_pairs 0"),
        ({"val_queries": 999}, "val_queries 999"),
        ({"test_queries": 25}, "test_queries 25"),
        ({"train_pairs": True}, "True"),
        ({"max_new_tokens": 0}, "max_new_tokens 0"),
        ({"batch_size": "8"}, "'8'"),
        ({"vector_layers": "some"}, "'some'"),
        ({"unsteered": "never"}, "'never'"),
    ],
)
def test_a_bad_config_value_is_refused_by_name(change, shown):
    values = {"layers": (1,), **change}
    with pytest.raises(WorkbenchError) as error:
        ProtocolConfig(**values)
    assert shown in str(error.value)


def test_bad_arguments_to_the_protocol_are_refused(model):
    with pytest.raises(WorkbenchError, match="config must be a ProtocolConfig, got dict"):
        evaluate_instruction(model, "no_comma", {"layers": (1,)})
    with pytest.raises(WorkbenchError, match="unknown instruction 'titel'"):
        evaluate_instruction(model, "titel", TINY)
    with pytest.raises(WorkbenchError, match="progress must be True or False"):
        evaluate_instruction(model, "no_comma", TINY, progress="yes")
    with pytest.raises(WorkbenchError, match="part 'train'"):
        raw_file("no_comma", "train")
