"""Benchmarks printing ``BENCH <name> key=value ...`` lines (ratios from one run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.model.embedded import CACHE_ENV

from .measure import PeakMemory, emit


def bench_load(first_per_backend: bool = False) -> None:
    """First load (GGUF dequantization + cache write) vs cached load. The checkpoint cache
    is shared by the backends, so the quick set builds it once (with the bridge) and
    times the hooked backend's cached load only; `load_full` builds it for each."""
    from workbench.model.loading import load_model

    def timed(backend: str) -> float:
        t0 = time.perf_counter()
        load_model(backend=backend)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get(CACHE_ENV)
        try:
            for backend in ("bridge", "hooked"):
                if backend == "bridge" or first_per_backend:
                    os.environ[CACHE_ENV] = str(Path(tmp) / backend)
                    first = timed(backend)
                    cached = timed(backend)
                    emit(
                        "load",
                        backend=backend,
                        first_s=first,
                        cached_s=cached,
                        ratio=first / cached,
                    )
                else:
                    emit("load", backend=backend, cached_s=timed(backend))
        finally:
            if old is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = old


def bench_load_full() -> None:
    """`load` with the cache built anew for each backend."""
    bench_load(first_per_backend=True)


def extract_child(method: str, n_pairs: int) -> dict[str, float]:
    """One extraction method in this process; returns seconds and extra peak RSS."""
    import torch

    from workbench.model.loading import load_model
    from workbench.model.prompts import format_prompt
    from workbench.options import RESID_HOOK
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import make_pairs

    model = load_model()
    pairs = make_pairs("lowercase", split="train", n=n_pairs)
    # Warm up kernels and allocator on both code paths' shapes before measuring.
    compute_instruction_vector(model, pairs[:2], batch_size=4)

    def naive() -> None:
        # One run_with_cache per prompt, every hook cached, sliced afterwards.
        names = [RESID_HOOK.format(layer=layer) for layer in range(model.cfg.n_layers)]
        sides: dict[str, list] = {"with": [], "without": []}
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

    def bare_forward() -> None:
        # The same padded batches extraction runs (both sides, sorted by length, 16 a
        # batch), through the model alone: no hooks, no cache, logits included.
        from workbench.model.prompts import encode_prompts, pad_left

        texts = [p.with_instruction for p in pairs] + [p.without_instruction for p in pairs]
        prompts = sorted((format_prompt(model, t) for t in texts), key=len)
        tokens = encode_prompts(model, prompts)
        with torch.inference_mode():
            for start in range(0, len(tokens), 16):
                ids, mask = pad_left(model, tokens[start : start + 16])
                model(ids, attention_mask=mask)

    run = {"workbench": lambda: compute_instruction_vector(model, pairs, batch_size=16)}
    run["naive"] = naive
    if method == "workbench":
        bare_forward()  # warm-up of the bare path too
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        run[method]()
        seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "peak_mb": peak.peak_mb}
    if method == "workbench":
        # Interleaved (bare twice, extraction twice more), best of each: a slow moment
        # on a shared machine hits both alike.
        ours, bare = [seconds], []
        for _ in range(2):
            t0 = time.perf_counter()
            bare_forward()
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run["workbench"]()
            ours.append(time.perf_counter() - t0)
        out.update(best_s=min(ours), forward_s=min(bare))
    return out


def _run_child(method: str, n_pairs: int) -> dict[str, float]:
    code = (
        "import json, warnings; warnings.simplefilter('ignore');"
        "from benchmarks.bench import extract_child;"
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
        vs_forward=ours["forward_s"] / ours["best_s"],
        forward_s=ours["forward_s"],
        extract_s=ours["best_s"],
        speedup=naive["seconds"] / ours["seconds"],
        pairs_per_s=n_pairs / ours["seconds"],
        naive_pairs_per_s=n_pairs / naive["seconds"],
        peak_mb=ours["peak_mb"],
        naive_peak_mb=naive["peak_mb"],
        n_pairs=n_pairs,
    )


def bench_generate(**options: Any) -> None:
    """Steered `generate` vs Hugging Face's `generate` (see benchmarks/generate.py)."""
    from .generate import bench_generate as run
    from .workload import Setup

    run(Setup(**options))


