"""``python -m experiments [--smoke] [--preset quick] [--instructions a,b] [--out results]
[--readme README.md]``:
the reference experiments (`experiments.reference`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .reference import SMOKE, Config, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--preset", default="quick", choices=["paper", "quick"])
    parser.add_argument("--smoke", action="store_true", help="a minute-long smoke run")
    parser.add_argument(
        "--instructions", default=None, help="comma-separated subset (default: all but keywords)"
    )
    parser.add_argument("--keywords", default=None, help="comma-separated words (default: ocean)")
    parser.add_argument(
        "--readme", type=Path, default=None, help="also rewrite the results table in this file"
    )
    args = parser.parse_args()
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), preset=args.preset)
    if args.instructions:
        cfg = dataclasses.replace(cfg, instructions=tuple(args.instructions.split(",")))
    if args.keywords:
        cfg = dataclasses.replace(cfg, keywords=tuple(args.keywords.split(",")))
    if args.readme is not None:
        # Checked now, not after hours of work.
        from .report import splice

        try:
            splice(args.readme.read_text(encoding="utf-8"), "")
        except (OSError, ValueError) as e:
            parser.error(f"--readme {str(args.readme)!r}: {e}")
    summary = run(cfg, args.out)
    print(f"wrote {args.out / 'README.md'}")
    if args.readme is not None:
        from workbench.files import write_atomic

        from .report import render_short, splice

        text = splice(args.readme.read_text(encoding="utf-8"), render_short(summary))
        write_atomic(args.readme, text.encode())
        print(f"rewrote the results table in {args.readme}")


main()
