"""What the generate benchmarks run on: the embedded model or a random-weight one.

`Workload` holds the bridge, a separate Hugging Face model of the same checkpoint
(Hugging Face's own `generate` is the yardstick) and an instruction vector.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from .measure import PeakMemory

# Published dimensions (random weights: the figures are about speed, not text).
CONFIGS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "head_dim": 64,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    },
    "tiny": {  # a CPU check that the --config path runs
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    },
}


@dataclass(frozen=True)
class Setup:
    """What to benchmark on; the command-line options of the generate benchmarks."""

    device: str = "cpu"
    config: str | None = None
    dtype: str | None = None
    tokenizer: str | None = None
    repeats: int = 2
    new_tokens: int = 128
    prompts: int = 16
    scale_tokens: int = 32


def steered_layer(setup: Setup, n_layers: int) -> int:
    # Layer 14 of 30 on the embedded model (the figures in docs/benchmarks.md), the middle elsewhere.
    return 14 if setup.config is None else n_layers // 2


class Workload:
    """The bridge, a separate Hugging Face model of the same checkpoint, a vector."""

    def __init__(self, setup: Setup) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from workbench.model.embedded import ensure_checkpoint
        from workbench.model.loading import load_model
        from workbench.vectors.extraction import compute_instruction_vector
        from workbench.vectors.pairs import make_pairs

        self.setup = setup
        self.dtype = getattr(torch, setup.dtype) if setup.dtype else torch.float32
        self._tmp = None
        if setup.config is None:
            self.source = str(ensure_checkpoint("smollm2-135m-instruct"))
            self.name = "smollm2-135m-instruct"
        else:
            self._tmp = tempfile.TemporaryDirectory()
            self.source = _random_checkpoint(setup, self._tmp.name)
            self.name = setup.config
        self.model = load_model(self.source, device=setup.device, dtype=self.dtype)
        n_layers = self.model.cfg.n_layers
        self.layer = steered_layer(setup, n_layers)
        pairs = make_pairs("one_sentence", n=32)
        self.vec = compute_instruction_vector(self.model, pairs, layers=range(n_layers))
        hf = AutoModelForCausalLM.from_pretrained(self.source, dtype=self.dtype)
        self.hf = hf.to(setup.device).eval()

    def term(self, mode: str = "project", layer: int | None = None) -> Any:
        from workbench.steering.terms import SteeringTerm

        return SteeringTerm(self.vec, layer=self.layer if layer is None else layer, mode=mode)

    def ours(
        self, prompts: list[str], steering: Any, new: int, fast: bool = True, model: Any = None
    ) -> list[list[int]]:
        """Our `generate`, all prompts in one batch; `fast=False` takes TransformerLens' path."""
        from workbench.model.fast_decode import use_fast_decode
        from workbench.steering.generation import generate

        with use_fast_decode(fast):
            out = generate(
                self.model if model is None else model,
                prompts,
                steering=steering,
                max_new_tokens=new,
                batch_size=len(prompts),
                return_tokens=True,
            )
        return out.tokens

    def hf_generate(self, prompts: list[str], new: int) -> Callable[[], list[list[int]]]:
        """Unsteered Hugging Face `generate` (SDPA) on the same batch as ours."""
        import torch

        from workbench.model.prompts import format_prompt, tokenize_prompts

        ids, mask = tokenize_prompts(self.model, [format_prompt(self.model, p) for p in prompts])
        tok = self.model.tokenizer

        def run() -> list[list[int]]:
            with torch.inference_mode():
                out = self.hf.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=new,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            rows = out[:, ids.shape[1] :].tolist()
            eos = tok.eos_token_id
            return [r[: r.index(eos) + 1] if eos in r else r for r in rows]

        return run

    def prompts(self, n: int) -> list[str]:
        from workbench.vectors.pairs import base_queries

        queries = [q.text for q in base_queries()]
        return [queries[i % len(queries)] for i in range(n)]


def _random_checkpoint(setup: Setup, path: str) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workbench.model.embedded import ensure_checkpoint

    tok = AutoTokenizer.from_pretrained(
        setup.tokenizer or ensure_checkpoint("smollm2-135m-instruct")
    )
    dims = {"vocab_size": len(tok), **CONFIGS[setup.config]}
    ids = {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = LlamaConfig(**dims, **{k: v for k, v in ids.items() if v is not None})
    torch.manual_seed(0)
    with torch.device(setup.device):  # initialising 1B weights on the GPU takes a second
        model = LlamaForCausalLM(config)
    dtype = getattr(torch, setup.dtype) if setup.dtype else torch.float32
    model.to(dtype).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@cache
def workload(setup: Setup) -> Workload:
    return Workload(setup)


def memory_child(setup_json: str, source: str, steered: bool) -> float:
    """In a child process: extra peak resident MB of one steered/unsteered 64-row batch."""
    from workbench.model.loading import load_model
    from workbench.steering.terms import SteeringTerm
    from workbench.vectors.extraction import compute_instruction_vector
    from workbench.vectors.pairs import make_pairs

    setup = Setup(**json.loads(setup_json))
    w = Workload.__new__(Workload)  # only the model: no Hugging Face copy in this process
    w.setup, w.source = setup, source
    w.model = load_model(source, device=setup.device, dtype=setup.dtype)
    w.layer = steered_layer(setup, w.model.cfg.n_layers)
    vec = compute_instruction_vector(w.model, make_pairs("one_sentence", n=8), layers=[w.layer])
    term = SteeringTerm(vec, layer=w.layer, mode="project") if steered else None
    w.ours(w.prompts(2), term, 4)  # warm-up: kernels, allocator, the fast decoder
    with PeakMemory() as peak:
        w.ours(w.prompts(64), term, setup.scale_tokens)
    return peak.peak_mb
