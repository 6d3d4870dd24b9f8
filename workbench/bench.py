"""Benchmarks printing ``BENCH <name> key=value ...`` lines (ratios from one run)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .embedded import CACHE_ENV


def emit(name: str, **values: float | int | str) -> None:
    fields = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"BENCH {name} {fields}", flush=True)


def bench_load() -> None:
    """First load (GGUF dequantization + cache write) vs cached load, per backend."""
    from .models import load_model

    for backend in ("bridge", "hooked"):
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get(CACHE_ENV)
            os.environ[CACHE_ENV] = str(Path(tmp))
            try:
                t0 = time.perf_counter()
                load_model(backend=backend)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                load_model(backend=backend)
                cached = time.perf_counter() - t0
            finally:
                if old is None:
                    os.environ.pop(CACHE_ENV)
                else:
                    os.environ[CACHE_ENV] = old
        emit("load", backend=backend, first_s=first, cached_s=cached, ratio=first / cached)


BENCHMARKS: dict[str, Callable[[], None]] = {"load": bench_load}


def run_benchmarks(names: Sequence[str] = ()) -> None:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {sorted(BENCHMARKS)}")
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
