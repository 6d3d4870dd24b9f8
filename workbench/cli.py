"""Command line: ``python -m workbench demo|extract|bench``.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .errors import InvalidArgumentError, WorkbenchError
from .options import Backend, choices

_LAYER_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def _layers(text: str) -> list[int]:
    """Parse ``"10,12,14"`` or ``"8-20"`` into layer indices.

    Example:
        >>> _layers("8-10,14")
        [8, 9, 10, 14]
        >>> _layers("a-b")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --layers 'a-b': 'a-b' is not a layer (e.g. 14) or an ascending range (e.g. 8-20)
    """
    layers: list[int] = []
    for part in text.split(","):
        match = _LAYER_PART.match(part.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise InvalidArgumentError(
                f"--layers {text!r}: {part!r} is not a layer (e.g. 14) or an ascending range "
                "(e.g. 8-20)"
            )
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        layers.extend(range(lo, hi + 1))
    return layers


def _extract(args: argparse.Namespace) -> None:
    from .extraction import compute_instruction_vector
    from .models import load_model
    from .pairs import instruction, make_pairs

    values: dict[str, str | int] = {}
    for item in args.set:
        if "=" not in item:
            raise InvalidArgumentError(f"--set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        values[name] = int(value) if value.isdigit() else value
    # Everything that can be checked without the model is checked before loading it.
    pairs = make_pairs(instruction(args.instruction, **values), split=args.split, n=args.pairs)
    layers = _layers(args.layers) if args.layers is not None else None
    model = load_model(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    vec = compute_instruction_vector(
        model,
        pairs,
        layers=layers,
        batch_size=args.batch_size,
        keep_pair_diffs=args.keep_pair_diffs,
        progress=True,
    )
    path = vec.save(args.out)
    print(f"wrote {path}: {vec.instruction_id} {dict(vec.kwargs)} from {vec.n_pairs} pairs")
    if args.gguf:
        export = vec.to_gguf(args.gguf)
        left_out = f"; left out layers {list(export.skipped)}" if export.skipped else ""
        print(f"wrote {export.path} (llama.cpp control vector{left_out})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="compute an instruction vector and steer with it")
    demo.add_argument("--out", type=Path, default=Path("demo_output"))
    demo.add_argument("--model", default="smollm2-135m-instruct")
    demo.add_argument("--pairs", type=int, default=64)

    ext = sub.add_parser("extract", help="compute an instruction vector and save it")
    ext.add_argument("instruction", help="a bundled instruction name, e.g. lowercase")
    ext.add_argument("--out", type=Path, required=True, help="output .safetensors path")
    ext.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="placeholder value, e.g. --set keyword=ocean",
    )
    ext.add_argument("--model", default="smollm2-135m-instruct")
    ext.add_argument("--backend", default="bridge", choices=choices(Backend))
    ext.add_argument("--device", default=None)
    ext.add_argument("--dtype", default=None)
    ext.add_argument("--split", default="train")
    ext.add_argument("--pairs", type=int, default=None, help="at most this many pairs")
    ext.add_argument("--layers", default=None, help="e.g. 8-20 or 10,14 (default: all)")
    ext.add_argument("--batch-size", type=int, default=16)
    ext.add_argument("--keep-pair-diffs", action="store_true")
    ext.add_argument("--gguf", type=Path, default=None, help="also write a llama.cpp file")

    bench = sub.add_parser("bench", help="print BENCH lines")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")

    args = parser.parse_args(argv)
    try:
        _run(args)
    except WorkbenchError as e:
        print(f"workbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, model_name=args.model, n_pairs=args.pairs)
    elif args.command == "extract":
        _extract(args)
    elif args.command == "bench":
        try:
            from benchmarks.bench import run_benchmarks
        except ImportError as e:
            raise WorkbenchError(
                "the benchmarks live in the source checkout's benchmarks/ folder; run this "
                f"from the repository root (or use `make bench`): {e}"
            ) from e
        run_benchmarks(args.names)
