"""The train → validation → select → test protocol for one instruction.

1. A vector from the instruction's train pairs (`compute_instruction_vector`).
2. Per condition, a sweep of the layer × mode × strength grid, with the unsteered
   baseline, on the first validation queries: once without the instruction in the
   prompt, once with it; `select` picks a setting (or "do not steer") for each, as the
   reference method searches the two conditions separately.
3. The test queries, without and with the instruction in the prompt, each run
   unsteered and with its own condition's selected setting: the four columns of
   `SETTINGS`.
4. Statistics (`workbench.evaluation.statistics`): each column's shares carry their
   `n` and 95% Wilson intervals, and per condition the steered column is compared
   with the plain one prompt by prompt (`ProtocolResult.effects`: gain, paired
   interval, exact McNemar p-value, prompts fixed and broken).

"Do not steer" (selection keeps the unsteered baseline) is decided here once: that
condition's test prompts are run unsteered once (an add of weight 0, which changes
no activation), and that one table serves both its plain and its "+steer" column, so
the two are identical by construction.

With `raw_dir` every sweep keeps its rows in ``{name}.{part}.jsonl`` for each part of
`RAW_PARTS`, and a rerun resumes from them (a file of another configuration is refused, see
`workbench.evaluation.sweep_files`). Used by ``workbench evaluate`` and by the
reference experiments (``make results``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
from .ifeval_rows import IFEvalItem
from .selection import Metric, Selection
from .statistics import Effect, paired_effect, proportion
from .sweeps import SweepPrompt, sweep

# The four test columns, in table order.
SETTINGS = ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")

# The conditions of `ProtocolResult.effects` and the test column of each (its plain
# column; "+steer" is added for the steered one).
CONDITIONS = {"without": "no_instruction", "with": "instruction"}

# The raw files of one instruction: ``{name}.{part}.jsonl`` (see `raw_file`).
RAW_PARTS = ("val.no_instruction", "val.instruction", "test.no_instruction", "test.instruction")


@dataclass(frozen=True)
class ProtocolConfig:
    """What `evaluate_instruction` does; every value is checked when it is made.

    Attributes:
        layers, modes, strengths: the validation grid (see `sweep`).
        train_pairs, val_queries, test_queries: how many of each split's base queries
            (the first ones) make the train pairs, the validation and the test prompts.
        metric: the accuracy column `select` compares and the summaries report.

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
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "modes", tuple(modes))
        object.__setattr__(self, "strengths", tuple(strengths))


@dataclass(frozen=True)
class SettingSummary:
    """One test column: shares of the `n` responses that follow (by the config's
    metric, strictly, loosely), that the quality guard marks degenerate, and that
    follow by the metric and are not degenerate (`clean_accuracy`).

    Each ``*ci95`` is the share's 95% Wilson interval ``(low, high)`` over the `n`
    prompts (`workbench.evaluation.statistics.wilson`): `ci95` of `accuracy`,
    `degenerate_ci95` of `degenerate`, `clean_ci95` of `clean_accuracy`.
    """

    accuracy: float
    strict: float
    loose: float
    degenerate: float
    n: int
    ci95: tuple[float, float]
    degenerate_ci95: tuple[float, float]
    clean_accuracy: float
    clean_ci95: tuple[float, float]


@dataclass(frozen=True)
class ProtocolResult:
    """What `evaluate_instruction` found for one instruction.

    Attributes:
        instruction: the (rendered) instruction evaluated.
        vector: the train vector (read at the swept layers), with the "without"
            condition's selection recorded (``vector.selection``): what steering with
            no instruction in the prompt applies, as ``workbench steer`` does.
        selections: per condition of `CONDITIONS`, the `Selection` made on that
            condition's validation sweep.
        test: a `SettingSummary` per column of `SETTINGS`, in that order.
        effects: per condition of `CONDITIONS` (``"without"`` the instruction in the
            prompt, ``"with"`` it), the paired `Effect` of its "+steer" column against
            its plain one on the same test prompts, by the config's metric. Under "do
            not steer" both columns are one run: gain 0, nothing fixed or broken.
    """

    instruction: Instruction
    vector: InstructionVector
    selections: dict[str, Selection]
    test: dict[str, SettingSummary]
    effects: dict[str, Effect]


