"""The train → validation → select → test protocol for one instruction.

1. A vector from the instruction's train pairs (`compute_instruction_vector`).
2. A sweep of the layer × mode × strength grid, with the unsteered baseline, on the
   first validation queries; `select` picks a setting (or "do not steer").
3. The test queries, without and with the instruction in the prompt, each run
   unsteered and with the selected setting: the four columns of `SETTINGS`.
4. Statistics (`workbench.evaluation.statistics`): each column's shares carry their
   `n` and 95% Wilson intervals, and per condition the steered column is compared
   with the plain one prompt by prompt (`ProtocolResult.effects`: gain, paired
   interval, exact McNemar p-value, prompts fixed and broken).

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
from .statistics import Effect, paired_effect, proportion
from .sweeps import SweepPrompt, sweep

# The four test columns, in table order.
SETTINGS = ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")

# The conditions of `ProtocolResult.effects` and the test column of each (its plain
# column; "+steer" is added for the steered one).
CONDITIONS = {"without": "no_instruction", "with": "instruction"}

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
        vector: the train vector, its selection recorded (``vector.selection``).
        selection: the `Selection` made on the validation sweep.
        test: a `SettingSummary` per column of `SETTINGS`, in that order.
        effects: per condition of `CONDITIONS` (``"without"`` the instruction in the
            prompt, ``"with"`` it), the paired `Effect` of its "+steer" column against
            its plain one on the same test prompts, by the config's metric. Under "do
            not steer" both columns are one run: gain 0, nothing fixed or broken.
    """

    instruction: Instruction
    vector: InstructionVector
    selection: Selection
    test: dict[str, SettingSummary]
    effects: dict[str, Effect]


def raw_file(name: str, part: str) -> str:
    """The file name of raw part `part` (one of `RAW_PARTS`) for instruction `name`.

    Example:
        >>> [raw_file("title", part) for part in RAW_PARTS]
        ['title.val.jsonl', 'title.test.no_instruction.jsonl', 'title.test.instruction.jsonl']
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
) -> ProtocolResult:
    """Run the module's protocol for `instr` (an `Instruction` or a bundled name).

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
    effects: dict[str, Effect] = {}
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
        effects[label] = paired_columns(base, steered, config.metric)
    by_condition = {c: effects[label] for c, label in CONDITIONS.items()}
    return ProtocolResult(instr, vec, chosen, {k: test[k] for k in SETTINGS}, by_condition)
