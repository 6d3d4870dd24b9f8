"""Sweep benchmarks at long budgets: loop stop and refill against static batches.

``sweep_long``: a sweep of 4 settings (unsteered, project ×0.25, ×1 and ×2 of a
``no_comma`` vector at layer 14; the two strong ones loop on most prompts) × 8
validation prompts (16 in ``sweep_long_full``) at 512 new tokens, as the protocol now runs it (refilled batches
of 16, loops stopped) against the static path it replaced (batches of 16 held until
their longest row ends, every row decoded to its end). ``same_verdicts=1`` when
every row's degenerate flag and clean verdicts (follows, strictly and loosely, and
not degenerate: what the protocol counts) agree.

``sweep_throughput``: useful tokens per second of a sweep (its whole wall time:
decoding, the guard's forward pass, scoring) against Hugging Face's `generate` of
the same prompts, same batch size, every row decoded to a fixed length.
"""

from __future__ import annotations

import time
from typing import Any

from .measure import emit
from .workload import Setup, workload


def _vector(model: Any, layers: list[int]) -> Any:
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import make_pairs

    return compute_instruction_vector(model, make_pairs("no_comma", n=32), layers=layers)


def _verdicts(table: Any) -> list[tuple[bool, bool, bool]]:
    clean = ~table.degenerate.astype(bool)
    return list(
        zip(
            table.degenerate.astype(bool),
            table.follows_strict.astype(bool) & clean,
            table.follows_loose.astype(bool) & clean,
            strict=True,
        )
    )


def bench_sweep_long(**options: Any) -> None:
    """The long-budget sweep, new path against the static, no-stop one."""
    from workbench.evaluation.sweeps import sweep
    from workbench.vectors.pairs import base_queries

    setup = Setup(**options)
    w = workload(setup)
    model = w.model
    new = options.get("new_tokens", 512)
    layer = w.layer
    vec = _vector(model, [layer])
    prompts = [q.text for q in base_queries("validation")[: options.get("prompts", 8)]]
    grid = {"layers": [layer], "modes": ["project"], "strengths": [0.25, 1.0, 2.0]}
    common = {**grid, "max_new_tokens": new, "batch_size": 16, "progress": False}
    w.ours(prompts[:2], None, 4)  # warm-up
    t0 = time.perf_counter()
    static = sweep(model, vec, prompts, refill=False, loop_stop=None, **common)
    t_static = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = sweep(model, vec, prompts, **common)
    t_ours = time.perf_counter() - t0
    static, ours = static.sort_values("unit"), ours.sort_values("unit")
    stopped = ours.stopped_loop.astype(bool)
    # Rows that were not stopped must be the very same answers.
    same_unstopped = ours.response[~stopped].tolist() == static.response[~stopped].tolist()
    prefixes = all(
        s.startswith(o)
        for s, o in zip(static.response[stopped], ours.response[stopped], strict=True)
    )
    emit(
        "sweep_long",
        speedup=t_static / t_ours,
        same_verdicts=int(_verdicts(ours) == _verdicts(static)),
        same_unstopped=int(same_unstopped),
        stopped_are_prefixes=int(prefixes),
        static_s=t_static,
        new_s=t_ours,
        rows=len(ours),
        stopped=int(stopped.sum()),
        degenerate=int(ours.degenerate.sum()),
        static_tokens=int(static.n_tokens.sum()),
        new_tokens=int(ours.n_tokens.sum()),
        max_new_tokens=new,
        model=w.name,
        device=setup.device,
    )


