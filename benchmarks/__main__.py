"""``python -m benchmarks [NAME ...]``: print ``BENCH <name> key=value ...`` lines."""

import sys

from .bench import run_benchmarks

run_benchmarks(sys.argv[1:])
