"""`generate` benchmarks: steered decoding against Hugging Face's own `generate`.

``python -m benchmarks generate generate_scale [--device cuda] [--config llama-3.2-1b]``

By default the embedded SmolLM2-135M-Instruct on the CPU. ``--config NAME`` builds a
random-weight Llama of that shape instead (saved to a temporary checkpoint and loaded
like any other), for real-size figures on a GPU. Contenders run interleaved, best of
``--repeats`` rounds, so a slow moment on a shared machine hits all of them alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

from .measure import emit
from .workload import Setup, Workload, workload


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(fn: Callable[[], list[list[int]]], device: str) -> tuple[float, list[list[int]]]:
    _sync(device)
    t0 = time.perf_counter()
    tokens = fn()
    _sync(device)
    return time.perf_counter() - t0, tokens


def _race(contenders: dict[str, Callable[[], list[list[int]]]], setup: Setup) -> dict[str, dict]:
    """Interleaved rounds; per contender the best tokens/s and seconds per decode step
    (a step of the whole batch: the longest row's length)."""
    best: dict[str, dict] = {n: {"tok_s": 0.0, "s_step": float("inf")} for n in contenders}
    for _ in range(setup.repeats):
        for name, fn in contenders.items():
            seconds, tokens = _timed(fn, setup.device)
            n = sum(len(t) for t in tokens)
            b = best[name]
            b["tok_s"] = max(b["tok_s"], n / seconds)
            b["s_step"] = min(b["s_step"], seconds / max(1, max(len(t) for t in tokens)))
            b["tokens"] = n
    return best


def bench_generate(setup: Setup, full: bool = False) -> None:
    """The fast path vs Hugging Face (and unsteered); with `full`, also TransformerLens'
    path, the reference loop, the hooked backend and the paths' token agreement."""
    from workbench.model.fast_decode import decoder_for
    from workbench.steering.reference import reference_generate

    w = workload(setup)
    prompts, new, term = w.prompts(setup.prompts), setup.new_tokens, w.term()
    hf = w.hf_generate(prompts, new)
    w.ours(prompts[:2], term, 4)  # warm-up (builds and probes the fast decoder)
    hf()
    contenders = {
        "fast": lambda: w.ours(prompts, term, new),
        "hf": hf,
        "plain": lambda: w.ours(prompts, None, new),
    }
    if full:
        w.ours(prompts[:2], term, 4, fast=False)
        contenders["tl"] = lambda: w.ours(prompts, term, new, fast=False)
    r = _race(contenders, setup)
    hf_tps = r["hf"]["tok_s"]
    decoder = getattr(w.model, "_workbench_fast_decoder", None)
    if decoder is not None and not decoder.ok:
        print(f"# fast decode path unavailable: {decoder.reason}", flush=True)
    tl = {}
    if full:
        tl = {
            "tl_steered_vs_hf": r["tl"]["tok_s"] / hf_tps,
            "tl_steered_tok_s": r["tl"]["tok_s"],
            "fast_vs_tl": r["fast"]["tok_s"] / r["tl"]["tok_s"],
        }
    emit(
        "generate",
        steered_vs_hf=r["fast"]["tok_s"] / hf_tps,
        # Steering may end rows early (fewer tokens for the same batch steps), so the
        # cost of a decode step of the same batch is compared too.
        steered_vs_hf_per_step=r["hf"]["s_step"] / r["fast"]["s_step"],
        steered_tok_s=r["fast"]["tok_s"],
        hf_tok_s=hf_tps,
        unsteered_vs_hf=r["plain"]["tok_s"] / hf_tps,
        **tl,
        fast_path=int(
            decoder_for(w.model, [(f"blocks.{w.layer}.hook_resid_post", None)]) is not None
        ),
        attention=getattr(decoder, "attention", "") or "none",
        model=w.name,
        device=setup.device,
        prompts=len(prompts),
        new_tokens=new,
        steered_tokens=r["fast"]["tokens"],
        hf_tokens=r["hf"]["tokens"],
        unsteered_tokens=r["plain"]["tokens"],
        repeats=setup.repeats,
    )
    if not full:
        return
    ref_prompts = prompts[:4]
    ref_s, _ = _timed(
        lambda: [reference_generate(w.model, p, term, new) for p in ref_prompts], setup.device
    )
    ours_s, ours_tokens = _timed(lambda: w.ours(ref_prompts, term, new), setup.device)
    ref_tps = sum(len(t) for t in ours_tokens) / ref_s
    emit(
        "generate",
        speedup_vs_reference=r["fast"]["tok_s"] / ref_tps,
        ref_tok_s=ref_tps,
        same_prompts_speedup=ref_s / ours_s,
        ref_prompts=len(ref_prompts),
    )
    if setup.config is None:
        from workbench.model.loading import load_model

        hooked = load_model(backend="hooked", device=setup.device)
        hooked_s, hooked_tokens = _timed(
            lambda: w.ours(prompts, term, new, model=hooked), setup.device
        )
        hooked_tps = sum(len(t) for t in hooked_tokens) / hooked_s
        emit(
            "generate",
            hooked_vs_bridge=hooked_tps / r["fast"]["tok_s"],
            hooked_vs_bridge_tl=hooked_tps / r["tl"]["tok_s"],
            hooked_tok_s=hooked_tps,
        )
        del hooked
    agreement(w)


def agreement(w: Workload, n_prompts: int = 32, new: int = 64) -> None:
    """Greedy tokens of the fast path vs TransformerLens' path (eager attention).

    With SDPA (float32) the two round differently (~1e-6 relative); a greedy near-tie
    can go either way, after which the rows diverge. Counted, not hidden.
    """
    prompts = w.prompts(n_prompts)
    for mode in ("project", "add"):
        term = w.term(mode)
        fast = w.ours(prompts, term, new)
        slow = w.ours(prompts, term, new, fast=False)
        rows = [i for i, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b]
        differing = sum(
            sum(x != y for x, y in zip(fast[i], slow[i], strict=False))
            + abs(len(fast[i]) - len(slow[i]))
            for i in rows
        )
        emit(
            "generate_agreement",
            mode=mode,
            rows=len(prompts),
            new_tokens=new,
            rows_differing=len(rows),
            tokens_differing=differing,
            tokens=sum(len(t) for t in slow),
            model=w.name,
        )


def bench_generate_scale(setup: Setup) -> None:
    """Tokens/s against batch size, prompt length and number of terms; peak memory."""
    w = workload(setup)
    new, term = setup.scale_tokens, w.term()
    w.ours(w.prompts(2), term, 4)
    for batch in (1, 4, 16, 64):
        prompts = w.prompts(batch)
        r = _race(
            {"fast": lambda p=prompts: w.ours(p, term, new), "hf": w.hf_generate(prompts, new)},
            setup,
        )
        emit(
            "generate_batch",
            batch=batch,
            steered_tok_s=r["fast"]["tok_s"],
            hf_tok_s=r["hf"]["tok_s"],
            steered_vs_hf=r["fast"]["tok_s"] / r["hf"]["tok_s"],
            steered_vs_hf_per_step=r["hf"]["s_step"] / r["fast"]["s_step"],
            new_tokens=new,
        )
    for target in (32, 128, 512):
        prompts = _long_prompts(w, 4, target)
        r = _race(
            {"fast": lambda p=prompts: w.ours(p, term, new), "hf": w.hf_generate(prompts, new)},
            setup,
        )
        emit(
            "generate_prompt_len",
            prompt_tokens=_mean_tokens(w, prompts),
            steered_tok_s=r["fast"]["tok_s"],
            hf_tok_s=r["hf"]["tok_s"],
            steered_vs_hf=r["fast"]["tok_s"] / r["hf"]["tok_s"],
            steered_vs_hf_per_step=r["hf"]["s_step"] / r["fast"]["s_step"],
            batch=4,
            new_tokens=new,
        )
    prompts = w.prompts(16)
    n_layers = w.model.cfg.n_layers
    contenders = {"none": lambda: w.ours(prompts, None, new)}
    for k in (1, 4, 16):
        # k terms spread over the depth (one per layer where the model has enough).
        spread = [round(i * (n_layers - 1) / max(1, k - 1)) for i in range(k)]
        terms = [w.term("add", layer) for layer in (spread if k > 1 else [w.layer])]
        contenders[str(k)] = lambda t=terms: w.ours(prompts, t, new)
    r = _race(contenders, setup)
    for k in (1, 4, 16):
        emit(
            "generate_terms",
            terms=k,
            tok_s=r[str(k)]["tok_s"],
            ms_per_step=1e3 * r[str(k)]["s_step"],
            step_cost_vs_unsteered=r[str(k)]["s_step"] / r["none"]["s_step"],
            batch=16,
            new_tokens=new,
        )
    steered = _peak_mb(w, setup, steered=True)
    plain = _peak_mb(w, setup, steered=False)
    emit(
        "generate_memory",
        rows=64,
        steered_peak_mb=steered,
        unsteered_peak_mb=plain,
        ratio=steered / plain,
        new_tokens=new,
        device=setup.device,
    )


def _long_prompts(w: Workload, n: int, target: int) -> list[str]:
    """`n` user messages of about `target` tokens each (queries joined)."""
    queries = w.prompts(200)
    out = []
    for i in range(n):
        words, k = [], i
        while len(w.model.tokenizer.encode(" ".join(words))) < target:
            words.append(queries[k % len(queries)])
            k += 1
        out.append(" ".join(words))
    return out


def _mean_tokens(w: Workload, prompts: list[str]) -> float:
    from workbench.model.prompts import encode_prompts, format_prompt

    ids = encode_prompts(w.model, [format_prompt(w.model, p) for p in prompts])
    return sum(map(len, ids)) / len(ids)


def _peak_mb(w: Workload, setup: Setup, *, steered: bool) -> float:
    """Extra peak memory of one 64-row batch: CUDA allocator stats, or the resident
    set of a child process (a fresh heap, so the two contenders do not share one)."""
    if setup.device.startswith("cuda"):
        import torch

        w.ours(w.prompts(64), w.term() if steered else None, 4)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        w.ours(w.prompts(64), w.term() if steered else None, setup.scale_tokens)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    code = (
        "import json, warnings; warnings.simplefilter('ignore');"
        "from benchmarks.workload import memory_child;"
        f"print('RESULT', json.dumps(memory_child({json.dumps(asdict(setup))!r}, "
        f"{w.source!r}, {steered})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
