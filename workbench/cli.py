"""Command line: ``python -m workbench demo|extract|bench``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _layers(text: str) -> list[int]:
    """Parse ``"10,12,14"`` or ``"8-20"`` into layer indices."""
    layers: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            layers.extend(range(int(lo), int(hi) + 1))
        else:
            layers.append(int(part))
    return layers


def _extract(args: argparse.Namespace) -> None:
    from .models import load_model
    from .pairs import instruction, make_pairs
    from .vectors import compute_instruction_vector

    values: dict[str, str | int] = {}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        values[name] = int(value) if value.isdigit() else value
    instr = instruction(args.instruction, **values)
    model = load_model(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    pairs = make_pairs(instr, split=args.split, n=args.pairs)
    vec = compute_instruction_vector(
        model,
        pairs,
        layers=_layers(args.layers) if args.layers else None,
        batch_size=args.batch_size,
        keep_pair_diffs=args.keep_pair_diffs,
        progress=True,
    )
    path = vec.save(args.out)
    print(f"wrote {path}: {vec.instruction_id} {dict(vec.kwargs)} from {vec.n_pairs} pairs")
    if args.gguf:
        layers = [layer for layer in vec.layers if layer > 0]
        print(f"wrote {vec.to_gguf(args.gguf, layers=layers)} (llama.cpp control vector)")


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
    ext.add_argument("--backend", default="bridge", choices=["bridge", "hooked"])
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
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, model_name=args.model, n_pairs=args.pairs)
    elif args.command == "extract":
        _extract(args)
    elif args.command == "bench":
        from .bench import run_benchmarks

        run_benchmarks(args.names)
    return 0