def raw_file(name: str, part: str) -> str:
    """The file name of raw part `part` (one of `RAW_PARTS`) for instruction `name`.

    Example:
        >>> raw_file("title", "val.instruction")
        'title.val.instruction.jsonl'
    """
    check_choice("part", part, Literal[RAW_PARTS])
    return f"{name}.{part}.jsonl"


def summarize_column(table: pd.DataFrame, metric: str) -> SettingSummary:
    """The `SettingSummary` of a sweep table's rows (one per prompt).

    Example:
        >>> rows = pd.DataFrame({"follows_strict": [True, False], "follows_loose": [True, True],
        ...     "degenerate": [False, True]})
        >>> s = summarize_column(rows, "follows_loose")
        >>> s.accuracy, s.strict, s.degenerate, s.clean_accuracy, s.n
        (1.0, 0.5, 0.5, 0.5, 2)
        >>> [round(x, 3) for x in s.ci95]
        [0.342, 1.0]
    """
    check_choice("metric", metric, Metric)
    if len(table) == 0:
        raise InvalidArgumentError("the table holds no rows; a test column needs one per prompt")
    follows = proportion(table[metric].tolist())
    degenerate = proportion(table["degenerate"].tolist())
    # Both columns were just checked to hold only True/False, row for row.
    pairs = zip(table[metric].tolist(), table["degenerate"].tolist(), strict=True)
    clean = proportion([bool(f) and not d for f, d in pairs])
    return SettingSummary(
        accuracy=follows.value,
        strict=float(table["follows_strict"].mean()),
        loose=float(table["follows_loose"].mean()),
        degenerate=degenerate.value,
        n=int(len(table)),
        ci95=follows.ci95,
        degenerate_ci95=degenerate.ci95,
        clean_accuracy=clean.value,
        clean_ci95=clean.ci95,
    )


def paired_columns(plain: pd.DataFrame, steered: pd.DataFrame, metric: str) -> Effect:
    """The `Effect` of `steered` against `plain`, sweep rows paired by prompt.

    Rows are matched on ``prompt_index`` (the prompt's place in the sweep's list); both
    tables must hold the same prompts, once each.

    Example:
        >>> plain = pd.DataFrame({"prompt_index": [0, 1, 2], "prompt": ["a", "b", "c"],
        ...     "follows_strict": [True, False, False]})
        >>> steered = plain.assign(follows_strict=[True, True, True]).iloc[::-1]
        >>> e = paired_columns(plain, steered, "follows_strict")
        >>> e.fixed, e.broken, e.n
        (2, 0, 3)
    """
    check_choice("metric", metric, Metric)
    keys = []
    for name, table in (("plain", plain), ("steered", steered)):
        index = table["prompt_index"]
        if index.duplicated().any():
            twice = sorted(set(index[index.duplicated()].tolist()))
            raise InvalidArgumentError(f"{name} holds prompt_index {twice} more than once")
        keys.append(set(index.tolist()))
    if keys[0] != keys[1]:
        raise InvalidArgumentError(
            f"plain and steered hold different prompts: only plain {sorted(keys[0] - keys[1])}, "
            f"only steered {sorted(keys[1] - keys[0])}"
        )
    a = plain.set_index("prompt_index").sort_index()
    b = steered.set_index("prompt_index").sort_index()
    if (a["prompt"] != b["prompt"]).any():
        raise InvalidArgumentError("plain and steered hold different prompt texts at one index")
    return paired_effect(a[metric].tolist(), b[metric].tolist())


