"""The train → validation → select → test protocol (`workbench.evaluation.protocol`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

import workbench.evaluation.protocol as protocol
import workbench.evaluation.selection as selection
import workbench.evaluation.sweep_units as sweep_units
import workbench.evaluation.train_vectors as train_vectors
from workbench import SteeringTerm, compute_instruction_vector, make_pairs, sweep
from workbench.cli.console import main
from workbench.errors import WorkbenchError
from workbench.evaluation.protocol import (
    RAW_PARTS,
    SETTINGS,
    ProtocolConfig,
    evaluate_instruction,
    paired_columns,
    raw_file,
    summarize_column,
)
from workbench.evaluation.statistics import paired_effect, wilson
from workbench.evaluation.sweep_files import read_rows, vector_id
from workbench.evaluation.sweeps import Setting, SweepPrompt
from workbench.vectors.pairs import base_queries

TINY = ProtocolConfig(
    layers=(1, 2),
    modes=("add",),
    strengths=(1.0,),
    train_pairs=2,
    val_queries=2,
    test_queries=2,
    val_tokens=2,
    val_tokens_long=2,
    test_tokens=2,
    batch_size=8,
    metric="follows_strict",
)
RUN = {"max_new_tokens": 2, "batch_size": 8, "progress": False}


@pytest.fixture
def model(tiny_models: dict):
    return tiny_models["bridge"]


def force(monkeypatch: pytest.MonkeyPatch, setting: Setting) -> None:
    """Make selection choose `setting` (a random model rarely beats its own baseline)."""
    real = selection.select

    def pick(results, vector, *, metric, objective="accuracy"):
        chosen = real(results, vector, metric=metric, objective=objective)
        ev = chosen.evidence
        layer = ev["layer"]
        match = layer.isna() if setting.layer is None else (layer == setting.layer).fillna(False)
        evidence = ev.assign(chosen=ev.index == ev.index[match.to_numpy(dtype=bool)][0])
        term = setting.term(vector)
        return selection.Selection(setting, term, evidence, metric, gate=chosen.gate)

    monkeypatch.setattr(selection, "select", pick)


def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a sweep generated although its raw file held every row")

    monkeypatch.setattr(sweep_units, "iter_generate", refuse)


def test_the_result_equals_running_the_steps_by_hand(model, monkeypatch):
    force(monkeypatch, Setting(2, "add", 1.0))
    result = evaluate_instruction(model, "no_comma", TINY)

    vec = compute_instruction_vector(
        model, make_pairs("no_comma", split="train", n=2), layers=[1, 2]
    )
    validation = {
        "without": [q.text for q in base_queries("validation")[:2]],
        "with": [
            SweepPrompt(p.with_instruction, p.instruction_id, p.kwargs)
            for p in make_pairs("no_comma", split="validation", n=2)
        ],
    }
    grid = {"layers": [1, 2], "modes": ["add"], "strengths": [1.0]}
    for condition, prompts in validation.items():
        val = sweep(model, vec, prompts, **grid, **RUN)
        chosen = selection.select(val, vec, metric="follows_strict")
        assert result.selections[condition].setting == chosen.setting == Setting(2, "add", 1.0)
        assert result.selections[condition].record() == chosen.record()
        if condition == "without":
            assert result.vector.selection == chosen.record()
    assert list(result.selections) == ["without", "with"]
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


def test_do_not_steer_runs_the_test_prompts_unsteered_once_for_both_columns(
    model, monkeypatch, tmp_path
):
    force(monkeypatch, Setting(None))
    result = evaluate_instruction(model, "no_comma", TINY, raw_dir=tmp_path)
    assert all(sel.setting == Setting(None) for sel in result.selections.values())
    assert result.vector.selection["layer"] is None
    for label in ("no_instruction", "instruction"):
        assert result.test[label] == result.test[label + "+steer"]
        assert result.test[label].n == 2
    for effect in result.effects.values():
        # One run serves both columns: steering changed nothing, by construction.
        assert (effect.gain, effect.fixed, effect.broken, effect.p_value) == (0.0, 0, 0, 1.0)
        assert effect.n == 2 and effect.ci95[0] < 0 < effect.ci95[1]
        header, rows = read_rows(tmp_path / raw_file("no_comma", f"test.{label}"), None)
        grid = header["config"]["grid"]
        # One unsteered pass: a zero-weight add.
        assert grid == [[1, "add", 0.0]]
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
        [raw_file("lowercase", part) for part in RAW_PARTS]
        + ["lowercase.vector.json", "lowercase.vector.safetensors"]
    )
    no_generation(monkeypatch)
    # Another build of the same libraries moves a recomputed vector's last bits, which
    # changes its digest; the rows are resumed with the vector they were made with.
    real = train_vectors.compute_instruction_vector

    def drifted(*args, **kwargs):
        vec = real(*args, **kwargs)
        return replace(vec, diffs=vec.diffs * (1 + 1e-6))

    monkeypatch.setattr(train_vectors, "compute_instruction_vector", drifted)
    again = evaluate_instruction(model, "lowercase", TINY, raw_dir=tmp_path)
    assert again.test == first.test
    assert {c: s.record() for c, s in again.selections.items()} == {
        c: s.record() for c, s in first.selections.items()
    }


def test_a_kept_train_vector_of_other_inputs_is_refused_and_never_replaced(model, tmp_path):
    instr = protocol.instruction("no_comma")
    first = train_vectors.train_vector(model, instr, 2, [1], folder=tmp_path)
    vector_file, record_file = train_vectors.vector_files(tmp_path, "no_comma")
    record = json.loads(record_file.read_text())
    assert record["inputs"]["layers"] == [1] and record["inputs"]["n_pairs"] == 2
    assert record["vector_id"] == vector_id(first)
    kept = vector_file.read_bytes(), record_file.read_bytes()
    with pytest.raises(WorkbenchError, match="n_pairs 2 kept, 3 now"):
        train_vectors.train_vector(model, instr, 3, [1], folder=tmp_path)
    with pytest.raises(WorkbenchError, match=r"layers \[1\] kept, \[1, 2\] now"):
        train_vectors.train_vector(model, instr, 2, [1, 2], folder=tmp_path)
    assert (vector_file.read_bytes(), record_file.read_bytes()) == kept
    record_file.write_text("{torn")
    with pytest.raises(WorkbenchError, match="is not a train-vector record"):
        train_vectors.train_vector(model, instr, 2, [1], folder=tmp_path)
    record_file.unlink()
    with pytest.raises(WorkbenchError, match="has no record of what it was computed from"):
        train_vectors.train_vector(model, instr, 2, [1], folder=tmp_path)
    assert vector_file.read_bytes() == kept[0]
    # Another instruction's name in the same folder is its own pair of files.
    other = train_vectors.train_vector(model, instr, 3, [1], folder=tmp_path, name="other")
    assert other.n_pairs == 3


def test_each_condition_is_selected_on_its_own_validation_sweep(model, monkeypatch):
    """Validation without the instruction picks "do not steer", with it layer 2: each
    condition's test column then follows its own choice."""
    real = selection.select
    seen = []

    def pick(results, vector, *, metric, objective="accuracy"):
        carries = not set(results["prompt"]) <= {q.text for q in base_queries("validation")}
        seen.append(carries)
        chosen = Setting(2, "add", 1.0) if carries else Setting(None)
        ev = real(results, vector, metric=metric, objective=objective).evidence
        return selection.Selection(chosen, chosen.term(vector), ev, metric)

    monkeypatch.setattr(selection, "select", pick)
    result = evaluate_instruction(model, "no_comma", TINY)
    assert seen == [False, True]
    assert result.selections["without"].setting == Setting(None)
    assert result.selections["with"].setting == Setting(2, "add", 1.0)
    assert result.vector.selection["layer"] is None
    assert result.test["no_instruction"] == result.test["no_instruction+steer"]
    prompts = [
        SweepPrompt(p.with_instruction, p.instruction_id, p.kwargs)
        for p in make_pairs("no_comma", split="test", n=2)
    ]
    table = sweep(model, result.vector, prompts, layers=[2], modes=["add"], strengths=[1.0], **RUN)
    steered = table[table.layer.notna()]
    assert result.test["instruction+steer"] == summarize_column(steered, "follows_strict")