def bench_generate_full(**options: Any) -> None:
    """`generate` plus TransformerLens' path, the reference loop, the hooked backend and
    the fast and TransformerLens paths' token agreement."""
    from .generate import bench_generate as run
    from .workload import Setup

    run(Setup(**options), full=True)


def bench_generate_scale(**options: Any) -> None:
    """Tokens/s against batch, prompt length and terms; memory (benchmarks/generate.py)."""
    from .generate import bench_generate_scale
    from .workload import Setup

    bench_generate_scale(Setup(**options))


def bench_sweep(n_layers: int = 6, n_prompts: int = 8, max_new_tokens: int = 32) -> None:
    """A layers x prompts sweep as per-row batches vs one generation per layer."""
    from workbench.model.loading import load_model
    from workbench.steering.generation import generate
    from workbench.steering.terms import PerRow, SteeringTerm
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import base_queries, make_pairs

    model = load_model()
    layers = list(range(4, 4 + 2 * n_layers, 2))
    vec = compute_instruction_vector(model, make_pairs("one_sentence", n=32), layers=layers)
    prompts = [q.text for q in base_queries("validation")[:n_prompts]]
    rows_prompts = [p for _ in layers for p in prompts]
    rows_terms = [[SteeringTerm(vec, layer=layer, mode="add")] for layer in layers for _ in prompts]

    def per_row() -> list[list[int]]:
        return generate(
            model,
            rows_prompts,
            steering=PerRow(rows_terms),
            batch_size=len(rows_prompts),
            max_new_tokens=max_new_tokens,
            return_tokens=True,
        ).tokens

    def per_layer() -> list[list[int]]:
        out: list[list[int]] = []
        for layer in layers:
            out += generate(
                model,
                prompts,
                steering=SteeringTerm(vec, layer=layer, mode="add"),
                batch_size=n_prompts,
                max_new_tokens=max_new_tokens,
                return_tokens=True,
            ).tokens
        return out

    generate(model, prompts[:2], max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    a = per_row()
    t_row = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = per_layer()
    t_layer = time.perf_counter() - t0
    emit(
        "sweep",
        rows_per_batch=len(rows_prompts),
        ratio=t_layer / t_row,
        per_row_s=t_row,
        per_layer_s=t_layer,
        same_tokens=int(a == b),
    )


def bench_select_sweep(
    n_layers: int = 2, n_prompts: int = 8, max_new_tokens: int = 64, n_score: int = 500
) -> None:
    """A selection sweep (layers x 3 strengths x prompts) as per-row batches vs one
    `generate` per setting; then scoring throughput."""
    from workbench.evaluation.scoring import score
    from workbench.evaluation.sweeps import LOOP_STOP, settings_grid, sweep
    from workbench.model.loading import load_model
    from workbench.steering.generation import generate
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import base_queries, make_pairs

    model = load_model()
    layers = list(range(6, 6 + 2 * n_layers, 2))
    vec = compute_instruction_vector(model, make_pairs("no_comma", n=32), layers=layers)
    prompts = [q.text for q in base_queries("validation")[:n_prompts]]
    strengths = [0.25, 0.5, 1.0]
    generate(model, prompts[:2], max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    table = sweep(
        model,
        vec,
        prompts,
        layers=layers,
        strengths=strengths,
        baseline=False,
        max_new_tokens=max_new_tokens,
        batch_size=64,
        progress=False,
    )
    t_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_setting: list[str] = []
    for setting in settings_grid(vec, layers, ["project"], strengths, baseline=False):
        per_setting += generate(
            model,
            prompts,
            steering=setting.term(vec),
            max_new_tokens=max_new_tokens,
            loop_stop=LOOP_STOP,  # what the sweep stops loops with
        )
    t_loop = time.perf_counter() - t0
    emit(
        "select_sweep",
        wall_s=t_sweep,
        ratio=t_loop / t_sweep,
        per_setting_s=t_loop,
        rows=len(table),
        same_responses=int(table.response.tolist() == per_setting),
    )
    responses = (table.response.tolist() * (n_score // len(table) + 1))[:n_score]
    t0 = time.perf_counter()
    for text in responses:
        score(text, "punctuation:no_comma", {})
        score(
            text,
            "length_constraints:number_sentences",
            {"relation": "less than", "num_sentences": 2},
        )
    strict_s = time.perf_counter() - t0
    emit("scoring", responses_per_s=2 * n_score / strict_s, checks=2 * n_score)


def bench_sweep_long(**options: Any) -> None:
    """Loop stop and refill at 512 tokens vs static batches (benchmarks/sweeps.py)."""
    from .sweeps import bench_sweep_long as run

    run(**options)


def bench_sweep_long_full(**options: Any) -> None:
    """`sweep_long` on 16 validation prompts (64 rows), as issue 19 sized it."""
    from .sweeps import bench_sweep_long as run

    run(**{"prompts": 16, **options})


def bench_sweep_throughput(**options: Any) -> None:
    """A sweep's useful tokens/s vs Hugging Face's fixed-length `generate`."""
    from .sweeps import bench_sweep_throughput as run

    run(**options)


def bench_sweep_ray() -> None:
    """A sweep on a local Ray cluster of one-core workers vs in this process."""
    from .sweeps import bench_sweep_ray as run

    run()


def bench_select_sweep_full() -> None:
    """`select_sweep` at its original size: 8 layers, 192 rows (`make bench-full`)."""
    bench_select_sweep(n_layers=8)


BENCHMARKS: dict[str, Callable[[], None]] = {
    "load": bench_load,
    "load_full": bench_load_full,
    "extract": bench_extract,
    "generate": bench_generate,
    "generate_full": bench_generate_full,
    "generate_scale": bench_generate_scale,
    "sweep": bench_sweep,
    "select_sweep": bench_select_sweep,
    "select_sweep_full": bench_select_sweep_full,
    "sweep_long": bench_sweep_long,
    "sweep_long_full": bench_sweep_long_full,
    "sweep_throughput": bench_sweep_throughput,
    "sweep_ray": bench_sweep_ray,
}

# `make bench` (no names given): the set that runs in minutes. `--full` runs them all.
QUICK = ["load", "extract", "generate", "sweep_long", "sweep_throughput", "select_sweep"]


# These take the --device/--config/... options; the others run on the embedded model.
TAKES_OPTIONS = {
    "generate",
    "generate_full",
    "generate_scale",
    "sweep_long",
    "sweep_long_full",
    "sweep_throughput",
}


def check_request(names: Sequence[str], options: dict[str, Any], full: bool = False) -> list[str]:
    """The benchmarks to run (`QUICK` when `names` is empty, all with `full`); a bad
    request raises `ValueError`.

    Everything is checked before the first benchmark starts, since each takes minutes:
    unknown or repeated names, options that no chosen benchmark takes, an unknown
    ``config``.

    Example:
        >>> check_request(["load", "sweep"], {})
        ['load', 'sweep']
        >>> check_request(["load"], {"device": "cuda"})
        Traceback (most recent call last):
        ...
        ValueError: --device 'cuda': only the benchmarks ['generate', 'generate_full', 'generate_scale', 'sweep_long', 'sweep_long_full', 'sweep_throughput'] take options
    """
    from .workload import CONFIGS

    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {sorted(BENCHMARKS)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"benchmark(s) {repeated} given twice; name each once")
    if full and names:
        raise ValueError(f"--full runs every benchmark; do not name any (got {list(names)})")
    chosen = list(names or (BENCHMARKS if full else QUICK))
    if options and not TAKES_OPTIONS & set(chosen):
        flags = ", ".join(f"--{k.replace('_', '-')} {v!r}" for k, v in options.items())
        raise ValueError(f"{flags}: only the benchmarks {sorted(TAKES_OPTIONS)} take options")
    config = options.get("config")
    if config is not None and config not in CONFIGS:
        raise ValueError(f"--config {config!r}: choose one of {sorted(CONFIGS)}")
    return chosen


def run_benchmarks(
    names: Sequence[str] = (), options: dict[str, Any] | None = None, full: bool = False
) -> None:
    """Run the benchmarks `names` (`QUICK` by default, all with `full`), printing their
    ``BENCH`` lines and, last, the suite's wall time."""
    t0 = time.perf_counter()
    try:
        chosen = check_request(names, options or {}, full)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    seconds = {}
    for name in chosen:
        t1 = time.perf_counter()
        if name in TAKES_OPTIONS:
            BENCHMARKS[name](**(options or {}))
        else:
            BENCHMARKS[name]()
        seconds[f"{name}_s"] = time.perf_counter() - t1
    emit("suite", benchmarks=len(chosen), wall_s=time.perf_counter() - t0, **seconds)