def evaluate_instruction(
    model: Any,
    instr: Instruction | str,
    config: ProtocolConfig,
    *,
    raw_dir: str | os.PathLike | None = None,
    progress: bool = False,
    test_items: Sequence[IFEvalItem] | None = None,
) -> ProtocolResult:
    """Run the module's protocol for `instr` (an `Instruction` or a bundled name).

    `test_items` (a group of `workbench.evaluation.ifeval_rows.read_ifeval_rows`)
    replaces the bundled test split: the "instruction" columns run each item's
    ``prompt``, the "no instruction" columns its ``prompt_without_instruction``
    (required of every item), each scored with the item's own id and kwargs; then
    ``config.test_queries`` is not used.

    Example:
        >>> config = ProtocolConfig(layers=[1], modes=["add"], strengths=[1], train_pairs=2,
        ...     val_queries=2, test_queries=2, max_new_tokens=2)
        >>> result = evaluate_instruction(model, "no_comma", config)
        >>> list(result.test) == list(SETTINGS), result.test["instruction"].n
        (True, 2)
        >>> list(result.effects), result.effects["with"].n
        (['without', 'with'], 2)
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
    own = None if test_items is None else _own_prompts(test_items)
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
    vec = compute_instruction_vector(model, pairs, layers=layers, progress=progress)
    grid = {"layers": layers, "modes": list(config.modes), "strengths": list(config.strengths)}
    selections: dict[str, Selection] = {}
    test: dict[str, SettingSummary] = {}
    effects: dict[str, Effect] = {}
    for condition, label in CONDITIONS.items():
        val = _prompts(
            instr, "validation", config.val_queries, with_instruction=condition == "with"
        )
        table = sweep(model, vec, val, **grid, **common, out=raw(f"val.{label}"))
        # Looked up at call time, so that a test can substitute the rule.
        chosen = selections[condition] = selection.select(table, vec, metric=config.metric)
        s = chosen.setting
        if test_items is None:
            prompts = _prompts(
                instr, "test", config.test_queries, with_instruction=condition == "with"
            )
        else:
            prompts = own[condition]
        out = raw(f"test.{label}")
        if s.layer is None:
            # A sweep always steers something: an add of weight 0 changes no activation.
            zero = {"layers": layers[:1], "modes": ["add"], "strengths": [0.0]}
            base = steered = sweep(model, vec, prompts, **zero, baseline=False, **common, out=out)
        else:
            strength = 1.0 if s.strength is None else s.strength  # ablate takes none
            one = {"layers": [s.layer], "modes": [s.mode], "strengths": [strength]}
            table = sweep(model, vec, prompts, **one, **common, out=out)
            base, steered = table[table.layer.isna()], table[table.layer.notna()]
        test[label] = summarize_column(base, config.metric)
        test[label + "+steer"] = summarize_column(steered, config.metric)
        effects[condition] = paired_columns(base, steered, config.metric)
    vec = vec.with_selection(selections["without"].record())
    return ProtocolResult(instr, vec, selections, {k: test[k] for k in SETTINGS}, effects)


def _own_prompts(items: Any) -> dict[str, list[SweepPrompt]]:
    """Per condition, the sweep prompts of `test_items`, each checked by its own id."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ArgumentTypeError(
            f"test_items must be a non-empty list of IFEvalItem, got {items!r:.60}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, IFEvalItem):
            raise ArgumentTypeError(f"test_items[{i}] must be an IFEvalItem, got {item!r:.60}")
    lacking = [item.line for item in items if item.prompt_without_instruction is None]
    if lacking:
        raise InvalidArgumentError(
            f"test rows at lines {lacking} have no prompt_without_instruction, which the "
            "no-instruction settings run"
        )
    return {
        "without": [
            SweepPrompt(item.prompt_without_instruction, item.instruction_id, item.kwargs)
            for item in items
        ],
        "with": [SweepPrompt(item.prompt, item.instruction_id, item.kwargs) for item in items],
    }


def _prompts(
    instr: Instruction, split: str, n: int, *, with_instruction: bool
) -> list[str] | list[SweepPrompt]:
    """The first `n` base queries of `split`, bare or carrying `instr` (checked by it)."""
    if not with_instruction:
        return [q.text for q in base_queries(split)[:n]]
    return [
        SweepPrompt(p.with_instruction, p.instruction_id, p.kwargs)
        for p in make_pairs(instr, split=split, n=n)
    ]