def test_the_cli_writes_the_files_the_protocol_resumes(
    model, tiny_dir, tmp_path, capsys, monkeypatch
):
    argv = ["evaluate", "no_comma", "--model", str(tiny_dir), "--train-pairs", "2"]
    argv += ["--val-queries", "2", "--test-queries", "2", "--layers", "1,2", "--modes", "add"]
    argv += ["--strengths", "1", "--val-tokens", "2", "--test-tokens", "2", "--batch-size", "8"]
    argv += ["--metric", "follows_strict", "--select-by", "accuracy"]
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
            "ci95": list(v.ci95),
            "degenerate_ci95": list(v.degenerate_ci95),
            "clean_accuracy": v.clean_accuracy,
            "clean_ci95": list(v.clean_ci95),
            "strict_ci95": list(v.strict_ci95),
            "loose_ci95": list(v.loose_ci95),
            "gate_on": v.gate_on,
        }
        for k, v in result.test.items()
    }
    assert printed["effects"] == {
        condition: {
            "gain": e.gain,
            "ci95": list(e.ci95),
            "p_value": e.p_value,
            "fixed": e.fixed,
            "broken": e.broken,
            "n": e.n,
        }
        for condition, e in result.effects.items()
    }
    assert list(printed["effects"]) == ["without", "with"]
    assert printed["validation"] == {c: s.record() for c, s in result.selections.items()}
    assert list(printed["selected"]) == ["without", "with"]
    assert printed["selected"]["with"]["label"]


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


