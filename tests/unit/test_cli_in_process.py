"""The command line in-process: help, every argument check, and the text output.

`test_cli` runs the installed console script; these call `workbench.cli.console.main`
directly, which is cheap enough to try every bad argument.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path

import pytest

from tests.tiny import make_tiny_checkpoint
from workbench import InstructionVector, compute_instruction_vector, load_model, make_pairs, sweep
from workbench.cli.console import build_parser, main
from workbench.cli.output import progress
from workbench.cli.parser import DTYPES
from workbench.cli.sweep import METRICS
from workbench.errors import InvalidArgumentError
from workbench.options import choices

COMMANDS = list(build_parser()._subparsers._group_actions[0].choices)
MODEL_COMMANDS = {"extract", "sweep", "steer", "evaluate", "report", "demo"}
SWEEP_ARGS = ["--queries", "2", "--layers", "1", "--modes", "add", "--strengths", "1"]
SWEEP_ARGS += ["--max-new-tokens", "2", "--quiet"]


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """Vector and sweep files made with the library, in a directory tests chdir into."""
    d = tmp_path_factory.mktemp("cli_more")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(tiny_dir))
    vec = compute_instruction_vector(model, make_pairs("lowercase", n=3))
    vec.save(d / "v.safetensors")
    compute_instruction_vector(model, make_pairs("no_comma", n=3)).save(d / "other.safetensors")
    vec.with_selection({"layer": 1, "mode": "add", "coefficient": 3.0}).save(d / "sel.safetensors")
    vec.with_selection({"layer": None, "mode": None, "coefficient": None}).save(d / "none.st")
    kw = {"layers": [1], "modes": ["add"], "strengths": [1.0], "max_new_tokens": 2}
    prompts = ["Hi", "Name a colour."]
    sweep(model, vec, prompts, **kw, out=d / "full.jsonl", progress=False)
    sweep(model, vec, prompts, **kw, out=d / "part0.jsonl", shard=(0, 2), progress=False)
    make_tiny_checkpoint(d / "seed1", seed=1)
    (d / "not_a_vector.txt").write_text("hello")
    (d / "p.txt").write_text("Hi\n")
    return d


@pytest.fixture
def in_files(files: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(files)
    return files


def error_line(capsys: pytest.CaptureFixture, code: int, command: str) -> str:
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"workbench {command}: error: ")
    return err.strip()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert f"example:\n  workbench {command}" in out and "--json" in out and "--quiet" in out
    has_model = all(flag in out for flag in ("--model", "--backend", "--device", "--dtype"))
    assert has_model == (command in MODEL_COMMANDS)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["extract"], "the following arguments are required: instruction, --out"),
        (["extract", "title", "--out", "x", "--pairs", "0"], "'0' is not a positive int"),
        (["extract", "title", "--out", "x", "--backend", "jax"], "invalid choice: 'jax'"),
        (["extract", "title", "--out", "x", "--dtype", "int8"], "invalid choice: 'int8'"),
        (["steer", "v.st", "Hi", "--strength", "nan"], "'nan' is not a finite number"),
        (["sweeep"], "invalid choice: 'sweeep'"),
        (["steer", "v.st", "Hi", "--gate", "--no-gate"], "not allowed with argument"),
        (["steer", "v.st", "Hi", "--gate-side", "left"], "invalid choice: 'left'"),
    ],
)
def test_usage_errors_are_one_line(argv, shown, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and shown in err, err


OUT = ["--out", "x.safetensors"]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (
            ["extract", "bullets", "--set", "num_bullets=-3", *OUT],
            "must be an int in [1..10], got -3",
        ),
        (["extract", "bullets", "--set", "num_bullets=abc", *OUT], "num_bullets must be an int"),
        (["extract", "bullets", "--set", "4", *OUT], "--set expects NAME=VALUE, got '4'"),
        (
            ["extract", "bullets", "--set", "colour=red", *OUT],
            "no placeholder 'colour'; it takes num_bullets (an int in [1..10])",
        ),
        (["extract", "bullets", "--set", "num_bullets=2", "--set", "num_bullets=3", *OUT], "twice"),
        (["extract", "include_keyword", "--set", "keyword=two words", *OUT], "got 'two words'"),
        (["extract", "end_phrase", "--set", 'end_phrase=say "hi"', *OUT], "without double quotes"),
        (["extract", "lowercase", "--layers", "", *OUT], "--layers '' is empty"),
        (["extract", "lowercase", "--layers", "a-b", *OUT], "'a-b' is not a layer"),
        (["extract", "lowercase", "--layers", "5-2", *OUT], "ascending range"),
        (["extract", "lowercase", "--layers", "1,0-1", *OUT], "names layer(s) [1] twice"),
        (["extract", "lowercase", "--out", "."], "'.' is a directory"),
        (["extract", "titel", *OUT], "unknown instruction 'titel'; did you mean one of ['title'"),
        (["sweep", "v.safetensors", "--out", "s.jsonl", "--shard", "2/2"], "--shard '2/2'"),
        (["sweep", "v.safetensors", "--out", "s.jsonl", "--modes", "add,steer"], "['steer']"),
        (["sweep", "v.safetensors", "--out", "s.jsonl", "--strengths", "1,inf"], "'inf' is not"),
        (["sweep", "v.safetensors", "--out", "s.jsonl", "--layers", "7"], "not [7]"),
        (
            [
                "sweep",
                "v.safetensors",
                "--out",
                "s.jsonl",
                "--queries",
                "2",
                "--prompts-file",
                "p.txt",
            ],
            "not with --prompts-file",
        ),
        (["sweep", "not_a_vector.txt", "--out", "s.jsonl"], "'not_a_vector.txt' is not a readable"),
        (["sweep", "v.safetensors", "--out", "nodir/s.jsonl"], "directory 'nodir' does not exist"),
        (["steer", "v.safetensors"], "no prompts: give PROMPT arguments or --prompts-file"),
        (["steer", "v.safetensors", "Hi", "--prompts-file", "no.txt"], "file 'no.txt' does not"),
        (["steer", "v.safetensors", "Hi"], "holds no selected setting; pass --layer"),
        (["steer", "none.st", "Hi"], "holds the selection 'do not steer'"),
        (["steer", "v.safetensors", "Hi", "--layer", "5"], "--layer: the vector holds layers"),
        (
            ["steer", "v.safetensors", "Hi", "--layer", "1", "--mode", "ablate", "--strength", "2"],
            "--strength 2.0 has no meaning with --mode ablate",
        ),
        (["steer", "v.safetensors", "Hi", "--layer", "1", "--seed", "3"], "pass --temperature"),
        (["steer", "v.safetensors", "Hi", "--temperature", "0", "--layer", "1"], "must be > 0"),
        (
            ["steer", "v.safetensors", "Hi", "--layer", "1", "--gate-threshold", "1"],
            "--gate-threshold apply with --gate; pass --gate",
        ),
        (["evaluate"], "name an instruction"),
        (["evaluate", "title", "--all"], "not both"),
        (["evaluate", "title", "lowercase", "--set", "keyword=x"], "one instruction's"),
        (["evaluate", "titel"], "unknown instruction 'titel'"),
        (["evaluate", "title", "--out-dir", "p.txt"], "'p.txt' is not an existing directory"),
        (["evaluate", "title", "--out-dir", "p.txt/raw"], "cannot be made: 'p.txt' is not a"),
        (["export-gguf", "v.safetensors", "--out", "nodir/v.gguf"], "'nodir' does not exist"),
        (["export-gguf", "v.safetensors", "--out", "v.gguf", "--layers", "0"], "layer 0"),
        (["report", "v.safetensors", "--out", "r.html", "--sweep", "no.jsonl"], "'no.jsonl'"),
        (["select", "no.jsonl"], "sweep file 'no.jsonl' does not exist"),
        (["select", "full.jsonl", "--write"], "pass --vector FILE"),
        (["select", "part0.jsonl"], "hold 2 of the sweep's 4 rows"),
        (["select", "full.jsonl", "--vector", "other.safetensors"], "was run with vector"),
        (["select", "p.txt"], "'p.txt' is not a sweep file"),
        (
            ["report", "other.safetensors", "--sweep", "full.jsonl", "--out", "r.html"],
            "was run with vector",
        ),
        (["demo", "--out", "nodir/demo"], "directory 'nodir' does not exist"),
        # A count above what the split holds would silently give fewer.
        (["extract", "lowercase", "--pairs", "200", *OUT], "--pairs 200: there are only 108"),
        (["demo", "--pairs", "200", "--out", "d"], "--pairs 200: there are only 108 train pairs"),
        (
            ["sweep", "v.safetensors", "--out", "s.jsonl", "--queries", "30"],
            "--queries 30: there are only 24 validation queries",
        ),
        (["evaluate", "title", "--test-queries", "30"], "there are only 24 test queries"),
        (["evaluate", "title", "--train-pairs", "109"], "there are only 108 train pairs"),
        # A list that names an item twice would count it twice.
        (["sweep", "v.safetensors", "--out", "s.jsonl", "--modes", "add,add"], "'add' twice"),
        (["evaluate", "title", "--strengths", "1,0.5,1"], "--strengths '1,0.5,1' names '1' twice"),
        (["select", "full.jsonl", "./full.jsonl"], "sweep file 'full.jsonl' is given twice"),
        # Outputs: never an input, never a file of another kind without --force.
        (["export-gguf", "v.safetensors", "--out", "v.safetensors"], "which this command reads"),
        (["report", "v.safetensors", "--out", "v.safetensors"], "which this command reads"),
        (["sweep", "v.safetensors", "--out", "other.safetensors"], "pass --force"),
        (["extract", "lowercase", "--out", "full.jsonl"], "holds a sweep file"),
    ],
)
def test_bad_arguments_are_one_line_before_any_model_loads(in_files, capsys, argv, shown):
    line = error_line(capsys, main(argv), argv[0])
    assert shown in line, line
    assert not (in_files / "x.safetensors").exists()
    assert (in_files / "p.txt").read_text() == "Hi\n"  # a file given by mistake is untouched


def test_choices_mirror_the_library():
    from workbench.evaluation.selection import Metric
    from workbench.options import Dtype

    assert DTYPES == choices(Dtype) and set(METRICS) == set(choices(Metric))
    assert METRICS[0] == "follows_loose"  # the protocol's metric is the CLI's default


def test_list_text_shows_placeholders_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "num_bullets: an int in [1..10], default 3" in out
    assert "smollm2-135m-instruct" in out


def test_extract_text_reports_the_layers_left_out_of_gguf(in_files, tiny_dir, capsys):
    argv = ["extract", "lowercase", "--model", str(tiny_dir), "--pairs", "2", "--layers", "0-1"]
    assert main([*argv, "--out", "e.safetensors", "--gguf", "e.gguf", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "change_case:english_lowercase" in out and "left out layers [0]" in out


def test_sweep_and_select_text(in_files, capsys):
    assert main(["sweep", "v.safetensors", *SWEEP_ARGS, "--out", "t.jsonl"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote t.jsonl: 4 rows, 2 prompts") and "L1 add x1" in out
    assert main(["select", "t.jsonl"]) == 0
    assert capsys.readouterr().out.startswith("selected: ")


def test_sweep_stops_loops_unless_told_not_to(in_files, capsys):
    from workbench.evaluation.sweeps import LOOP_STOP

    for flag, recorded in [([], LOOP_STOP.record()), (["--no-loop-stop"], None)]:
        out = f"loops{len(flag)}.jsonl"
        assert main(["sweep", "v.safetensors", *SWEEP_ARGS, *flag, "--out", out, "--quiet"]) == 0
        header = json.loads(open(out, encoding="utf-8").readline())
        assert header["config"]["loop_stop"] == recorded
    capsys.readouterr()


def test_steer_uses_the_stored_selection(in_files, capsys):
    assert main(["steer", "sel.safetensors", "Hi", "--max-new-tokens", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("steering: layer 1 add weight 3, positions all") and "> Hi" in out
    # A strength alone keeps the selection's layer and mode.
    argv = ["steer", "sel.safetensors", "Hi", "--strength", "2", "--max-new-tokens", "1"]
    assert main([*argv, "--json", "--quiet"]) == 0
    steering = json.loads(capsys.readouterr().out)["steering"]
    vec = InstructionVector.load("sel.safetensors")
    assert (steering["layer"], steering["mode"]) == (1, "add")
    assert steering["weight"] == pytest.approx(2 * float(vec.diff(1).norm()))


def _steer_rows(capsys, *flags):
    argv = ["steer", "v.safetensors", "Hi", "Name a colour.", "--layer", "1", "--mode", "add"]
    assert main([*argv, "--max-new-tokens", "3", "--compare", "--json", "--quiet", *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_steer_gates_each_prompt_as_asked(in_files, capsys):
    ungated = _steer_rows(capsys)
    assert all("gate_on" not in r and r["steering"]["gate"] is None for r in ungated)
    # Every projection is below 1e9: each prompt is steered, as without a gate.
    on = _steer_rows(capsys, "--gate", "--gate-threshold", "1e9")
    assert [r["gate_on"] for r in on] == [True, True]
    assert on[0]["steering"]["gate"] == {"layer": 1, "side": "below", "threshold": 1e9}
    assert [r["response"] for r in on] == [r["response"] for r in ungated]
    # None is above it: each prompt gets the unsteered answer.
    off = _steer_rows(capsys, "--gate", "--gate-threshold", "1e9", "--gate-side", "above")
    assert [r["gate_on"] for r in off] == [False, False]
    assert [r["response"] for r in off] == [r["unsteered"] for r in off]
    assert (
        main(
            [
                "steer",
                "v.safetensors",
                "Hi",
                "--layer",
                "1",
                "--gate",
                "--max-new-tokens",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    head = capsys.readouterr().out.splitlines()[0]
    assert "; gated: steers prompts below " in head and "at layer 1 (gate on for " in head


def test_a_setting_chosen_gated_is_steered_gated_unless_told_not_to(in_files, capsys):
    vec = InstructionVector.load("sel.safetensors")
    gated = vec.with_selection({**vec.selection, "gate": {"side": "above", "threshold": 1e9}})
    gated.save("gated.safetensors")
    argv = ["steer", "gated.safetensors", "Hi", "--max-new-tokens", "2", "--json", "--quiet"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["gate_on"] is False and row["steering"]["gate"]["side"] == "above"
    assert main([*argv, "--no-gate"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert "gate_on" not in row and row["steering"]["gate"] is None
    assert main([*argv, "--strength", "2"]) == 0  # part of the setting changed: still gated
    row = json.loads(capsys.readouterr().out)
    assert row["gate_on"] is False and row["steering"]["gate"]["threshold"] == 1e9


def test_a_command_bar_draws_its_finished_line_once(capsys):
    # mininterval=0 draws every step, as a slow batch does on a real model.
    args = argparse.Namespace(quiet=False)
    assert list(progress(range(3), args, desc="steer", mininterval=0)) == [0, 1, 2]
    drawn = capsys.readouterr().err.replace("\r", "\n").splitlines()
    finished = [line for line in drawn if "3/3" in line]
    assert len(finished) == 1 and finished[0].startswith("steer: 100%"), drawn


def test_a_transfer_warns_in_one_line(in_files, capsys):
    argv = ["steer", "v.safetensors", "Hi", "--layer", "1", "--model", "seed1", "--quiet"]
    assert main([*argv, "--max-new-tokens", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["prompt"] == "Hi"
    loading, loaded, line = captured.err.splitlines()
    assert loading == "loading seed1…" and loaded.startswith("loaded seed1 in ")
    assert line.startswith("workbench steer: warning: vector was computed on")


def test_evaluate_text_with_a_steered_selection(in_files, tiny_dir, capsys, monkeypatch):
    import workbench.evaluation.selection as selection

    real = selection.select

    def pick(results, vector, *, metric, objective="accuracy"):
        # A random model rarely beats its own baseline: choose layer 1 to take the
        # steered branch.
        chosen = real(results, vector, metric=metric, objective=objective)
        evidence = chosen.evidence.assign(chosen=chosen.evidence["layer"].notna())
        term = selection.SteeringTerm(vector, layer=1, mode="add", weight=1.0)
        return selection.Selection(selection.Setting(1, "add", 1.0), term, evidence, metric)

    monkeypatch.setattr(selection, "select", pick)
    argv = ["evaluate", "concise", "--model", str(tiny_dir), "--train-pairs", "2"]
    argv += ["--val-queries", "2", "--test-queries", "2", "--layers", "1", "--modes", "add"]
    assert (
        main([*argv, "--strengths", "1", "--val-tokens", "2", "--test-tokens", "2", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    # The preset and its changes first, then the table.
    assert lines[0].startswith("preset quick (changed: layers, modes, strengths,")
    assert lines[2].startswith("| instruction | selected | no instr. |")
    assert "| concise | without: L1 add x1; with: L1 add x1 | " in out
    (row,) = [line for line in out.splitlines() if line.startswith("| concise |")]
    # Each of the four cells: accuracy [95% interval] n=prompts.
    assert len(re.findall(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\] n=2 \(clean ", row)) == 4
    effects = [line.strip() for line in out.splitlines() if "gain " in line]
    assert [line.split(":")[0] for line in effects] == ["concise, no instr.", "concise, instr."]
    assert all(re.search(r"gain [+-]\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\] n=2", x) for x in effects)
    assert all("McNemar p=" in x and "fixed " in x and "broken " in x for x in effects)


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys):
    import workbench.cli.commands as commands

    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(commands, "run_list", boom)
    assert main(["list"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "workbench list: error: unexpected RuntimeError: boom second line "
        "(set WORKBENCH_TRACEBACK=1 for the traceback)"
    )


def test_prompts_from_stdin_that_are_not_utf8_are_one_line_error(monkeypatch) -> None:
    import io
    import types

    from workbench.cli.paths import read_prompts

    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(b"caf\xe9\n")))
    with pytest.raises(InvalidArgumentError, match="cannot read prompts from stdin"):
        read_prompts([], Path("-"))
    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(b"one\n\ntwo\n")))
    assert read_prompts([], Path("-")) == ["one", "two"]
