"""Composition and interference of instruction vectors, as tables.

`joint_responses` is the expensive part: it generates, unsteered, steered with each
vector alone and with each pair of vectors together, on prompts that carry no
instruction, and scores every response against every vector's own IFEval checker
(`workbench.score`). `composition_table` (per pair: cosine against joint accuracy)
and `interference_table` (steer with one, check another) only summarise its rows,
so both come from one run. The drawings are in `analyses.composition_figures`.

Steering settings follow `workbench.sweep`: ``strength`` is a multiple of each
mode's default coefficient at that layer (`workbench.steering.settings.Setting`), so vectors
of different norms are steered comparably.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from workbench import InstructionVector, PerRow, format_prompt, score
from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.evaluation.quality import QualityThresholds, generate_with_quality
from workbench.evaluation.selection import Metric
from workbench.evaluation.sweeps import settings_grid
from workbench.options import check_choice, check_int
from workbench.vectors.checks import checks_once

from .style import labelled

__all__ = ["composition_table", "interference_table", "joint_responses", "pair_cosines"]

RESPONSE_COLUMNS = (
    "a",
    "b",
    "layer",
    "mode",
    "strength",
    "prompt_index",
    "prompt",
    "response",
    "degenerate",
    "checked",
    "instruction_id",
    "kwargs",
    "follows_strict",
    "follows_loose",
)


def _vectors(vectors: Any) -> dict[str, InstructionVector]:
    if isinstance(vectors, (str, bytes, InstructionVector)) or not isinstance(
        vectors, (Mapping, Sequence)
    ):
        raise ArgumentTypeError(
            f"vectors must be {{label: InstructionVector}} or a list of vectors, got {vectors!r:.80}"
        )
    out = labelled(vectors)
    if not out:
        raise InvalidArgumentError("vectors is empty; give at least one instruction vector")
    for label, vec in out.items():
        if not isinstance(label, str):
            raise ArgumentTypeError(
                f"vector labels must be str, got {type(label).__name__} {label!r}"
            )
        if not isinstance(vec, InstructionVector):
            raise ArgumentTypeError(
                f"vectors[{label!r}] must be an InstructionVector, got {type(vec).__name__}"
            )
    return out


def pair_cosines(vectors: Any, *, layer: int) -> pd.DataFrame:
    """Cosine between the mean differences of every pair of vectors at `layer`.

    Returns one row per unordered pair, in the order given: ``a, b, layer, cosine``.

    Example:
        >>> other = compute_instruction_vector(model, make_pairs("one_sentence", n=3))
        >>> table = pair_cosines({"lowercase": vec, "one_sentence": other, "again": vec}, layer=1)
        >>> table[["a", "b"]].values.tolist(), round(float(table.cosine.iloc[1]), 4)
        ([['lowercase', 'one_sentence'], ['lowercase', 'again'], ['one_sentence', 'again']], 1.0)
    """
    vecs = _vectors(vectors)
    layer = check_int("layer", layer, low=0)
    diffs = {label: v.diffs[v.row(layer)] for label, v in vecs.items()}
    rows = [
        {
            "a": a,
            "b": b,
            "layer": layer,
            "cosine": float(torch.nn.functional.cosine_similarity(diffs[a], diffs[b], dim=0)),
        }
        for a, b in itertools.combinations(vecs, 2)
    ]
    return pd.DataFrame(rows, columns=["a", "b", "layer", "cosine"])


def _prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ArgumentTypeError(f"prompts must be a non-empty list of str, got {prompts!r:.80}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ArgumentTypeError(f"prompt {i} must be a str, got {type(p).__name__} {p!r:.60}")
    return list(prompts)


def joint_responses(
    model: Any,
    vectors: Mapping[str, InstructionVector] | Sequence[InstructionVector],
    prompts: Sequence[str],
    *,
    layer: int,
    mode: str = "add",
    strength: float = 1.0,
    pairs: bool = True,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    thresholds: QualityThresholds | None = None,
) -> pd.DataFrame:
    """Generate unsteered, with each vector alone and (if `pairs`) with each pair
    together, then score every response against every vector's instruction.

    Every vector steers at `layer` with `mode` and `strength` (as in `workbench.sweep`),
    and must carry the IFEval ``instruction_id`` and kwargs it is checked by. Prompts
    should carry no instruction: what follows an instruction is the steering's doing.
    All conditions run as one batched `generate` call (greedy), with the quality guard.

    Returns:
        One row per (condition, prompt, checked vector), columns `RESPONSE_COLUMNS`:
        ``a``, ``b`` the labels steered with (both missing: unsteered; ``b``
        missing: ``a`` alone), ``checked`` the label whose checker scored the row.
        (1 + k + k(k-1)/2) × len(prompts) × k rows for k vectors.

    Example:
        >>> other = compute_instruction_vector(model, make_pairs("one_sentence", n=3))
        >>> rows = joint_responses(model, {"lowercase": vec, "one_sentence": other}, ["Hi", "Name a tree."],
        ...     layer=1, max_new_tokens=3)
        >>> len(rows), rows.drop_duplicates(["a", "b"])[["a", "b"]].fillna("-").values.tolist()
        (16, [['-', '-'], ['lowercase', '-'], ['one_sentence', '-'], ['lowercase', 'one_sentence']])
    """
    vecs = _vectors(vectors)
    texts = _prompts(prompts)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not isinstance(pairs, bool):
        raise ArgumentTypeError(f"pairs must be a bool, got {pairs!r}")
    # One check of each vector against the model, here and in generate: a vector from
    # other weights warns once.
    with checks_once():
        settings = {}
        for label, vec in vecs.items():
            if vec.instruction_id is None:
                raise InvalidArgumentError(
                    f"vectors[{label!r}] carries no instruction_id to check responses against; "
                    "build it from make_pairs(<instruction>) or set instruction_id and kwargs"
                )
            vec.check_model(model)
            # settings_grid validates the layer (held by this vector), mode and strength.
            settings[label] = settings_grid(vec, [layer], [mode], [strength], baseline=False)[0]
        labels = list(vecs)
        conditions: list[tuple[str, ...]] = [(), *((label,) for label in labels)]
        if pairs:
            conditions += list(itertools.combinations(labels, 2))
        units = [(c, i, p) for c in conditions for i, p in enumerate(texts)]
        formatted = [format_prompt(model, p) for _, _, p in units]
        steering = PerRow([[settings[x].term(vecs[x]) for x in c] or None for c, _, _ in units])
        out, quality = generate_with_quality(
            model,
            formatted,
            steering,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            thresholds=thresholds,
        )
    setting = next(iter(settings.values()))
    rows = []
    for (cond, index, prompt), text, bad in zip(
        units, out.texts, quality["degenerate"], strict=True
    ):
        for checked, vec in vecs.items():
            strict = score(text, vec.instruction_id, vec.kwargs)
            rows.append(
                {
                    "a": cond[0] if cond else None,
                    "b": cond[1] if len(cond) > 1 else None,
                    "layer": layer,
                    "mode": setting.mode,
                    "strength": setting.strength,
                    "prompt_index": index,
                    "prompt": prompt,
                    "response": text,
                    "degenerate": bool(bad),
                    "checked": checked,
                    "instruction_id": vec.instruction_id,
                    "kwargs": dict(vec.kwargs),
                    "follows_strict": strict,
                    "follows_loose": strict
                    or score(text, vec.instruction_id, vec.kwargs, loose=True),
                }
            )
    return pd.DataFrame(rows, columns=list(RESPONSE_COLUMNS))


def _responses(responses: Any, needed: set[str], metric: str) -> pd.DataFrame:
    check_choice("metric", metric, Metric)
    if not isinstance(responses, pd.DataFrame):
        raise ArgumentTypeError(
            f"responses must be the DataFrame of joint_responses(), got {type(responses).__name__}"
        )
    missing = sorted((needed | {metric}) - set(responses.columns))
    if missing:
        raise InvalidArgumentError(
            f"responses lack columns {missing}; build them with joint_responses()"
        )
    return responses


def _share(rows: pd.DataFrame, column: str) -> float:
    return float(rows[column].astype(float).mean()) if len(rows) else float("nan")


def interference_table(responses: pd.DataFrame, *, metric: str = "follows_strict") -> pd.DataFrame:
    """How steering with one vector moves each instruction's checker, from `joint_responses`.

    Returns one row per (steered_with, checked), vectors alone only: ``steered_with,
    checked, own`` (the vector's own instruction), ``n, accuracy, baseline_accuracy``
    (unsteered), ``delta`` (accuracy minus baseline) and ``degenerate_share``.

    Example:
        >>> rows = pd.DataFrame({"a": [None, None, "x", "x"], "b": [None] * 4,
        ...     "prompt_index": [0] * 4, "checked": ["x", "y", "x", "y"],
        ...     "follows_strict": [False, True, True, False], "degenerate": [False] * 4})
        >>> interference_table(rows)[["steered_with", "checked", "delta"]].values.tolist()
        [['x', 'x', 1.0], ['x', 'y', -1.0]]
    """
    needed = {"a", "b", "prompt_index", "checked", "degenerate"}
    rows = _responses(responses, needed, metric)
    base = rows[rows["a"].isna()]
    alone = rows[rows["a"].notna() & rows["b"].isna()]
    if alone.empty:
        raise InvalidArgumentError(
            "responses hold no rows steered with a single vector (a set, b missing)"
        )
    out = []
    for (steered_with, checked), group in alone.groupby(["a", "checked"], sort=False):
        accuracy = _share(group, metric)
        baseline = _share(base[base["checked"] == checked], metric)
        out.append(
            {
                "steered_with": steered_with,
                "checked": checked,
                "own": steered_with == checked,
                "n": len(group),
                "accuracy": accuracy,
                "baseline_accuracy": baseline,
                "delta": accuracy - baseline,
                "degenerate_share": _share(group, "degenerate"),
            }
        )
    return pd.DataFrame(out)


def _per_prompt(rows: pd.DataFrame, checked: str, metric: str) -> pd.Series:
    return rows[rows["checked"] == checked].set_index("prompt_index")[metric].astype(bool)


def composition_table(
    responses: pd.DataFrame,
    vectors: Mapping[str, InstructionVector] | Sequence[InstructionVector],
    *,
    metric: str = "follows_strict",
) -> pd.DataFrame:
    """Per pair of vectors steered together: their cosine and how well both instructions
    are followed, from `joint_responses` (run with ``pairs=True``) and the same vectors.

    Returns one row per pair: ``a, b, layer, cosine`` (of the mean differences at the
    steering layer), ``n`` (prompts), ``accuracy_a, accuracy_b`` (each checker under
    joint steering), ``joint_accuracy`` (both followed by the same response),
    ``alone_accuracy_a, alone_accuracy_b`` (each vector steering alone),
    ``baseline_accuracy_a, baseline_accuracy_b, baseline_joint_accuracy`` (unsteered)
    and ``degenerate_share`` (under joint steering). Missing conditions give NaN.

    Example:
        >>> other = compute_instruction_vector(model, make_pairs("one_sentence", n=3))
        >>> rows = pd.DataFrame({"a": ["x", "x", None, None], "b": ["y", "y", None, None],
        ...     "layer": [1] * 4, "prompt_index": [0] * 4, "checked": ["x", "y", "x", "y"],
        ...     "follows_strict": [True, True, False, True], "degenerate": [False] * 4})
        >>> table = composition_table(rows, {"x": vec, "y": other})
        >>> table[["a", "b", "joint_accuracy", "baseline_joint_accuracy"]].values.tolist()
        [['x', 'y', 1.0, 0.0]]
    """
    needed = {"a", "b", "layer", "prompt_index", "checked", "degenerate"}
    rows = _responses(responses, needed, metric)
    vecs = _vectors(vectors)
    joint = rows[rows["a"].notna() & rows["b"].notna()]
    if joint.empty:
        raise InvalidArgumentError(
            "responses hold no rows steered with two vectors; run joint_responses with "
            "pairs=True and at least two vectors"
        )
    unknown = sorted((set(joint["a"]) | set(joint["b"])) - set(vecs))
    if unknown:
        raise InvalidArgumentError(
            f"responses steer with {unknown}, which are not among the vectors {list(vecs)}"
        )
    layers = rows["layer"].dropna().unique().tolist()
    if len(layers) != 1:
        raise InvalidArgumentError(f"responses must come from one steering layer, got {layers}")
    cosines = pair_cosines(vecs, layer=int(layers[0]))
    cosine = {
        (a, b): c for a, b, c in zip(cosines["a"], cosines["b"], cosines["cosine"], strict=True)
    }
    base = rows[rows["a"].isna()]
    out = []
    for (a, b), group in joint.groupby(["a", "b"], sort=False):
        fa, fb = _per_prompt(group, a, metric), _per_prompt(group, b, metric)
        ba, bb = _per_prompt(base, a, metric), _per_prompt(base, b, metric)
        both = (fa & fb.reindex(fa.index, fill_value=False)).astype(float)
        base_both = (ba & bb.reindex(ba.index, fill_value=False)).astype(float)

        def alone(x: str) -> float:
            return _share(
                rows[(rows["a"] == x) & rows["b"].isna() & (rows["checked"] == x)], metric
            )

        out.append(
            {
                "a": a,
                "b": b,
                "layer": int(layers[0]),
                "cosine": cosine.get((a, b), cosine.get((b, a))),
                "n": len(fa),
                "accuracy_a": float(fa.mean()) if len(fa) else float("nan"),
                "accuracy_b": float(fb.mean()) if len(fb) else float("nan"),
                "joint_accuracy": float(both.mean()) if len(both) else float("nan"),
                "alone_accuracy_a": alone(a),
                "alone_accuracy_b": alone(b),
                "baseline_accuracy_a": float(ba.mean()) if len(ba) else float("nan"),
                "baseline_accuracy_b": float(bb.mean()) if len(bb) else float("nan"),
                "baseline_joint_accuracy": float(base_both.mean()) if len(ba) else float("nan"),
                "degenerate_share": _share(group[group["checked"] == a], "degenerate"),
            }
        )
    return pd.DataFrame(out)
