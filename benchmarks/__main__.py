"""``python -m benchmarks [NAME ...] [options]``: print ``BENCH <name> key=value ...`` lines.

With no names it runs the quick set (`bench.QUICK`, minutes); ``--full`` runs every
benchmark. ``--list`` names the benchmarks without running any. Options (for ``generate`` and
``generate_scale``): ``--device cuda``, ``--config llama-3.2-1b`` (a random-weight
model of that shape instead of the embedded one), ``--dtype bfloat16``,
``--tokenizer DIR``, ``--repeats N``, ``--new-tokens N``, ``--prompts N``,
``--scale-tokens N``. A bad request is refused before the first benchmark starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from workbench.options import Dtype, choices

from .bench import BENCHMARKS, TAKES_OPTIONS, check_request, run_benchmarks

DTYPES = choices(Dtype)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "names", nargs="*", help=f"any of {sorted(BENCHMARKS)}; default the quick set"
    )
    parser.add_argument("--list", action="store_true", help="name the benchmarks and stop")
    parser.add_argument(
        "--full", action="store_true", help="every benchmark (default: the quick set)"
    )
    parser.add_argument("--device", help="e.g. cpu (default), cuda")
    parser.add_argument("--config", help="llama-3.2-1b or tiny: random weights of that shape")
    parser.add_argument("--dtype", choices=DTYPES, help="(default: float32)")
    parser.add_argument("--tokenizer", help="tokenizer directory for --config models")
    for name in ("repeats", "new-tokens", "prompts", "scale-tokens"):
        parser.add_argument(f"--{name}", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, check the request, then run it (or, with ``--list``, name the benchmarks)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    names, listing, full = args.pop("names"), args.pop("list"), args.pop("full")
    options = {k: v for k, v in args.items() if v is not None}
    try:
        chosen = check_request(names, options, full)
    except ValueError as e:
        parser.error(str(e))
    if listing:
        for name in chosen:
            takes = " (takes the options)" if name in TAKES_OPTIONS else ""
            print(f"{name}{takes}")
        return 0
    run_benchmarks(chosen, options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