def test_the_defaults_are_the_reference_protocol_and_presets_are_named_changes():
    paper = ProtocolConfig.from_preset("paper")
    assert paper == replace(ProtocolConfig(), preset="paper")
    # The reference code: layers range(n // 5, n, 2), project x1, loose accuracy,
    # 768 (1024) validation and 2048 test tokens, the whole validation split.
    assert paper.layers_for(30) == tuple(range(6, 30, 2))
    assert (paper.modes, paper.strengths, paper.metric) == (("project",), (1.0,), "follows_loose")
    assert (paper.val_tokens, paper.val_tokens_long, paper.test_tokens) == (768, 1024, 2048)
    assert paper.val_queries == len(base_queries("validation"))
    assert paper.val_tokens_for("detectable_format:json_format") == 1024
    assert paper.val_tokens_for("punctuation:no_comma") == 768
    quick = ProtocolConfig.from_preset("quick", val_queries=8, layers=(3,))
    assert (quick.preset, quick.changed, quick.layers, quick.val_queries) == (
        "quick",
        ("layers", "val_queries"),
        (3,),
        8,
    )
    assert quick.strengths == (0.5, 1.0) and quick.select_by == "clean_accuracy"
    assert quick.describe(30).startswith("preset quick (changed: layers, val_queries): layers 3;")
    assert json.loads(json.dumps(quick.record()))["layers"] == [3]


def test_a_preset_name_or_field_that_does_not_exist_is_refused():
    with pytest.raises(WorkbenchError, match="preset 'fast' is not one of"):
        ProtocolConfig.from_preset("fast")
    with pytest.raises(WorkbenchError, match=r"unknown ProtocolConfig fields \['tokens'\]"):
        ProtocolConfig.from_preset("quick", tokens=5)
    with pytest.raises(WorkbenchError, match="'preset' is set by"):
        ProtocolConfig.from_preset("quick", preset="paper")
    with pytest.raises(WorkbenchError, match=r"layers \[40\] are out of range"):
        ProtocolConfig(layers=(1, 40)).layers_for(30)
    with pytest.raises(WorkbenchError, match="with layers given it has no meaning"):
        ProtocolConfig.from_preset("quick", layers=(3,), layer_step=2)


