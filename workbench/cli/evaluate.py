"""Subcommand ``evaluate``: the four-setting table, per bundled instruction."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from workbench.errors import InvalidArgumentError
from workbench.options import Mode, Objective, Preset, choices

from .arguments import (
    check_count,
    check_distinct,
    check_model_layers,
    parse_floats,
    parse_layers,
    parse_list,
    parse_settings,
    positive_int,
)
from .distributed import add_ray_options, check_ray_options, executor_from
from .loading import load_model_from
from .output import emit_json, say
from .parser import DEFAULT_MODEL, add_command, add_model_options, count_option
from .paths import (
    add_force,
    check_outputs,
    input_file,
    make_output_dir,
    model_input,
    output_dir,
    path_arg,
    start_afresh,
)
from .sweep import METRICS, setting_label

# The headings of the evaluation table's columns (protocol.SETTINGS, in its order).
_HEADS = ("no instr.", "no instr. + steer", "instr.", "instr. + steer")


def register(sub: Any) -> None:
    """Add ``evaluate`` to `sub`."""
    p = add_command(
        sub,
        "evaluate",
        "the four-setting table: (no) instruction x (no) steering, per bundled instruction",
        "workbench evaluate one_sentence\n"
        "workbench evaluate --preset paper lowercase --json\n"
        "workbench evaluate --test-file my_ifeval.jsonl --preset quick --out-dir eval_raw",
        description="For each instruction: a vector from train pairs, a setting selected per "
        "condition (without and with the instruction in the prompt) on validation queries, "
        "then test queries without and with the instruction, each unsteered and steered, "
        "with 95% intervals and paired effects. With --out-dir the raw rows are kept and a "
        "rerun resumes.",
    )
    p.add_argument("instructions", nargs="*", metavar="INSTRUCTION", help="bundled names")
    p.add_argument("--all", action="store_true", help="every bundled instruction")
    p.add_argument(
        "--test-file",
        type=path_arg,
        default=None,
        metavar="FILE.jsonl",
        help="IFEval-format test rows instead of the bundled test split (its instructions "
        "run unless some are named)",
    )
    p.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="with --test-file: leave out (and list) ids no bundled vector steers",
    )
    p.add_argument(
        "--val-file",
        type=path_arg,
        default=None,
        metavar="FILE.jsonl",
        help="IFEval-format validation rows instead of the bundled validation split",
    )
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--preset",
        default="quick",
        choices=choices(Preset),
        help="paper: the reference code's protocol; quick: sized for a laptop CPU "
        "(default: %(default)s); any option below changes one of its values",
    )
    for flag, what in [
        ("--train-pairs", "train pairs"),
        ("--val-queries", "validation queries"),
        ("--test-queries", "test queries"),
    ]:
        p.add_argument(
            flag,
            type=positive_int,
            default=None,
            metavar="N",
            help=f"{what} (default: the whole split)",
        )
    p.add_argument(
        "--layers", default=None, help="(default: range(n_layers // 5, n_layers, layer step))"
    )
    p.add_argument(
        "--layer-step",
        type=positive_int,
        default=None,
        metavar="N",
        help="(default: the preset's, paper 2, quick 4)",
    )
    p.add_argument("--modes", default=None, help="(default: the preset's)")
    p.add_argument("--strengths", default=None, help="(default: the preset's)")
    p.add_argument("--metric", default=None, choices=METRICS, help="(default: follows_loose)")
    p.add_argument(
        "--select-by",
        default=None,
        choices=choices(Objective),
        help="what selection maximises (default: the preset's)",
    )
    for flag, what in [
        ("--val-tokens", "new tokens per validation answer"),
        ("--val-tokens-long", "the same, for JSON, multiple sections and verbose"),
        ("--test-tokens", "new tokens per test answer"),
    ]:
        p.add_argument(
            flag,
            type=positive_int,
            default=None,
            metavar="N",
            help=f"{what} (default: the preset's)",
        )
    count_option(p, "--batch-size", 48)
    p.add_argument(
        "--gate",
        action="store_true",
        help="gate every steered term: steer a prompt only if its last token's projection "
        "is below the midway between the vector's mean with- and without-instruction "
        "projections (workbench.steering.gates)",
    )
    p.add_argument(
        "--out-dir",
        type=path_arg,
        default=None,
        help="keep raw rows and vectors here (made if missing)",
    )
    add_ray_options(p)
    add_model_options(p, DEFAULT_MODEL, DEFAULT_MODEL)
    add_force(p)
    p.set_defaults(func=run_evaluate)


def _out_files(name: str) -> dict[str, str]:
    """The files --out-dir holds for instruction `name`, and the kind of each."""
    from workbench.evaluation.protocol import RAW_PARTS, raw_file

    sweeps = {raw_file(name, part): "sweep" for part in RAW_PARTS}
    # The train vector the rows were made with, and its record (JSON, no kind of its own).
    kept = {f"{name}.vector.safetensors": "vector", f"{name}.vector.json": "other"}
    return {**sweeps, **kept, f"{name}.safetensors": "vector"}


def _check_out_dir(args: argparse.Namespace, names: list[str]) -> tuple[bool, list]:
    """Whether --out-dir exists (or is not given), and the files in it that --force
    lets the run replace; a missing --out-dir is made once the model has loaded."""
    if args.out_dir is None:
        return True, []
    if not output_dir(args.out_dir, "--out-dir", missing_ok=True):
        return False, []  # nothing in it to check
    outputs = [
        ("--out-dir", args.out_dir / file, kind)
        for name in names
        for file, kind in _out_files(name).items()
    ]
    inputs = [*model_input(args), ("--test-file", args.test_file), ("--val-file", args.val_file)]
    return True, check_outputs(args, inputs, outputs)


def _evaluate_one(
    model: Any,
    name: str,
    values: dict,
    config: Any,
    args: Any,
    test_items: Any = None,
    val_items: Any = None,
    executor: Any = None,
) -> dict:
    """The protocol for one instruction, as the JSON row `evaluate` prints."""
    from workbench.evaluation.protocol import evaluate_instruction
    from workbench.vectors.pairs import instruction

    result = evaluate_instruction(
        model,
        instruction(name, **values),
        config,
        raw_dir=args.out_dir,
        progress=not args.quiet,
        test_items=test_items,
        val_items=val_items,
        executor=executor,
    )
    if args.out_dir is not None:
        result.vector.save(args.out_dir / f"{name}.safetensors", force=args.force)
    return {
        "instruction": name,
        "instruction_id": result.instruction.instruction_id,
        "kwargs": dict(result.instruction.kwargs),
        "preset": result.config.preset,
        "config": result.config.record(),
        "layers": list(result.config.layers_for(model.cfg.n_layers)),
        "selected": {c: _selected_json(sel.setting) for c, sel in result.selections.items()},
        "validation": {c: sel.record() for c, sel in result.selections.items()},
        "test": {k: _setting_json(v) for k, v in result.test.items()},
        "effects": {c: _effect_json(e) for c, e in result.effects.items()},
    }


def _selected_json(s: Any) -> dict[str, Any]:
    """A selected `Setting` as JSON, with its table label."""
    label = setting_label(s.layer, s.mode, s.strength)
    return {"layer": s.layer, "mode": s.mode, "strength": s.strength, "label": label}


def _setting_json(summary: Any) -> dict[str, Any]:
    """A `SettingSummary` as JSON: its fields, the intervals as ``[low, high]`` lists."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(summary).items()
    }


