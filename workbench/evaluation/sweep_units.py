"""Decoding and scoring a sweep's work units: what runs in-process or on a worker.

A unit is one (setting, prompt) pair of a sweep, numbered in the sweep's grid order:
``(unit, setting, prompt_index, prompt)``. `scored_batches` decodes a list of them as
refilled per-row batches and yields their scored rows; `workbench.evaluation.sweeps`
runs it in the calling process, `workbench.evaluation.ray_executor` on Ray workers.
Both give the same rows for the same units (greedy decoding is batch-invariant).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ArgumentTypeError
from workbench.model.prompts import encode_prompts, format_prompt
from workbench.steering.gates import Gate
from workbench.steering.generation import Completion, iter_generate
from workbench.steering.loops import LoopStop
from workbench.steering.settings import Setting
from workbench.steering.terms import PerRow
from workbench.vectors.instruction_vector import InstructionVector

from .quality import QualityThresholds, quality_frame
from .scoring import score


@dataclass(frozen=True)
class SweepPrompt:
    """A prompt and the instruction its response is checked against.

    None for `instruction_id` means the vector's own instruction and kwargs.
    """

    text: str
    instruction_id: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ArgumentTypeError(
                f"SweepPrompt text must be a str, got {type(self.text).__name__} {self.text!r:.60}"
            )
        if self.instruction_id is not None and not isinstance(self.instruction_id, str):
            raise ArgumentTypeError(
                f"SweepPrompt instruction_id must be a str or None, got {self.instruction_id!r}"
            )
        if not isinstance(self.kwargs, Mapping):
            raise ArgumentTypeError(f"SweepPrompt kwargs must be a mapping, got {self.kwargs!r}")


Unit = tuple[int, Setting, int, SweepPrompt]


@dataclass(frozen=True)
class Decoding:
    """How a sweep decodes and guards its units (checked by `sweep`, shipped to workers)."""

    max_new_tokens: int
    batch_size: int
    thresholds: QualityThresholds
    refill: bool
    loop_stop: LoopStop | None
    gate: Gate | None


def score_rows(
    model: Any,
    units: Sequence[Unit],
    terms: list[Any],
    done: list[Completion],
    max_new_tokens: int,
    thresholds: QualityThresholds,
    seconds: float,
) -> list[dict[str, Any]]:
    """Guard and score finished rows (`done[k].index` indexes `units` and `terms`)."""
    chosen = [units[c.index] for c in done]
    quality = quality_frame(
        model,
        encode_prompts(model, [format_prompt(model, p.text) for _, _, _, p in chosen]),
        [c.tokens for c in done],
        [c.text for c in done],
        max_new_tokens=max_new_tokens,
        thresholds=thresholds,
        finish=[c.finish for c in done],
    ).to_dict("records")
    rows = []
    for c, (unit, s, index, p), q in zip(done, chosen, quality, strict=True):
        term = terms[c.index]
        coefficient = None if term is None else term.coefficient
        gate_on = c.gates[0] if c.gates else None
        text = c.text
        strict = score(text, p.instruction_id, p.kwargs)
        rows.append(
            {
                "unit": unit,
                "prompt_index": index,
                "prompt": p.text,
                "instruction_id": p.instruction_id,
                "kwargs": dict(p.kwargs),
                "layer": s.layer,
                "mode": s.mode,
                "strength": s.strength,
                "coefficient": coefficient,
                "gate_on": gate_on,
                "response": text,
                "follows_strict": strict,
                "follows_loose": strict or score(text, p.instruction_id, p.kwargs, loose=True),
                **q,
                "seconds": seconds,
            }
        )
    return rows


def scored_batches(
    model: Any, vector: InstructionVector, todo: Sequence[Unit], decoding: Decoding
) -> Iterator[list[dict[str, Any]]]:
    """Decode every unit of `todo`, yielding scored rows ``decoding.batch_size`` at a time
    as they end (a crash loses at most the rows still decoding and those not yet yielded)."""
    if not todo:
        return
    terms = [s.term(vector) for _, s, _, _ in todo]
    gate = decoding.gate
    if gate is not None:
        terms = [None if t is None else dataclasses.replace(t, gate=gate) for t in terms]
    completions = iter_generate(
        model,
        [format_prompt(model, p.text) for _, _, _, p in todo],
        steering=PerRow(terms),
        formatted=True,
        max_new_tokens=decoding.max_new_tokens,
        batch_size=decoding.batch_size,
        refill=decoding.refill,
        loop_stop=decoding.loop_stop,
    )
    finished: list[Completion] = []
    t0 = time.perf_counter()
    # Closed on any exit, so a crash while scoring (or a consumer that stops early)
    # takes the steering hooks off and releases the model at once.
    with contextlib.closing(completions):
        for k, completion in enumerate(completions, start=1):
            finished.append(completion)
            if len(finished) < decoding.batch_size and k < len(todo):
                continue
            now = time.perf_counter()
            seconds, t0 = (now - t0) / len(finished), now
            yield score_rows(
                model,
                todo,
                terms,
                finished,
                decoding.max_new_tokens,
                decoding.thresholds,
                seconds,
            )
            finished = []