def test_a_preset_label_is_always_true():
    # A value equal to the preset's is no change; the label names only real ones.
    same = ProtocolConfig.from_preset("quick", batch_size=48, layers=None, strengths=[0.5, 1])
    assert same.changed == () and same == ProtocolConfig.from_preset("quick")
    # Made by hand, or replaced, a config cannot claim a preset it does not hold.
    with pytest.raises(WorkbenchError, match=r"preset 'quick' does not hold layer_step=2"):
        ProtocolConfig(preset="quick")
    with pytest.raises(WorkbenchError, match=r"does not hold val_tokens=5"):
        replace(ProtocolConfig.from_preset("paper"), val_tokens=5)


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
        ({"val_tokens": 0}, "val_tokens 0"),
        ({"test_tokens": 0}, "test_tokens 0"),
        ({"layer_step": 0}, "layer_step 0"),
        ({"select_by": "accuracy_clean"}, "'accuracy_clean'"),
        ({"preset": "fast"}, "'fast'"),
        ({"batch_size": "8"}, "'8'"),
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


def test_effects_pair_steered_and_plain_rows_by_prompt_per_condition(model, monkeypatch):
    force(monkeypatch, Setting(2, "add", 1.0))
    test_texts = {q.text for q in base_queries("test")}
    # (plain, steered, steered degenerate) outcome per prompt_index, per test prompt set.
    designed = {
        "no_instruction": ([True, True, False, False], [False, True, True, True]),
        "instruction": ([False] * 4, [True] * 4),
    }
    degenerate = [False, False, True, True]
    real = protocol.sweep

    def scored(model, vec, prompts, **kwargs):
        table = real(model, vec, prompts, **kwargs).copy()
        first = prompts[0].text
        if not any(first.startswith(text) for text in test_texts):
            return table  # the validation sweep
        plain, steered = designed["no_instruction" if first in test_texts else "instruction"]
        base = table.layer.isna().to_numpy()
        index = table.prompt_index.tolist()
        table["follows_strict"] = [
            (plain if b else steered)[i] for b, i in zip(base, index, strict=True)
        ]
        table["degenerate"] = [not b and degenerate[i] for b, i in zip(base, index, strict=True)]
        # Steered rows last prompt first: pairs follow the prompt, not the row order.
        return pd.concat([table[base], table[~base].iloc[::-1]])

    monkeypatch.setattr(protocol, "sweep", scored)
    result = evaluate_instruction(model, "no_comma", replace(TINY, test_queries=4))
    assert list(result.effects) == ["without", "with"]
    without, with_ = result.effects["without"], result.effects["with"]
    assert (without.fixed, without.broken, without.n, without.gain) == (2, 1, 4, 0.25)
    assert without == paired_effect(*designed["no_instruction"])
    assert (with_.fixed, with_.broken, with_.gain) == (4, 0, 1.0)
    assert with_.p_value == 2 / 2**4  # all four discordant prompts went one way
    for condition, label in protocol.CONDITIONS.items():
        plain, steered = result.test[label], result.test[label + "+steer"]
        assert result.effects[condition].gain == pytest.approx(steered.accuracy - plain.accuracy)
    # Clean: follows and not degenerate; of the steered follows [F, T, T, T] only one is clean.
    steered = result.test["no_instruction+steer"]
    assert (steered.accuracy, steered.degenerate, steered.clean_accuracy) == (0.75, 0.5, 0.25)
    assert steered.clean_ci95 == wilson(1, 4).ci95


def test_summaries_carry_wilson_intervals_and_clean_accuracy():
    rows = pd.DataFrame(
        {
            "follows_strict": [True, True, True, False, False],
            "follows_loose": [True, True, True, True, False],
            "degenerate": [True, False, False, True, False],
        }
    )
    column = summarize_column(rows, "follows_loose")
    assert (column.accuracy, column.n) == (0.8, 5)
    assert column.ci95 == wilson(4, 5).ci95
    assert column.degenerate_ci95 == wilson(2, 5).ci95
    # Rows 1, 2 (and 3 by the loose metric) follow without being degenerate.
    assert (column.clean_accuracy, column.clean_ci95) == (0.4, wilson(2, 5).ci95)
    assert summarize_column(rows, "follows_strict").clean_accuracy == 0.4
    assert column.ci95[0] < column.accuracy < column.ci95[1]
    with pytest.raises(WorkbenchError, match="no rows"):
        summarize_column(rows.iloc[:0], "follows_loose")


