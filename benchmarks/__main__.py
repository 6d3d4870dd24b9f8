"""``python -m benchmarks [NAME ...] [options]``: print ``BENCH <name> key=value ...`` lines.

Options (for ``generate`` and ``generate_scale``): ``--device cuda``, ``--config
llama-3.2-1b`` (a random-weight model of that shape instead of the embedded one),
``--dtype bfloat16``, ``--tokenizer DIR``, ``--repeats N``, ``--new-tokens N``,
``--prompts N``, ``--scale-tokens N``.
"""

from __future__ import annotations

import argparse

from .bench import BENCHMARKS, run_benchmarks

parser = argparse.ArgumentParser(prog="python -m benchmarks")
parser.add_argument("names", nargs="*", help=f"any of {sorted(BENCHMARKS)}; default all")
parser.add_argument("--device")
parser.add_argument("--config", help="llama-3.2-1b or tiny: random weights of that shape")
parser.add_argument("--dtype", help="float32 (default), bfloat16, float16")
parser.add_argument("--tokenizer", help="tokenizer directory for --config models")
for name in ("repeats", "new-tokens", "prompts", "scale-tokens"):
    parser.add_argument(f"--{name}", type=int)
args = vars(parser.parse_args())
names = args.pop("names")
run_benchmarks(names, {k: v for k, v in args.items() if v is not None})
