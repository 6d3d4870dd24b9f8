"""Command line: ``python -m workbench demo|bench``."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compute an instruction vector and steer with it")
    demo.add_argument("--out", type=Path, default=Path("demo_output"))
    demo.add_argument("--model", default="smollm2-135m-instruct")
    demo.add_argument("--pairs", type=int, default=64)
    bench = sub.add_parser("bench", help="print BENCH lines")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, model_name=args.model, n_pairs=args.pairs)
    elif args.command == "bench":
        from .bench import run_benchmarks

        run_benchmarks(args.names)
    return 0
