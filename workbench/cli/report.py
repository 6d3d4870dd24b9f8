"""Subcommand ``report``: one self-contained HTML page for a vector and its sweep."""

from __future__ import annotations

import argparse
from typing import Any

from .loading import check_fits, load_model_from, read_vector
from .output import emit_json, say
from .parser import add_command, add_model_options
from .paths import (
    add_force,
    check_outputs,
    distinct_files,
    input_file,
    model_input,
    path_arg,
    sweep_file,
)
from .sweep import check_swept


def register(sub: Any) -> None:
    """Add ``report`` to `sub`."""
    p = add_command(
        sub,
        "report",
        "write an HTML page with a vector's figures (and its sweep's, with --sweep)",
        "workbench report one_sentence.safetensors --sweep one_sentence.jsonl --out one_sentence.html\n"
        "# with a model the page adds residual-norm and held-out projection figures\n"
        "workbench report one_sentence.safetensors --out one_sentence.html --model smollm2-135m-instruct",
    )
    p.add_argument("vector", type=path_arg, help="a vector file from `workbench extract`")
    p.add_argument("--sweep", type=path_arg, nargs="+", default=None, help="sweep file(s) / shards")
    p.add_argument("--out", type=path_arg, required=True, metavar="FILE", help="output .html file")
    p.add_argument("--title", default=None, help="page title (default: names the vector)")
    add_model_options(p, None, "none; the model figures are left out")
    add_force(p)
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> None:
    """A vector (and sweep) -> an HTML page."""
    from workbench.evaluation.sweep_files import merge_sweeps

    input_file(args.vector, "vector file")
    sweeps = args.sweep or []
    for path in sweeps:
        sweep_file(path)
    distinct_files(sweeps, "--sweep")
    inputs = [("vector file", args.vector), *(("sweep file", p) for p in sweeps)]
    check_outputs(args, [*inputs, *model_input(args)], [("--out", args.out, "html")])
    vec = read_vector(args.vector)
    table = merge_sweeps(args.sweep) if args.sweep else None
    if table is not None:
        check_swept(vec, args.vector, table)
    model = None
    if args.model is not None:
        model = load_model_from(args)
        check_fits(vec, args.vector, model)
    # analyses is a sibling package of the same distribution, imported only here
    # (plotly is not needed by any other subcommand).
    from analyses.report import report

    path = report(vec, sweep=table, out=args.out, model=model, title=args.title, force=args.force)
    if args.json:
        emit_json({"path": path, "vector": args.vector, "sweep": args.sweep, "model": args.model})
        return
    say(f"wrote {path}")