def _effect_json(effect: Any) -> dict[str, Any]:
    """An `Effect` as JSON: ``{gain, ci95: [low, high], p_value, fixed, broken, n}``."""
    return {**dataclasses.asdict(effect), "ci95": list(effect.ci95)}


def _interval(value: float, ci95: Any, n: int | None = None, sign: bool = False) -> str:
    """``0.42 [0.25, 0.61] n=24``; with `sign` a leading + on a gain.

    Example:
        >>> _interval(0.4167, (0.2473, 0.6082), 24), _interval(0.0, (-0.2, 0.2), sign=True)
        ('0.42 [0.25, 0.61] n=24', '+0.00 [-0.20, 0.20]')
    """
    number = f"{value:+.2f}" if sign else f"{value:.2f}"
    count = "" if n is None else f" n={n}"
    return f"{number} [{ci95[0]:.2f}, {ci95[1]:.2f}]{count}"


def _table_row(name: str, result: dict[str, Any]) -> str:
    """One instruction's line of the text table: the selections, then each setting."""
    from workbench.evaluation.protocol import SETTINGS
    from workbench.steering.gates import gate_count_line

    cells = []
    for k in SETTINGS:
        t = result["test"][k]
        gate = "" if t.get("gate_on") is None else f", {gate_count_line(t['gate_on'], t['n'])}"
        cells.append(
            f"{_interval(t['accuracy'], t['ci95'], t['n'])} "
            f"(clean {t['clean_accuracy']:.2f}, degen. {t['degenerate']:.2f}{gate})"
        )
    chosen = result["selected"]
    label = f"without: {chosen['without']['label']}; with: {chosen['with']['label']}"
    return f"| {name} | {label} | {' | '.join(cells)} |"