def bench_sweep_throughput(**options: Any) -> None:
    """Useful tokens/s of a sweep against Hugging Face's fixed-length `generate`."""
    import torch

    from workbench.evaluation.sweeps import LOOP_STOP, sweep
    from workbench.model.prompts import format_prompt, tokenize_prompts
    from workbench.steering.generation import generate
    from workbench.steering.settings import Setting
    from workbench.steering.terms import PerRow
    from workbench.vectors.pairs import base_queries

    setup = Setup(**options)
    w = workload(setup)
    model = w.model
    new = options.get("new_tokens", 128)
    batch = options.get("prompts", 16)
    vec = _vector(model, [w.layer])
    prompts = [q.text for q in base_queries("validation")[:batch]]
    kw = {"layers": [w.layer], "modes": ["add"], "strengths": [0.5], "progress": False}
    w.ours(prompts[:2], None, 4)  # warm-up
    t0 = time.perf_counter()
    table = sweep(model, vec, prompts, max_new_tokens=new, batch_size=batch, **kw)
    t_sweep = time.perf_counter() - t0
    useful = int(table.n_tokens.sum())
    # The same rows decoded alone (no guard, no scoring): what refill itself delivers.
    steered = Setting(w.layer, "add", 0.5).term(vec)
    t0 = time.perf_counter()
    decoded = generate(
        model,
        prompts * 2,
        steering=PerRow([None] * len(prompts) + [steered] * len(prompts)),
        max_new_tokens=new,
        batch_size=batch,
        refill=True,
        loop_stop=LOOP_STOP,
        return_tokens=True,
    )
    t_decode = time.perf_counter() - t0
    decoded_tokens = sum(len(t) for t in decoded.tokens)
    # Hugging Face on the same prompts (each setting's rows), same batch, fixed length.
    ids, mask = tokenize_prompts(model, [format_prompt(model, p) for p in prompts])
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(2):  # the sweep's two settings
            out = w.hf.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=model.tokenizer.pad_token_id,
            )
    t_hf = time.perf_counter() - t0
    hf_tokens = 2 * (out.shape[1] - ids.shape[1]) * len(prompts)
    emit(
        "sweep_throughput",
        vs_hf=(useful / t_sweep) / (hf_tokens / t_hf),
        decode_vs_hf=(decoded_tokens / t_decode) / (hf_tokens / t_hf),
        sweep_tok_s=useful / t_sweep,
        hf_tok_s=hf_tokens / t_hf,
        useful_tokens=useful,
        rows=len(table),
        batch=batch,
        max_new_tokens=new,
        model=w.name,
        device=setup.device,
    )


def bench_sweep_ray(workers: int = 2, prompts: int = 16, new_tokens: int = 64) -> None:
    """A sweep in this process (torch on every core) vs on a local Ray cluster of
    `workers` one-core workers, on the embedded model; the same rows either way."""
    import numpy as np
    import torch

    from workbench.evaluation.ray_executor import RayExecutor
    from workbench.evaluation.sweeps import sweep
    from workbench.model.loading import load_model
    from workbench.vectors.pairs import base_queries

    model = load_model()
    vec = _vector(model, [14])
    texts = [q.text for q in base_queries("validation")[:prompts]]
    kw = {"layers": [14], "modes": ["add", "project"], "strengths": [0.5], "progress": False}
    kw = {**kw, "max_new_tokens": new_tokens, "batch_size": 16}
    sweep(model, vec, texts[:2], **{**kw, "max_new_tokens": 4})  # warm-up
    t0 = time.perf_counter()
    here = sweep(model, vec, texts, **kw)
    t_here = time.perf_counter() - t0
    with RayExecutor(workers=workers) as ex:
        t0 = time.perf_counter()
        start = sweep(model, vec, texts[:1], **{**kw, "max_new_tokens": 4}, executor=ex)
        t_start = time.perf_counter() - t0  # the cluster, the workers, their models
        del start
        t0 = time.perf_counter()
        there = sweep(model, vec, texts, **kw, executor=ex)
        t_ray = time.perf_counter() - t0
        line = ex.progress_line()
    exact = ["seconds", "perplexity"]
    same = here.drop(columns=exact).equals(there.drop(columns=exact)) and np.allclose(
        here.perplexity, there.perplexity, rtol=1e-6, equal_nan=True
    )
    emit(
        "sweep_ray",
        vs_in_process=t_here / t_ray,
        same_rows=int(same),
        in_process_s=t_here,
        ray_s=t_ray,
        start_s=t_start,
        rows=len(there),
        workers=workers,
        torch_threads=torch.get_num_threads(),
        progress=line.replace(" ", "_"),
    )
