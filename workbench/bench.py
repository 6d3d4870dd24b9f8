"""Benchmarks printing ``BENCH <name> key=value ...`` lines (ratios from one run)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def extract_child(method: str, n_pairs: int) -> dict[str, float]:
    """One extraction method in this process; returns seconds and extra peak RSS."""
    import torch

    from .activations import RESID_HOOK
    from .models import load_model
    from .pairs import make_pairs
    from .prompts import format_prompt
    from .vectors import compute_instruction_vector

    model = load_model()
    pairs = make_pairs("lowercase", split="train", n=n_pairs)
    # Warm up kernels and allocator on both code paths' shapes before measuring.
    compute_instruction_vector(model, pairs[:2], batch_size=4)
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if method == "workbench":
        compute_instruction_vector(model, pairs, batch_size=16)
    else:
        # The naive loop: one run_with_cache per prompt, every hook cached, slice later.
        names = [RESID_HOOK.format(layer=layer) for layer in range(model.cfg.n_layers)]
        sides = {"with": [], "without": []}
        for p in pairs:
            for side, text in (("with", p.with_instruction), ("without", p.without_instruction)):
                ids = model.tokenizer(
                    format_prompt(model, text), return_tensors="pt", add_special_tokens=False
                )["input_ids"]
                with torch.inference_mode():
                    _, cache = model.run_with_cache(ids)
                sides[side].append(torch.stack([cache[n][0, -1] for n in names]))
                del cache
        (torch.stack(sides["with"]) - torch.stack(sides["without"])).mean(0)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_rss_mb() - base}


def _run_child(method: str, n_pairs: int) -> dict[str, float]:
    code = (
        "import json, warnings; warnings.simplefilter('ignore');"
        "from workbench.bench import extract_child;"
        f"print('RESULT', json.dumps(extract_child({method!r}, {n_pairs})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def bench_extract(n_pairs: int = 32) -> None:
    """compute_instruction_vector vs a naive per-prompt run_with_cache loop.

    Each method runs in its own process so its peak memory can be read cleanly.
    """
    ours = _run_child("workbench", n_pairs)
    naive = _run_child("naive", n_pairs)
    emit(
        "extract",
        speedup=naive["seconds"] / ours["seconds"],
        pairs_per_s=n_pairs / ours["seconds"],
        naive_pairs_per_s=n_pairs / naive["seconds"],
        peak_mb=ours["peak_mb"],
        naive_peak_mb=naive["peak_mb"],
        n_pairs=n_pairs,
    )


BENCHMARKS: dict[str, Callable[[], None]] = {"load": bench_load, "extract": bench_extract}


def run_benchmarks(names: Sequence[str] = ()) -> None:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {sorted(BENCHMARKS)}")
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