def _effect_lines(name: str, effects: dict[str, dict[str, Any]]) -> list[str]:
    """One line per condition: the gain of "+steer" over plain, its interval and test."""
    heads = {"without": "no instr.", "with": "instr."}
    return [
        f"  {name}, {heads[c]}: gain {_interval(e['gain'], e['ci95'], e['n'], sign=True)}, "
        f"fixed {e['fixed']}, broken {e['broken']}, McNemar p={e['p_value']:.3g}"
        for c, e in effects.items()
    ]


def _own_tests(args: argparse.Namespace, names: list[str]) -> tuple[list[str], Any]:
    """With --test-file: the instructions to run and their test rows; else `names`, None."""

    if args.skip_unsupported and args.test_file is None and args.val_file is None:
        raise InvalidArgumentError(
            "--skip-unsupported applies to --test-file and --val-file; pass one"
        )
    if args.test_file is None:
        return names, None
    if args.test_queries is not None:
        raise InvalidArgumentError(
            "--test-queries counts the bundled test split; with --test-file every row of "
            "the file is used"
        )
    if args.all:
        raise InvalidArgumentError(
            "--all runs every bundled instruction on the bundled test split; with "
            "--test-file the file's rows choose the instructions (name some for a subset)"
        )
    path, read = _read_rows(args, "--test-file")
    missing = [n for n in names if n not in read.groups]
    if missing:
        raise InvalidArgumentError(
            f"--test-file {str(path)!r} has no rows for {missing}; it holds {list(read.groups)}"
        )
    return (names or list(read.groups)), read.groups


# Flags that change one field of the preset's `ProtocolConfig`, and the field.
_CONFIG_FLAGS = {
    "train_pairs": "train_pairs",
    "val_queries": "val_queries",
    "test_queries": "test_queries",
    "layer_step": "layer_step",
    "metric": "metric",
    "select_by": "select_by",
    "val_tokens": "val_tokens",
    "val_tokens_long": "val_tokens_long",
    "test_tokens": "test_tokens",
}


