"""Subcommands ``sweep`` (vector -> scored results file) and ``select`` (results -> setting)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench.errors import InvalidArgumentError
from workbench.options import CHOOSE_BY, Mode, Objective, Split, choices

from .arguments import (
    check_count,
    check_layers_in,
    parse_floats,
    parse_layers,
    parse_list,
    parse_shard,
    positive_int,
)
from .distributed import add_ray_options, check_ray_options, executor_from
from .loading import check_fits, load_model_from, read_vector
from .output import emit_json, frame_records, percent, say
from .parser import add_command, add_model_options, count_option
from .paths import (
    add_force,
    check_outputs,
    distinct_files,
    input_file,
    model_input,
    path_arg,
    read_prompts,
    start_afresh,
    sweep_file,
)

# workbench.evaluation.selection.Metric's values; a test keeps the two in step.
# Loose first: the protocol's metric (IFEval's loose mode, as the reference method).
METRICS = ("follows_loose", "follows_strict")
VECTOR_MODEL = "the model the vector was computed on"


def register(sub: Any) -> None:
    """Add ``sweep`` and ``select`` to `sub`."""
    p = add_command(
        sub,
        "sweep",
        "generate, score and guard every layer x mode x strength setting (resumable)",
        "workbench sweep one_sentence.safetensors --layers 10,14,18 --queries 8 "
        "--out one_sentence.jsonl\n"
        "# a job array: shard i of 4 writes its own file; `select` merges them\n"
        "workbench sweep one_sentence.safetensors --layers 8-20 --shard 0/4 "
        "--out one_sentence.0.jsonl\n"
        "# on a Ray cluster (bare --ray: a local one on this machine's GPUs or cores)\n"
        "workbench sweep one_sentence.safetensors --layers 8-20 --out one_sentence.jsonl "
        "--ray 10.0.0.5:6379",
        description="Run the sweep; rows are appended to --out as they are scored, so the "
        "same command rerun after an interruption resumes where it stopped.",
    )
    p.add_argument("vector", type=path_arg, help="a vector file from `workbench extract`")
    p.add_argument(
        "--out", type=path_arg, required=True, metavar="FILE", help="results file (JSONL; resumed)"
    )
    p.add_argument("--layers", default=None, help="e.g. 8-20 or 10,14 (default: the vector's)")
    p.add_argument(
        "--modes",
        default="add,project",
        help="add, project, clamp, ablate (default: %(default)s)",
    )
    p.add_argument(
        "--strengths", default="0.25,0.5,1", help="x each mode's default (default: %(default)s)"
    )
    p.add_argument("--no-baseline", action="store_true", help="leave out the unsteered rows")
    p.add_argument(
        "--no-loop-stop",
        action="store_true",
        help="decode looping answers to the budget (default: stop them, count them degenerate)",
    )
    p.add_argument("--split", default="validation", choices=choices(Split))
    p.add_argument(
        "--queries", type=positive_int, default=None, metavar="N", help="first N of the split"
    )
    p.add_argument(
        "--prompts-file",
        type=path_arg,
        default=None,
        metavar="FILE",
        help="own prompts, one a line",
    )
    count_option(p, "--max-new-tokens", 64)
    count_option(p, "--batch-size", 32)
    p.add_argument("--shard", default=None, metavar="I/N", help="run part I of N, e.g. 0/4")
    add_ray_options(p)
    add_model_options(p, None, VECTOR_MODEL)
    add_force(p)
    p.set_defaults(func=run_sweep)

    p = add_command(
        sub,
        "select",
        "choose the best setting from sweep results (optionally store it in the vector)",
        "workbench select one_sentence.jsonl\n"
        "workbench select one_sentence.jsonl --vector one_sentence.safetensors --write",
        description="Highest clean accuracy (or accuracy, with --select-by accuracy) among "
        "settings whose degenerate share is not above the unsteered baseline's; ties go to "
        "the baseline, then the lower layer and strength.",
    )
    p.add_argument("sweeps", type=path_arg, nargs="+", help="results file(s) of one sweep")
    p.add_argument("--vector", type=path_arg, default=None, help="the vector the sweep used")
    p.add_argument("--write", action="store_true", help="store the selection in --vector")
    p.add_argument("--metric", default=CHOOSE_BY[0], choices=METRICS, help="(default: %(default)s)")
    p.add_argument(
        "--select-by",
        default=CHOOSE_BY[1],
        choices=choices(Objective),
        help="what is maximised; clean = follows and not degenerate (default: %(default)s)",
    )
    p.set_defaults(func=run_select)


def setting_label(layer: Any, mode: Any, strength: Any) -> str:
    """``'unsteered'``, ``'L14 add x0.5'`` or ``'L14 ablate'``.

    Example:
        >>> setting_label(14, "project", 1.0), setting_label(None, None, None)
        ('L14 project x1', 'unsteered')
    """
    if layer is None or layer != layer:  # None, NaN or pandas' NA
        return "unsteered"
    if mode == "ablate" or strength is None or strength != strength:
        return f"L{int(layer)} {mode}"
    return f"L{int(layer)} {mode} x{float(strength):g}"


def evidence_lines(evidence: Any) -> list[str]:
    """`summarize`'s (or a selection's) table as aligned text lines, the chosen row marked."""
    lines = [f"  {'setting':<22} {'n':>4} {'accuracy':>9} {'clean':>6} {'degenerate':>11}"]
    for row in evidence.to_dict("records"):
        label = setting_label(row["layer"], row["mode"], row["strength"])
        mark = "  <- chosen" if row.get("chosen") else ""
        mark += "" if row.get("eligible", True) else "  (too degenerate)"
        lines.append(
            f"  {label:<22} {row['n']:>4} {percent(row['accuracy']):>9} "
            f"{percent(row['clean_accuracy']):>6} {percent(row['degenerate_share']):>11}{mark}"
        )
    return lines


def check_swept(vec: Any, vector_path: Path, table: Any) -> None:
    """Refuse a merged sweep table that was run with another vector than the file's."""
    from workbench.errors import VectorMismatchError
    from workbench.evaluation.sweep_files import check_table_vector

    try:
        check_table_vector(table, vec)
    except VectorMismatchError as e:
        raise VectorMismatchError(f"vector {str(vector_path)!r}: {e}") from e


