"""``python -m experiments [--quick] [--out results]``: the reference experiments."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .reference import Config, run

QUICK = Config(
    instructions=("lowercase", "one_sentence"),
    n_train=8,
    n_val=4,
    n_test=4,
    max_new_tokens=8,
    layers=(12,),
    strengths=(1.0,),
    length_strengths=(0.0, 1.0),
    length_tokens=8,
    keywords=("ocean",),
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="a minute-long smoke run")
    parser.add_argument(
        "--instructions", default=None, help="comma-separated subset (default: all bundled)"
    )
    args = parser.parse_args()
    cfg = QUICK if args.quick else Config()
    if args.instructions:
        cfg = dataclasses.replace(cfg, instructions=tuple(args.instructions.split(",")))
    run(cfg, args.out)
    print(f"wrote {args.out / 'README.md'}")


main()
