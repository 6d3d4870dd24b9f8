"""The main demo: compute an instruction vector on the embedded model and steer with it."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import InvalidArgumentError
from workbench.evaluation.answers import clean_counts, compare_answers, verdict
from workbench.evaluation.selection import Selection, select
from workbench.evaluation.sweeps import sweep
from workbench.files import check_kind, user_path, write_target
from workbench.model.loading import load_model
from workbench.options import CHOOSE_BY, check_bool, check_int
from workbench.vectors.activations import check_layers
from workbench.vectors.extraction import compute_instruction_vector
from workbench.vectors.pairs import base_queries, instruction, make_pairs

from .sweep import evidence_lines, setting_label

# Measured on SmolLM2-135M-Instruct (docs/results.md): adding the "one sentence" vector
# at layer 14 turns multi-sentence answers into single sentences without the
# instruction. The demo's validation sweep tries these layers (scaled to the model's
# depth) with `add` at these strengths, and lets `select` choose.
DEMO_INSTRUCTION = "one_sentence"
DEMO_LAYERS = (10, 14, 18)
DEMO_DEPTH = 30
DEMO_STRENGTHS = (0.5, 1.0)
# The files the demo writes in its output directory, and what each holds.
DEMO_FILES = {
    f"{DEMO_INSTRUCTION}.safetensors": "vector",
    f"{DEMO_INSTRUCTION}_report.html": "html",
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and showed: the vector file, its report page, the selection
    made on validation and the test answers (`compare_answers`' table)."""

    vector: Path
    report: Path
    selection: Selection
    answers: pd.DataFrame


def demo_layers(n_layers: int) -> list[int]:
    """`DEMO_LAYERS`, measured on a 30-layer model, at the same relative depths of a
    model with `n_layers` layers (distinct, within range).

    Example:
        >>> demo_layers(30), demo_layers(42), demo_layers(3)
        ([10, 14, 18], [14, 20, 25], [1, 2])
    """
    scaled = [min(n_layers - 1, round(layer * n_layers / DEMO_DEPTH)) for layer in DEMO_LAYERS]
    return sorted(set(scaled))


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
    layers: Sequence[int] | None = None,
    n_pairs: int = 64,
    n_val: int = 8,
    n_prompts: int = 4,
    max_new_tokens: int = 64,
    force: bool = False,
) -> DemoResult:
    """Load the model (or use `model`, already loaded as `model_name`), compute the
    one-sentence vector from `n_pairs` train pairs, choose a setting on `n_val`
    validation queries (`add` at `layers`, default `demo_layers`, and `DEMO_STRENGTHS`,
    with `select` by clean accuracy), print unsteered vs steered answers to `n_prompts`
    test queries with each answer's verdict, and write the vector file (holding the
    selection) and its report page in `out_dir`
    (``~`` expanded; made if missing). A FIFO, device or directory where a file goes
    is refused before any work, and so is a file of another kind unless `force`.
    `workbench steer` on the vector file with the same `max_new_tokens` (its default,
    64) reproduces the steered answers."""
    from analyses.report import report

    out_dir = user_path(out_dir, "out_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    vector_file, report_file = (out_dir / name for name in DEMO_FILES)
    # A FIFO, a device or a file of another kind there is refused before any work.
    for path, kind in zip((vector_file, report_file), DEMO_FILES.values(), strict=True):
        check_kind(write_target(path), kind, check_bool("force", force))
    for name, value, high in [
        ("n_val", n_val, len(base_queries("validation"))),
        ("n_prompts", n_prompts, len(base_queries("test"))),
    ]:
        check_int(name, value, low=1, high=high)
    took = ""
    if model is None:
        print(f"loading {model_name}…", flush=True)
        t0 = time.perf_counter()
        model = load_model(model_name)
        took = f" in {time.perf_counter() - t0:.1f}s"
    layers = demo_layers(model.cfg.n_layers) if layers is None else list(layers)
    check_layers(model, layers)
    print(f"model {model_name} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}){took}")

    instr = instruction(DEMO_INSTRUCTION)
    pairs = make_pairs(instr, split="train", n=n_pairs)
    t0 = time.perf_counter()
    vec = compute_instruction_vector(model, pairs, keep_pair_diffs=True, progress=True)
    print(
        f"instruction vector {vec.instruction_id!r} from {vec.n_pairs} pairs at all "
        f"{len(vec.layers)} layers in {time.perf_counter() - t0:.1f}s"
    )
    print(f"  example pair: {pairs[0].with_instruction!r}")

    t0 = time.perf_counter()
    val = [q.text for q in base_queries("validation")[:n_val]]
    table = sweep(
        model,
        vec,
        val,
        layers=layers,
        modes=("add",),
        strengths=DEMO_STRENGTHS,
        max_new_tokens=max_new_tokens,
        label="validation sweep",
    )
    metric, objective = CHOOSE_BY
    chosen = select(table, vec, metric=metric, objective=objective)
    vec = vec.with_selection(chosen.record())
    print(
        f"\nvalidation: {n_val} queries without the instruction, {max_new_tokens} new tokens, "
        f"{time.perf_counter() - t0:.0f}s; clean = follows and not degenerate"
    )
    for line in evidence_lines(chosen.evidence):
        print(line)

    prompts = [q.text for q in base_queries("test")[:n_prompts]]
    answers = compare_answers(model, prompts, chosen.term, instr, max_new_tokens=max_new_tokens)
    print(
        f"\n{n_prompts} test queries, no instruction in the prompt; steering: {_described(chosen)}\n"
    )
    _show(answers)

    out_dir.mkdir(parents=True, exist_ok=True)
    vector_path = vec.save(vector_file, force=force)
    # With the model, the page adds the relative norms and the held-out projections.
    report_path = report(
        vec, out=report_file, sweep=table, model=model, answers=answers, force=force
    )
    print(f"\nwrote {vector_path} and {report_path} (open it in a browser)")
    if chosen.term is None:
        print(
            "validation chose not to steer; `workbench steer FILE PROMPT --layer L --mode add` "
            "steers anyway"
        )
    else:
        print(f'reproduce a steered answer: workbench steer {vector_path} "{prompts[0]}"')
    return DemoResult(vector_path, report_path, chosen, answers)


def _show(answers: pd.DataFrame) -> None:
    """The answers side by side, each with its verdict, and the totals."""
    print(_side_by_side("UNSTEERED", "STEERED"))
    for row in answers.to_dict("records"):
        print(f"\n> {row['prompt']}")
        print(_side_by_side(row["unsteered"], row["steered"]))
        print(
            _side_by_side(
                verdict(row["unsteered_follows"], row["unsteered_degenerate"], "one sentence"),
                verdict(row["steered_follows"], row["steered_degenerate"], "one sentence"),
            )
        )
    counts = clean_counts(answers)
    print(
        f"\none sentence and not degenerate: unsteered {counts['unsteered']}/{counts['n']}, "
        f"steered {counts['steered']}/{counts['n']} (degenerate: {counts['unsteered_degenerate']} "
        f"and {counts['steered_degenerate']}). {counts['n']} answers show the effect, they do "
        f"not measure it: `workbench evaluate {DEMO_INSTRUCTION}` does, with intervals."
    )


def _described(chosen: Any) -> str:
    if chosen.term is None:
        return "none (validation found no setting better than unsteered)"
    weight = chosen.term.concrete().weight
    label = setting_label(chosen.setting.layer, chosen.setting.mode, chosen.setting.strength)
    return f"{label}, weight {weight:.3g} (chosen on validation)"