def test_pairing_refuses_columns_of_other_prompts():
    plain = pd.DataFrame(
        {"prompt_index": [0, 1], "prompt": ["a", "b"], "follows_strict": [True, False]}
    )
    with pytest.raises(WorkbenchError, match=r"only plain \[1\], only steered \[2\]"):
        paired_columns(plain, plain.assign(prompt_index=[0, 2]), "follows_strict")
    with pytest.raises(WorkbenchError, match=r"prompt_index \[0\] more than once"):
        paired_columns(plain, plain.assign(prompt_index=[0, 0]), "follows_strict")
    with pytest.raises(WorkbenchError, match="different prompt texts"):
        paired_columns(plain, plain.assign(prompt=["a", "c"]), "follows_strict")
    with pytest.raises(WorkbenchError, match="not True or False"):
        paired_columns(plain, plain.assign(follows_strict=[1, 0]), "follows_strict")


BULLETS_ROWS = [
    {
        "key": k,
        "prompt": f"{q} Use exactly {n} bullet points.",
        "prompt_without_instruction": q,
        "instruction_id_list": ["detectable_format:number_bullet_lists"],
        "kwargs": [{"num_bullets": n}],
    }
    for k, (q, n) in enumerate([("Name some birds.", 7), ("List a few rivers.", 2), ("Tools?", 4)])
]


def _rows_file(tmp_path, rows):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_own_test_rows_replace_the_test_split_each_checked_by_its_own_kwargs(
    model, monkeypatch, tmp_path
):
    from workbench.evaluation.ifeval_rows import read_ifeval_rows

    force(monkeypatch, Setting(1, "add", 1.0))
    items = read_ifeval_rows(_rows_file(tmp_path, BULLETS_ROWS)).groups["bullets"]
    result = evaluate_instruction(model, "bullets", TINY, raw_dir=tmp_path, test_items=items)
    assert all(column.n == 3 for column in result.test.values())  # not TINY.test_queries
    for label, field in [
        ("instruction", "prompt"),
        ("no_instruction", "prompt_without_instruction"),
    ]:
        _, rows = read_rows(tmp_path / raw_file("bullets", f"test.{label}"), None)
        plain = sorted((r for r in rows if r["layer"] is None), key=lambda r: r["prompt_index"])
        assert [r["prompt"] for r in plain] == [row[field] for row in BULLETS_ROWS]
        assert [r["kwargs"] for r in plain] == [{"num_bullets": n} for n in (7, 2, 4)]


def test_own_validation_rows_replace_the_validation_split(model, monkeypatch, tmp_path):
    from workbench.evaluation.ifeval_rows import read_ifeval_rows

    items = read_ifeval_rows(_rows_file(tmp_path, BULLETS_ROWS)).groups["bullets"]
    evaluate_instruction(model, "bullets", TINY, raw_dir=tmp_path, val_items=items)
    for label, field in [
        ("instruction", "prompt"),
        ("no_instruction", "prompt_without_instruction"),
    ]:
        _, rows = read_rows(tmp_path / raw_file("bullets", f"val.{label}"), None)
        plain = sorted((r for r in rows if r["layer"] is None), key=lambda r: r["prompt_index"])
        assert [r["prompt"] for r in plain] == [row[field] for row in BULLETS_ROWS]
    with pytest.raises(WorkbenchError, match="val_items must be a non-empty list"):
        evaluate_instruction(model, "bullets", TINY, val_items=[])


