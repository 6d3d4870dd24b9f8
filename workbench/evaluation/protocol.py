"""The train → validation → select → test protocol for one instruction.

1. A vector from the instruction's train pairs (`compute_instruction_vector`).
2. Per condition, a sweep of the layer × mode × strength grid, with the unsteered
   baseline, on the validation queries (the whole split unless told otherwise): once
   without the instruction in the prompt, once with it; `select` picks a setting (or
   "do not steer") for each, as the reference method searches the two conditions
   separately.
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
`RAW_PARTS`, the train vector is kept as ``{name}.vector.safetensors``, and a rerun
resumes from them (a file of another configuration is refused, see
`workbench.evaluation.sweep_files`). Used by ``workbench evaluate`` and by the
reference experiments (``make results``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.files import user_path
from workbench.options import (
    Mode,
    Objective,
    Preset,
    as_list,
    check_bool,
    check_choice,
    check_distinct,
    check_int,
    choices,
    float_list,
    int_list,
)
from workbench.steering.gates import Gate, gate_count_line
from workbench.vectors.instruction_vector import InstructionVector
from workbench.vectors.pairs import Instruction, base_queries, instruction, make_pairs

from . import selection
from .ifeval_rows import IFEvalItem
from .selection import Metric, Selection
from .statistics import Effect, paired_effect, proportion
from .sweeps import SweepPrompt, sweep
from .train_vectors import train_vector

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

# The four test columns, in table order.
SETTINGS = ("no_instruction", "no_instruction+steer", "instruction", "instruction+steer")

# The conditions of `ProtocolResult.effects` and the test column of each (its plain
# column; "+steer" is added for the steered one).
CONDITIONS = {"without": "no_instruction", "with": "instruction"}

# The raw files of one instruction: ``{name}.{part}.jsonl`` (see `raw_file`).
RAW_PARTS = ("val.no_instruction", "val.instruction", "test.no_instruction", "test.instruction")


# Instruction ids whose validation answers get `ProtocolConfig.val_tokens_long`, as
# the reference code gives JSON and multiple sections 1024 tokens instead of 768. The
# workbench's own `length:verbose` (120 words or more, about 150 tokens) is added: at
# the quick preset's 128 tokens no answer could pass it, so validation could only
# ever choose "do not steer".
LONG_ANSWER_IDS = frozenset(
    {"detectable_format:json_format", "detectable_format:multiple_sections", "length:verbose"}
)


# What each preset sets; every other field keeps `ProtocolConfig`'s default, which is
# the reference protocol ("paper"). "quick" is sized for a laptop CPU and a small
# model: shorter budgets, every other swept layer, and a strength axis (a 135M model
# is broken by x1 at most layers, docs/evaluation.md "Presets").
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        "layer_step": 4,
        "strengths": (0.5, 1.0),
        "select_by": "clean_accuracy",
        "val_tokens": 128,
        "val_tokens_long": 192,
        "test_tokens": 256,
    },
}


@dataclass(frozen=True)
class ProtocolConfig:
    """What `evaluate_instruction` does; every value is checked when it is made. The
    defaults are the reference protocol, preset ``"paper"``; `ProtocolConfig.from_preset`
    starts from a named preset and changes any field.

    Attributes:
        preset: the preset it was made from (recorded, printed), or None.
        changed: the fields given beside the preset (recorded, printed).
        layers: the swept layers; None means ``range(n_layers // 5, n_layers,
            layer_step)`` of the model evaluated (`layers_for`).
        layer_step: the step of that range (the reference code's is 2).
        modes, strengths: the rest of the validation grid (see `sweep`).
        train_pairs, val_queries, test_queries: how many of each split's base queries
            (the first ones) make the train pairs, the validation and the test
            prompts; None is the whole split.
        metric: the IFEval accuracy the tables and effects report (loose, as in the
            reference; strict is reported beside it).
        select_by: what selection maximises, `metric`'s ``"accuracy"`` or
            ``"clean_accuracy"`` (follows and is not degenerate); see `select`.
        val_tokens, val_tokens_long, test_tokens: new tokens per validation answer
            (`val_tokens_long` for the ids of `LONG_ANSWER_IDS`) and per test answer.
        batch_size: rows generated together.
        gate: put the default `workbench.steering.gates.Gate` on every steered term,
            validation and test alike: a prompt is steered only if its last token's
            unsteered projection at the steered layer is below the midway between the
            vector's mean with- and without-instruction projections. The test
            columns count how often it opened (`SettingSummary.gate_on`).

    Example:
        >>> ProtocolConfig.from_preset("quick", val_queries=8).val_queries
        8
        >>> ProtocolConfig().layers_for(30)
        (6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28)
        >>> ProtocolConfig(metric="follows")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: metric 'follows' is not one of ('follows_strict', 'follows_loose')
    """

    preset: Preset | None = None
    changed: tuple[str, ...] = ()
    layers: tuple[int, ...] | None = None
    layer_step: int = 2
    modes: tuple[str, ...] = ("project",)
    strengths: tuple[float, ...] = (1.0,)
    train_pairs: int | None = None
    val_queries: int | None = None
    test_queries: int | None = None
    metric: Metric = "follows_loose"
    select_by: Objective = "accuracy"
    val_tokens: int = 768
    val_tokens_long: int = 1024
    test_tokens: int = 2048
    batch_size: int = 48
    gate: bool = False

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> ProtocolConfig:
        """The preset `name` (one of `PRESETS`) with `changes` to any of its fields.

        Example:
            >>> ProtocolConfig.from_preset("paper").val_tokens, ProtocolConfig.from_preset("quick").val_tokens
            (768, 128)
        """
        check_choice("preset", name, Preset)
        for key in ("preset", "changed"):
            if key in changes:
                raise InvalidArgumentError(f"{key!r} is set by ProtocolConfig.from_preset itself")
        fields = {f.name for f in dataclasses.fields(cls)} - {"preset", "changed"}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise InvalidArgumentError(
                f"unknown ProtocolConfig fields {unknown}; the fields are {sorted(fields)}"
            )
        if changes.get("layers") is not None and "layer_step" in changes:
            raise InvalidArgumentError(
                "layer_step is the step of the default layer range; with layers given it "
                "has no meaning: give one of them"
            )
        values = {**PRESETS[name], **changes}
        made = cls(**values)  # checked and normalised, as the preset's own values are
        base = _preset_values(name)
        changed = tuple(f for f in sorted(fields) if getattr(made, f) != base[f])
        return dataclasses.replace(made, preset=name, changed=changed)

    def __post_init__(self) -> None:
        if self.preset is not None:
            check_choice("preset", self.preset, Preset)
        changed = as_list("changed", self.changed, "['val_queries']")
        object.__setattr__(self, "changed", tuple(str(c) for c in changed))
        self._check_fields()
        if self.preset is not None:
            # The label must be true: every field not listed as changed is the preset's.
            base = _preset_values(self.preset)
            wrong = [
                f"{f}={getattr(self, f)!r}"
                for f in base
                if f not in self.changed and getattr(self, f) != base[f]
            ]
            if wrong:
                raise InvalidArgumentError(
                    f"preset {self.preset!r} does not hold {', '.join(wrong)}; make it with "
                    f"ProtocolConfig.from_preset({self.preset!r}, ...), which records changes"
                )

    def _check_fields(self) -> None:
        if self.layers is not None:
            layers = int_list("layers", self.layers, "layer")
            for i, layer in enumerate(layers):
                check_int(f"layers[{i}]", layer, low=0)
            if not layers:
                raise InvalidArgumentError("layers is empty; give at least one, or None")
            object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "layer_step", check_int("layer_step", self.layer_step, low=1))
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
            # One pair or prompt per base query of the split; None is all of them.
            high = len(base_queries(split))
            value = getattr(self, name)
            value = high if value is None else check_int(name, value, low=1, high=high)
            object.__setattr__(self, name, value)
        for name in ("val_tokens", "val_tokens_long", "test_tokens", "batch_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        check_choice("metric", self.metric, Metric)
        check_choice("select_by", self.select_by, Objective)
        check_bool("gate", self.gate)
        object.__setattr__(self, "modes", tuple(modes))
        object.__setattr__(self, "strengths", tuple(strengths))

    def layers_for(self, n_layers: int) -> tuple[int, ...]:
        """The swept layers on a model of `n_layers` (refused when one is out of range)."""
        n_layers = check_int("n_layers", n_layers, low=1)
        if self.layers is None:
            return tuple(range(n_layers // 5, n_layers, self.layer_step))
        outside = [layer for layer in self.layers if layer >= n_layers]
        if outside:
            raise InvalidArgumentError(
                f"layers {outside} are out of range for a model of {n_layers} layers "
                f"(0..{n_layers - 1})"
            )
        return self.layers

    def val_tokens_for(self, instruction_id: str) -> int:
        """The validation budget for answers checked by `instruction_id`."""
        return self.val_tokens_long if instruction_id in LONG_ANSWER_IDS else self.val_tokens

    def record(self) -> dict[str, Any]:
        """The configuration as JSON-friendly fields (what results store)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def describe(
        self, n_layers: int | None = None, *, own_val: bool = False, own_test: bool = False
    ) -> str:
        """One line for the top of an output: the preset, what was changed, the values.
        `own_val` / `own_test`: the validation / test prompts are the user's rows (as
        `evaluate_instruction`'s ``val_items`` / ``test_items``), not the bundled split.

        Example:
            >>> print(ProtocolConfig.from_preset("quick", val_queries=8).describe(30))  # doctest: +NORMALIZE_WHITESPACE
            preset quick (changed: val_queries): layers 6,10,14,18,22,26; modes project;
            strengths 0.5,1; metric follows_loose (strict beside); select by clean_accuracy;
            train 108 pairs; validation 8 queries, 128 new tokens (192 for JSON, multiple
            sections and verbose); test 24 queries, 256 new tokens
        """
        head = "no preset" if self.preset is None else f"preset {self.preset}"
        other = "strict" if self.metric == "follows_loose" else "loose"
        if self.changed:
            head += f" (changed: {', '.join(self.changed)})"
        if n_layers is not None:
            layers = ",".join(map(str, self.layers_for(n_layers)))
        elif self.layers is not None:
            layers = ",".join(map(str, self.layers))
        else:
            layers = f"range(n_layers // 5, n_layers, {self.layer_step})"
        val = "your rows" if own_val else f"{self.val_queries} queries"
        test = "your rows" if own_test else f"{self.test_queries} queries"
        return (
            f"{head}: layers {layers}; modes {','.join(self.modes)}; strengths "
            f"{','.join(f'{s:g}' for s in self.strengths)}; metric {self.metric} "
            f"({other} beside); select by {self.select_by}; train {self.train_pairs} pairs; "
            f"validation {val}, {self.val_tokens} new tokens "
            f"({self.val_tokens_long} for JSON, multiple sections and verbose); test "
            f"{test}, {self.test_tokens} new tokens" + ("; gated" if self.gate else "")
        )


@functools.cache
def _preset_values(name: str) -> dict[str, Any]:
    """The checked field values of preset `name` (less ``preset`` and ``changed``)."""
    made = ProtocolConfig(**PRESETS[name])
    return {
        f.name: getattr(made, f.name)
        for f in dataclasses.fields(made)
        if f.name not in ("preset", "changed")
    }


@dataclass(frozen=True)
class SettingSummary:
    """One test column: shares of the `n` responses that follow (by the config's
    metric, strictly, loosely), that the quality guard marks degenerate, and that
    follow by the metric and are not degenerate (`clean_accuracy`).

    Each ``*ci95`` is the share's 95% Wilson interval ``(low, high)`` over the `n`
    prompts (`workbench.evaluation.statistics.wilson`): `ci95` of `accuracy`,
    `degenerate_ci95` of `degenerate`, `clean_ci95` of `clean_accuracy`,
    `strict_ci95` and `loose_ci95` of `strict` and `loose`.
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
    strict_ci95: tuple[float, float]
    loose_ci95: tuple[float, float]
    # Of the `n` prompts, how many a gated term steered; None when nothing was gated.
    gate_on: int | None = None

    def gate_line(self) -> str:
        """``"gate on for 3 of 24 prompts"``, or ``""`` when nothing was gated."""
        return "" if self.gate_on is None else gate_count_line(self.gate_on, self.n)


@dataclass(frozen=True)
class ProtocolResult:
    """What `evaluate_instruction` found for one instruction.

    Attributes:
        instruction: the (rendered) instruction evaluated.
        config: the configuration it was evaluated with.
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
    config: ProtocolConfig
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
    strict = proportion(table["follows_strict"].tolist())
    loose = proportion(table["follows_loose"].tolist())
    gate_on = None
    if "gate_on" in table and table["gate_on"].notna().any():
        gate_on = int(sum(v is True or v == 1 for v in table["gate_on"].tolist()))
    return SettingSummary(
        accuracy=follows.value,
        strict=strict.value,
        loose=loose.value,
        degenerate=degenerate.value,
        n=int(len(table)),
        ci95=follows.ci95,
        degenerate_ci95=degenerate.ci95,
        clean_accuracy=clean.value,
        clean_ci95=clean.ci95,
        strict_ci95=strict.ci95,
        loose_ci95=loose.ci95,
        gate_on=gate_on,
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
    val_items: Sequence[IFEvalItem] | None = None,
    vector: InstructionVector | None = None,
    executor: RayExecutor | None = None,
) -> ProtocolResult:
    """Run the module's protocol for `instr` (an `Instruction` or a bundled name).

    `test_items` (a group of `workbench.evaluation.ifeval_rows.read_ifeval_rows`)
    replaces the bundled test split: the "instruction" columns run each item's
    ``prompt``, the "no instruction" columns its ``prompt_without_instruction``
    (required of every item), each scored with the item's own id and kwargs; then
    ``config.test_queries`` is not used. `val_items` does the same for the validation
    sweeps, in place of the bundled validation split and ``config.val_queries``.

    `vector` steers in place of one computed from `instr`'s train pairs (it must hold
    the swept layers): the reference method evaluates keyword exclusion with the
    inclusion vector subtracted, i.e. this with the inclusion vector and negative
    ``add`` strengths. Every prompt is checked by `instr`, whatever the vector's
    instruction.

    `executor` (a `workbench.evaluation.ray_executor.RayExecutor`) runs every sweep's
    generation on its Ray workers; the vector is extracted here. The result is the
    same as without it.

    Example:
        >>> config = ProtocolConfig(layers=[1], modes=["add"], strengths=[1], train_pairs=2,
        ...     val_queries=2, test_queries=2, val_tokens=2, val_tokens_long=2, test_tokens=2)
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
    own = None if test_items is None else _own_prompts(test_items, "test_items")
    own_val = None if val_items is None else _own_prompts(val_items, "val_items")
    folder = None if raw_dir is None else user_path(raw_dir, "raw_dir")

    def raw(part: str) -> Path | None:
        return None if folder is None else folder / raw_file(instr.name, part)

    layers = list(config.layers_for(model.cfg.n_layers))
    common = {
        "batch_size": config.batch_size,
        "progress": progress,
        "gate": Gate() if config.gate else None,
        "executor": executor,
    }
    val_common = {**common, "max_new_tokens": config.val_tokens_for(instr.instruction_id)}
    test_common = {**common, "max_new_tokens": config.test_tokens}
    vec = _vector(model, instr, config, layers, vector, progress, folder)
    grid = {"layers": layers, "modes": list(config.modes), "strengths": list(config.strengths)}
    selections: dict[str, Selection] = {}
    test: dict[str, SettingSummary] = {}
    effects: dict[str, Effect] = {}
    for condition, label in CONDITIONS.items():
        if own_val is None:
            val = _prompts(
                instr, "validation", config.val_queries, with_instruction=condition == "with"
            )
        else:
            val = own_val[condition]
        table = sweep(
            model,
            vec,
            val,
            **grid,
            **val_common,
            label=_bar(instr, "validation", condition),
            out=raw(f"val.{label}"),
        )
        # Looked up at call time, so that a test can substitute the rule.
        chosen = selections[condition] = selection.select(
            table, vec, metric=config.metric, objective=config.select_by
        )
        s = chosen.setting
        if test_items is None:
            prompts = _prompts(
                instr, "test", config.test_queries, with_instruction=condition == "with"
            )
        else:
            prompts = own[condition]
        out, bar = raw(f"test.{label}"), _bar(instr, "test", condition)
        if s.layer is None:
            # A sweep always steers something: an add of weight 0 changes no activation.
            zero = {"layers": layers[:1], "modes": ["add"], "strengths": [0.0]}
            # Nothing steers, so nothing is gated.
            base = steered = sweep(
                model,
                vec,
                prompts,
                **zero,
                baseline=False,
                **{**test_common, "gate": None},
                label=bar,
                out=out,
            )
        else:
            strength = 1.0 if s.strength is None else s.strength  # ablate takes none
            one = {"layers": [s.layer], "modes": [s.mode], "strengths": [strength]}
            table = sweep(model, vec, prompts, **one, **test_common, label=bar, out=out)
            base, steered = table[table.layer.isna()], table[table.layer.notna()]
        test[label] = summarize_column(base, config.metric)
        test[label + "+steer"] = summarize_column(steered, config.metric)
        effects[condition] = paired_columns(base, steered, config.metric)
    vec = vec.with_selection(selections["without"].record())
    return ProtocolResult(instr, config, vec, selections, {k: test[k] for k in SETTINGS}, effects)


def _bar(instr: Instruction, stage: str, condition: str) -> str:
    """A progress bar's label: ``"lowercase: test, with instruction"``."""
    return f"{instr.name}: {stage}, {condition} instruction"


def _vector(
    model: Any,
    instr: Instruction,
    config: ProtocolConfig,
    layers: list[int],
    vector: Any,
    progress: bool,
    folder: Path | None,
) -> InstructionVector:
    """`vector`, checked to hold the swept layers, or one from `instr`'s train pairs
    (kept in `folder` when given, see `workbench.evaluation.train_vectors`)."""
    if vector is None:
        return train_vector(
            model, instr, config.train_pairs, layers, folder=folder, progress=progress
        )
    if not isinstance(vector, InstructionVector):
        raise ArgumentTypeError(
            f"vector must be an InstructionVector or None, got {type(vector).__name__}"
        )
    missing = [layer for layer in layers if layer not in vector.layers]
    if missing:
        raise InvalidArgumentError(
            f"vector holds layers {list(vector.layers)}, not the swept layers {missing}"
        )
    return vector


def _own_prompts(items: Any, name: str) -> dict[str, list[SweepPrompt]]:
    """Per condition, the sweep prompts of `items` (argument `name`), each checked by
    its own id."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ArgumentTypeError(f"{name} must be a non-empty list of IFEvalItem, got {items!r:.60}")
    for i, item in enumerate(items):
        if not isinstance(item, IFEvalItem):
            raise ArgumentTypeError(f"{name}[{i}] must be an IFEvalItem, got {item!r:.60}")
    lacking = [item.line for item in items if item.prompt_without_instruction is None]
    if lacking:
        split = name.removesuffix("_items")
        raise InvalidArgumentError(
            f"{split} rows at lines {lacking} have no prompt_without_instruction, which the "
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
) -> list[SweepPrompt]:
    """The first `n` base queries of `split`, bare or carrying `instr`, each checked by
    `instr` (not by the vector's instruction, which may differ)."""
    return [
        SweepPrompt(
            p.with_instruction if with_instruction else p.without_instruction,
            p.instruction_id,
            p.kwargs,
        )
        for p in make_pairs(instr, split=split, n=n)
    ]