def _config_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The `ProtocolConfig` fields the flags given change (each checked by flag name)."""
    from workbench.vectors.pairs import base_queries

    changes = {
        field: getattr(args, dest)
        for dest, field in _CONFIG_FLAGS.items()
        if getattr(args, dest) is not None
    }
    for flag, n, split, what in [
        ("--train-pairs", args.train_pairs, "train", "train pairs"),
        ("--val-queries", args.val_queries, "validation", "validation queries"),
        ("--test-queries", args.test_queries, "test", "test queries"),
    ]:
        # One pair per base query of the split.
        check_count(n, len(base_queries(split)), flag, what)
    if args.layers is not None:
        changes["layers"] = tuple(parse_layers(args.layers))
    if args.modes is not None:
        changes["modes"] = tuple(parse_list(args.modes, "--modes", choices(Mode)))
    if args.strengths is not None:
        changes["strengths"] = tuple(parse_floats(args.strengths, "--strengths"))
    changes["batch_size"] = args.batch_size
    if args.gate:
        changes["gate"] = True
    return changes


def _read_rows(args: argparse.Namespace, flag: str) -> tuple[Any, Any]:
    """The path and the rows of `flag`'s file; ids no vector steers are refused, or
    left out and listed on stderr with --skip-unsupported."""
    from workbench.evaluation.ifeval_rows import read_ifeval_rows

    path = input_file(getattr(args, flag[2:].replace("-", "_")), flag)
    read = read_ifeval_rows(path, skip_unsupported=args.skip_unsupported)
    if read.skipped:
        print(
            f"workbench evaluate: {flag}: left out ids no bundled vector steers (rows): "
            f"{read.skipped}",
            file=sys.stderr,
            flush=True,
        )
    return path, read


def _own_validation(args: argparse.Namespace, names: list[str]) -> Any:
    """With --val-file: its rows per instruction (each named one must have some)."""

    if args.val_file is None:
        return None
    if args.val_queries is not None:
        raise InvalidArgumentError(
            "--val-queries counts the bundled validation split; with --val-file every row "
            "of the file is used"
        )
    path, read = _read_rows(args, "--val-file")
    missing = [n for n in names if n not in read.groups]
    if missing:
        raise InvalidArgumentError(
            f"--val-file {str(path)!r} has no rows for {missing}; it holds {list(read.groups)}"
        )
    return read.groups


def run_evaluate(args: argparse.Namespace) -> None:
    """The four-setting table for the named (or all) bundled instructions."""
    from workbench.evaluation.protocol import ProtocolConfig
    from workbench.vectors.pairs import bundled_instruction, instruction_names

    if args.all and args.instructions:
        raise InvalidArgumentError("name instructions or pass --all, not both")
    names = instruction_names() if args.all else list(args.instructions)
    names, groups = _own_tests(args, names)
    if not names:
        raise InvalidArgumentError("name an instruction (see `workbench list`) or pass --all")
    check_distinct(names, "instruction")
    for name in names:
        bundled_instruction(name)  # an unknown name fails here, before the model loads
    if args.set and len(names) != 1:
        raise InvalidArgumentError(f"--set fills one instruction's placeholders; got {names}")
    values = parse_settings(args.set, names[0]) if args.set else {}
    changes = _config_changes(args)
    val_groups = _own_validation(args, names)
    config = ProtocolConfig.from_preset(args.preset, **changes)
    made, replaced = _check_out_dir(args, names)
    check_ray_options(args)
    model = load_model_from(args)
    if config.layers is not None:
        check_model_layers(list(config.layers), model.cfg.n_layers)
    if not made:
        make_output_dir(args.out_dir, "--out-dir")
    start_afresh(replaced)
    if not args.json:
        own = {"own_val": args.val_file is not None, "own_test": args.test_file is not None}
        say(config.describe(model.cfg.n_layers, **own) + "\n")
        say(f"| instruction | selected | {' | '.join(_HEADS)} |")
        say("|" + " --- |" * (2 + len(_HEADS)))
    effects = []
    with executor_from(args) as executor:
        for name in names:
            own = None if groups is None else groups[name]
            val = None if val_groups is None else val_groups[name]
            result = _evaluate_one(model, name, values, config, args, own, val, executor)
            if args.json:
                emit_json(result)
                continue
            say(_table_row(name, result))
            effects += _effect_lines(name, result["effects"])
    if not args.json:
        say(
            f"\n{config.metric} accuracy on test queries [95% Wilson interval] n=prompts; "
            "clean = follows and not degenerate; degen. = degenerate share"
        )
        say("\nsteered minus unsteered on the same prompts [95% paired interval, Newcombe]:")
        for line in effects:
            say(line)