def test_the_cli_prints_and_stores_its_preset_and_takes_validation_rows(tiny_dir, tmp_path, capsys):
    path = _rows_file(tmp_path, BULLETS_ROWS)
    argv = ["evaluate", "bullets", "--val-file", str(path), "--model", str(tiny_dir)]
    argv += ["--train-pairs", "2", "--test-queries", "2", "--layers", "1", "--modes", "add"]
    argv += ["--val-tokens", "2", "--test-tokens", "2", "--batch-size", "8", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    changed = "batch_size, layers, modes, test_queries, test_tokens, train_pairs, val_tokens"
    assert out.startswith(f"preset quick (changed: {changed}): layers 1; modes add;")
    assert "| bullets |" in out
    assert main([*argv, "--json", "--preset", "paper"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["preset"] == "paper" and row["config"]["layers"] == [1]
    assert row["config"]["strengths"] == [1.0] and row["config"]["val_tokens_long"] == 1024
    assert row["validation"]["with"]["n"] == 3  # the file's 3 rows, not the split's 24
    assert main([*argv, "--val-queries", "2"]) == 2
    assert "with --val-file every row of the file is used" in capsys.readouterr().err


def test_own_test_rows_need_their_prompt_without_instruction(model, tmp_path):
    from workbench.evaluation.ifeval_rows import read_ifeval_rows

    rows = [
        BULLETS_ROWS[0],
        {k: v for k, v in BULLETS_ROWS[1].items() if k != "prompt_without_instruction"},
    ]
    items = read_ifeval_rows(_rows_file(tmp_path, rows)).groups["bullets"]
    with pytest.raises(WorkbenchError, match=r"lines \[2\] have no prompt_without_instruction"):
        evaluate_instruction(model, "bullets", TINY, test_items=items)
    with pytest.raises(WorkbenchError, match="test_items must be a non-empty list"):
        evaluate_instruction(model, "bullets", TINY, test_items=[])
    with pytest.raises(WorkbenchError, match=r"test_items\[0\] must be an IFEvalItem"):
        evaluate_instruction(model, "bullets", TINY, test_items=[{"prompt": "Hi"}])


def test_the_cli_runs_a_test_file_and_says_what_it_left_out(tiny_dir, tmp_path, capsys):
    postscript = {
        "prompt": "Write a note. End with P.S.",
        "prompt_without_instruction": "Write a note.",
        "instruction_id_list": ["detectable_content:postscript"],
        "kwargs": [{"postscript_marker": "P.S."}],
    }
    path = _rows_file(tmp_path, [*BULLETS_ROWS, postscript])
    argv = ["evaluate", "--test-file", str(path), "--model", str(tiny_dir), "--train-pairs", "2"]
    argv += ["--val-queries", "2", "--layers", "1", "--modes", "add", "--strengths", "1"]
    argv += ["--val-tokens", "2", "--test-tokens", "2", "--batch-size", "8", "--json", "--quiet"]
    assert main(argv) == 2
    assert "detectable_content:postscript" in capsys.readouterr().err
    assert main([*argv, "--skip-unsupported"]) == 0
    captured = capsys.readouterr()
    (row,) = [json.loads(line) for line in captured.out.splitlines()]
    assert row["instruction"] == "bullets" and row["test"]["instruction"]["n"] == 3
    assert "{'detectable_content:postscript': 1}" in captured.err
    assert main([*argv, "--skip-unsupported", "lowercase"]) == 2
    assert "has no rows for ['lowercase']; it holds ['bullets']" in capsys.readouterr().err
    assert main([*argv, "--all"]) == 2
    assert "--all runs every bundled instruction" in capsys.readouterr().err
    plain = ["evaluate", "bullets", "--skip-unsupported", "--model", str(tiny_dir)]
    assert main(plain) == 2
    assert "--skip-unsupported applies to --test-file and --val-file" in capsys.readouterr().err
    assert main([*argv, "--skip-unsupported", "--test-queries", "2"]) == 2
    assert "with --test-file every row of the file is used" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [Setting(2, "add", 1.0), Setting(None)])
def test_a_gated_protocol_counts_how_often_the_gate_opened(model, monkeypatch, setting):
    force(monkeypatch, setting)
    config = replace(TINY, gate=True)
    result = evaluate_instruction(model, "no_comma", config)
    assert "gated" in config.describe(model.cfg.n_layers)
    for name, summary in result.test.items():
        steered = (
            name.endswith("+steer")
            and result.selections["without" if name.startswith("no_") else "with"].setting.layer
            is not None
        )
        if steered:
            assert summary.gate_on is not None and 0 <= summary.gate_on <= summary.n
            assert summary.gate_line() == f"gate on for {summary.gate_on} of {summary.n} prompts"
        else:
            assert summary.gate_on is None and summary.gate_line() == ""
    # The stored selection carries the gate it was chosen under.
    sel = result.vector.selection
    assert sel["layer"] == setting.layer
    if setting.layer is None:
        assert sel.get("gate") is None
    else:
        assert sel["gate"] == {"side": "below", "threshold": None}
        gate = SteeringTerm(result.vector).concrete().gate
        assert (gate.vector, gate.layer, gate.threshold, gate.side) == (None, None, None, "below")
