"""The main demo: compute an instruction vector on the embedded model and steer with it."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

from workbench.errors import InvalidArgumentError
from workbench.files import check_kind, user_path, write_target
from workbench.model.loading import load_model
from workbench.options import check_bool
from workbench.steering.generation import generate
from workbench.steering.terms import SteeringTerm
from workbench.vectors.activations import check_layers
from workbench.vectors.extraction import compute_instruction_vector
from workbench.vectors.pairs import base_queries, make_pairs

# Measured on SmolLM2-135M-Instruct: adding the "one sentence" vector at layer 14
# turns multi-sentence answers into single sentences without the instruction.
DEMO_INSTRUCTION = "one_sentence"
DEMO_LAYER = 14
# The files the demo writes in its output directory, and what each holds.
DEMO_FILES = {
    f"{DEMO_INSTRUCTION}.safetensors": "vector",
    f"{DEMO_INSTRUCTION}_report.html": "html",
}


def _side_by_side(left: str, right: str, width: int = 58) -> str:
    a = textwrap.wrap(left.replace("\n", " ") or "(empty)", width)
    b = textwrap.wrap(right.replace("\n", " ") or "(empty)", width)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"  {x:<{width}} | {y}" for x, y in zip(a, b, strict=True))


def run_demo(
    out_dir: Path = Path("demo_output"),
    *,
    model_name: str = "smollm2-135m-instruct",
    model: Any = None,
    layer: int = DEMO_LAYER,
    n_pairs: int = 64,
    n_prompts: int = 4,
    max_new_tokens: int = 48,
    force: bool = False,
) -> dict[str, Path]:
    """Load the model (or use `model`, already loaded as `model_name`), compute the
    vector, print unsteered vs steered at `layer`, write the vector file and its report
    page (``{"vector": path, "report": path}``) in `out_dir` (``~`` expanded; made if
    missing). A FIFO, device or directory where a file goes is refused before any work,
    and so is a file of another kind unless `force`."""
    from analyses.report import report

    out_dir = user_path(out_dir, "out_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    vector_file, report_file = (out_dir / name for name in DEMO_FILES)
    # A FIFO, a device or a file of another kind there is refused before any work.
    for path, kind in zip((vector_file, report_file), DEMO_FILES.values(), strict=True):
        check_kind(write_target(path), kind, check_bool("force", force))
    t0 = time.perf_counter()
    model = load_model(model_name) if model is None else model
    check_layers(model, [layer])
    print(
        f"loaded {model_name} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )

    pairs = make_pairs(DEMO_INSTRUCTION, split="train", n=n_pairs)
    t0 = time.perf_counter()
    vec = compute_instruction_vector(
        model, pairs, keep_pair_diffs=True, progress=True
    ).select_layer(layer)
    print(
        f"instruction vector {vec.instruction_id!r} from {vec.n_pairs} pairs at all "
        f"{len(vec.layers)} layers in {time.perf_counter() - t0:.1f}s"
    )
    print(f"  example pair: {pairs[0].with_instruction!r}")

    prompts = [q.text for q in base_queries("test")[:n_prompts]]
    term = SteeringTerm(vec, layer=layer, mode="add")
    plain = generate(model, prompts, max_new_tokens=max_new_tokens)
    steered = generate(model, prompts, steering=term, max_new_tokens=max_new_tokens)
    print(f"\nno instruction in the prompt; steering: add at layer {layer}\n")
    print(_side_by_side("UNSTEERED", "STEERED"))
    for prompt, a, b in zip(prompts, plain, steered, strict=True):
        print(f"\n> {prompt}")
        print(_side_by_side(a, b))

    out_dir.mkdir(parents=True, exist_ok=True)
    vector_path = vec.save(vector_file, force=force)
    # With the model, the page adds the relative norms and the held-out projections.
    report_path = report(vec, out=report_file, model=model, force=force)
    print(f"\nwrote {vector_path} and {report_path} (open it in a browser)")
    return {"vector": vector_path, "report": report_path}
