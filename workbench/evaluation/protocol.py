"""The train → validation → select → test protocol for one instruction.

1. A vector from the instruction's train pairs (`compute_instruction_vector`).
2. A sweep of the layer × mode × strength grid, with the unsteered baseline, on the
   first validation queries; `select` picks a setting (or "do not steer").
3. The test queries, without and with the instruction in the prompt, each run
   unsteered and with the selected setting: the four columns of `SETTINGS`.

"Do not steer" (selection keeps the unsteered baseline) is decided here once: each
test prompt set is run unsteered once (an add of weight 0, which changes no
activation), and that one table serves both its plain and its "+steer" column, so
the two are identical by construction. ``ProtocolConfig.unsteered="baseline"`` runs
the baseline beside that zero add and keeps the baseline rows: the layout of the
committed ``results/raw`` files, which the reference experiments resume.

With `raw_dir` every sweep keeps its rows in ``{name}.val.jsonl``,
``{name}.test.no_instruction.jsonl`` and ``{name}.test.instruction.jsonl``, and a
rerun resumes from them (a file of another configuration is refused, see
`workbench.evaluation.sweep_files`). Used by ``workbench evaluate`` and by the
reference experiments (``make results``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.files import user_path
from workbench.options import (
    Mode,
    as_list,
    check_bool,
    check_choice,
    check_distinct,
    check_int,
    choices,
    float_list,
    int_list,
)
from workbench.vectors.extraction import compute_instruction_vector
from workbench.vectors.instruction_vector import InstructionVector
from workbench.vectors.pairs import Instruction, base_queries, instruction, make_pairs

from . import selection
from .selection import Metric, Selection
from .sweeps import SweepPrompt, sweep

# The four test columns, in table order.
SETTINGS = ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")

# The raw files of one instruction: ``{name}.{part}.jsonl`` (see `raw_file`).
RAW_PARTS = ("val", "test.no_instruction", "test.instruction")

VectorLayers = Literal["swept", "all"]
Unsteered = Literal["zero_add", "baseline"]


@dataclass(frozen=True)
class ProtocolConfig:
    """What `evaluate_instruction` does; every value is checked when it is made.

    Attributes:
        layers, modes, strengths: the validation grid (see `sweep`).
        train_pairs, val_queries, test_queries: how many of each split's base queries
            (the first ones) make the train pairs, the validation and the test prompts.
        metric: the accuracy column `select` compares and the summaries report.
        vector_layers: read the vector at the ``"swept"`` layers only, or at ``"all"``.
        unsteered: how a "do not steer" test set is run once unsteered: ``"zero_add"``
            sweeps an add of weight 0 (the unsteered model, in one pass);
            ``"baseline"`` sweeps the baseline plus that zero add and keeps the
            baseline rows, as the committed ``results/raw`` files were made.

    Example:
        >>> ProtocolConfig(layers=[1, 2], strengths=[1]).strengths
        (1.0,)
        >>> ProtocolConfig(layers=[1], metric="follows")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: metric 'follows' is not one of ('follows_strict', 'follows_loose')
    """

    layers: tuple[int, ...]
    modes: tuple[str, ...] = ("add", "project")
    strengths: tuple[float, ...] = (0.5, 1.0)
    train_pairs: int = 48
    val_queries: int = 8
    test_queries: int = 12
    metric: Metric = "follows_strict"
    max_new_tokens: int = 32
    batch_size: int = 48
    vector_layers: VectorLayers = "swept"
    unsteered: Unsteered = "zero_add"

    def __post_init__(self) -> None:
        layers = int_list("layers", self.layers, "layer")
        for i, layer in enumerate(layers):
            check_int(f"layers[{i}]", layer, low=0)
        modes = as_list("modes", self.modes, "['add', 'project']")
        if not modes:
            raise InvalidArgumentError(f"modes is empty; give at least one of {choices(Mode)}")
        for mode in modes:
            check_choice("mode", mode, Mode)
        check_distinct("modes", modes)
        strengths = float_list("strengths", self.strengths, "strength")
        for name, split in [
            ("train_pairs", "train"),
            ("val_queries", "validation"),
            ("test_queries", "test"),
        ]:
            # One pair or prompt per base query of the split.
            high = len(base_queries(split))
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1, high=high))
        for name in ("max_new_tokens", "batch_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        check_choice("metric", self.metric, Metric)
        check_choice("vector_layers", self.vector_layers, VectorLayers)
        check_choice("unsteered", self.unsteered, Unsteered)
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "modes", tuple(modes))
        object.__setattr__(self, "strengths", tuple(strengths))


@dataclass(frozen=True)
class SettingSummary:
    """One test column: shares of the `n` responses that follow (by the config's
    metric, strictly, loosely) and that the quality guard marks degenerate."""

    accuracy: float
    strict: float
    loose: float
    degenerate: float
    n: int


@dataclass(frozen=True)
class ProtocolResult:
    """What `evaluate_instruction` found for one instruction.

    Attributes:
        instruction: the (rendered) instruction evaluated.
        vector: the train vector, its selection recorded (``vector.selection``).
        selection: the `Selection` made on the validation sweep.
        test: a `SettingSummary` per column of `SETTINGS`, in that order.
    """

    instruction: Instruction
    vector: InstructionVector
    selection: Selection
    test: dict[str, SettingSummary]


def raw_file(name: str, part: str) -> str:
    """The file name of raw part `part` (one of `RAW_PARTS`) for instruction `name`.

    Example:
        >>> [raw_file("title", part) for part in RAW_PARTS]
        ['title.val.jsonl', 'title.test.no_instruction.jsonl', 'title.test.instruction.jsonl']
    """
    check_choice("part", part, Literal[RAW_PARTS])
    return f"{name}.{part}.jsonl"


def summarize_column(table: pd.DataFrame, metric: str) -> SettingSummary:
    """The `SettingSummary` of a sweep table's rows.

    Example:
        >>> rows = pd.DataFrame({"follows_strict": [True, False], "follows_loose": [True, True],
        ...     "degenerate": [False, False]})
        >>> summarize_column(rows, "follows_loose")
        SettingSummary(accuracy=1.0, strict=0.5, loose=1.0, degenerate=0.0, n=2)
    """
    check_choice("metric", metric, Metric)
    return SettingSummary(
        accuracy=float(table[metric].mean()),
        strict=float(table["follows_strict"].mean()),
        loose=float(table["follows_loose"].mean()),
        degenerate=float(table["degenerate"].mean()),
        n=int(len(table)),
    )


def evaluate_instruction(
    model: Any,
    instr: Instruction | str,
    config: ProtocolConfig,
    *,
    raw_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> ProtocolResult:
    """Run the module's protocol for `instr` (an `Instruction` or a bundled name).

    Example:
        >>> config = ProtocolConfig(layers=[1], modes=["add"], strengths=[1], train_pairs=2,
        ...     val_queries=2, test_queries=2, max_new_tokens=2)
        >>> result = evaluate_instruction(model, "no_comma", config)
        >>> list(result.test) == list(SETTINGS), result.test["instruction"].n
        (True, 2)
    """
    if isinstance(instr, str):
        instr = instruction(instr)
    if not isinstance(instr, Instruction):
        raise ArgumentTypeError(
            f"instr must be an Instruction or a bundled instruction's name, "
            f"got {type(instr).__name__} {instr!r:.60}"
        )
    if not isinstance(config, ProtocolConfig):
        raise ArgumentTypeError(
            f"config must be a ProtocolConfig, got {type(config).__name__} {config!r:.60}"
        )
    check_bool("progress", progress)
    folder = None if raw_dir is None else user_path(raw_dir, "raw_dir")

    def raw(part: str) -> Path | None:
        return None if folder is None else folder / raw_file(instr.name, part)

    layers = list(config.layers)
    common = {
        "max_new_tokens": config.max_new_tokens,
        "batch_size": config.batch_size,
        "progress": progress,
    }
    pairs = make_pairs(instr, split="train", n=config.train_pairs)
    read_at = layers if config.vector_layers == "swept" else None
    vec = compute_instruction_vector(model, pairs, layers=read_at, progress=progress)
    val_queries = [q.text for q in base_queries("validation")[: config.val_queries]]
    grid = {"layers": layers, "modes": list(config.modes), "strengths": list(config.strengths)}
    val = sweep(model, vec, val_queries, **grid, **common, out=raw("val"))
    # Looked up at call time, so that a test can substitute the rule.
    chosen = selection.select(val, vec, metric=config.metric)
    vec = vec.with_selection(chosen.record())
    s = chosen.setting
    prompt_sets = {
        "no_instruction": [q.text for q in base_queries("test")[: config.test_queries]],
        "instruction": [
            SweepPrompt(p.with_instruction, p.instruction_id, p.kwargs)
            for p in make_pairs(instr, split="test", n=config.test_queries)
        ],
    }
    test: dict[str, SettingSummary] = {}
    for label, prompts in prompt_sets.items():
        out = raw(f"test.{label}")
        if s.layer is None:
            # A sweep always steers something: an add of weight 0 changes no activation.
            zero = {"layers": layers[:1], "modes": ["add"], "strengths": [0.0]}
            keep_baseline = config.unsteered == "baseline"
            table = sweep(model, vec, prompts, **zero, baseline=keep_baseline, **common, out=out)
            base = steered = table[table.layer.isna()] if keep_baseline else table
        else:
            one = {
                "layers": [s.layer],
                "modes": [s.mode],
                "strengths": [1.0 if s.strength is None else s.strength],
            }
            table = sweep(model, vec, prompts, **one, **common, out=out)
            base, steered = table[table.layer.isna()], table[table.layer.notna()]
        test[label] = summarize_column(base, config.metric)
        test[label + "+steer"] = summarize_column(steered, config.metric)
    return ProtocolResult(instr, vec, chosen, {k: test[k] for k in SETTINGS})