def run_sweep(args: argparse.Namespace) -> None:
    """A vector -> a results file of scored rows, one per (setting, prompt)."""
    from workbench.evaluation.selection import summarize
    from workbench.evaluation.sweeps import LOOP_STOP, sweep
    from workbench.vectors.pairs import base_queries

    input_file(args.vector, "vector file")
    inputs = [("vector file", args.vector), ("prompts file", args.prompts_file)]
    replaced = check_outputs(args, [*inputs, *model_input(args)], [("--out", args.out, "sweep")])
    shard = parse_shard(args.shard) if args.shard is not None else None
    layers = parse_layers(args.layers) if args.layers is not None else None
    modes = parse_list(args.modes, "--modes", choices(Mode))
    strengths = parse_floats(args.strengths, "--strengths")
    vec = read_vector(args.vector)
    layers = layers if layers is not None else list(vec.layers)
    check_layers_in(layers, vec.layers)
    if args.prompts_file is not None:
        if args.queries is not None:
            raise InvalidArgumentError("--queries picks bundled queries; not with --prompts-file")
        prompts = read_prompts([], args.prompts_file)
    else:
        queries = base_queries(args.split)
        check_count(args.queries, len(queries), "--queries", f"{args.split} queries")
        prompts = [q.text for q in queries[: args.queries]]
    check_ray_options(args)
    model = load_model_from(args, vec.model_name)
    check_fits(vec, args.vector, model)
    start_afresh(replaced)
    with executor_from(args) as executor:
        table = sweep(
            model,
            vec,
            prompts,
            layers=layers,
            modes=modes,
            strengths=strengths,
            baseline=not args.no_baseline,
            max_new_tokens=args.max_new_tokens,
            out=args.out,
            shard=shard,
            batch_size=args.batch_size,
            progress=not args.quiet,
            loop_stop=None if args.no_loop_stop else LOOP_STOP,
            executor=executor,
        )
    if args.json:
        for row in frame_records(table):
            emit_json(row)
        return
    part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    say(f"wrote {args.out}: {len(table)} rows{part}, {len(prompts)} prompts")
    say(f"  accuracy: {METRICS[0]}; clean: follows and not degenerate")
    for line in evidence_lines(summarize(table, METRICS[0])):
        say(line)


def run_select(args: argparse.Namespace) -> None:
    """Results file(s) -> the chosen setting, optionally stored in the vector file."""
    from workbench.evaluation.selection import select
    from workbench.evaluation.sweep_files import merge_sweeps

    for path in args.sweeps:
        sweep_file(path)
    distinct_files(args.sweeps, "sweep file")
    if args.write and args.vector is None:
        raise InvalidArgumentError("--write stores the selection in --vector; pass --vector FILE")
    vec = None
    if args.vector is not None:
        vec = read_vector(args.vector)
    if args.write:
        # The vector is rewritten in place (that is --write's purpose), so the sweep
        # files are the inputs it must not be.
        inputs = [("sweep file", path) for path in args.sweeps]
        check_outputs(args, inputs, [("--vector", args.vector, "vector")])
    # Refuses missing shards and unfinished runs, naming what is missing.
    table = merge_sweeps(args.sweeps)
    if vec is not None:
        check_swept(vec, args.vector, table)
    chosen = select(table, vec, metric=args.metric, objective=args.select_by)
    written = None
    if args.write:
        written = vec.with_selection(chosen.record()).save(args.vector)
    if args.json:
        emit_json(
            {
                "selection": chosen.record(),
                "label": setting_label(*_setting(chosen)),
                "evidence": frame_records(chosen.evidence),
                "written": written,
            }
        )
        return
    record = chosen.record()
    coefficient = (
        "" if record["coefficient"] is None else f", coefficient {record['coefficient']:.4g}"
    )
    gate = record.get("gate")
    if gate is not None:
        at = "the default threshold" if gate["threshold"] is None else f"{gate['threshold']:.4g}"
        coefficient += f", gated ({gate['side']} {at})"
    say(
        f"selected: {setting_label(*_setting(chosen))}{coefficient} "
        f"({args.metric} {percent(record['accuracy'])}, clean "
        f"{percent(record['clean_accuracy'])}, degenerate "
        f"{percent(record['degenerate_share'])}, n={record['n']})"
    )
    for line in evidence_lines(chosen.evidence):
        say(line)
    if written is not None:
        say(f"wrote the selection into {written}")


def _setting(chosen: Any) -> tuple[Any, Any, Any]:
    s = chosen.setting
    return s.layer, s.mode, s.strength
