"""Unsteered and steered answers to the same prompts, each with its checker verdict and
the quality guard's flag: the evidence a reader checks by eye (the demo, the report page).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from workbench.errors import ArgumentTypeError
from workbench.options import check_bool, check_int
from workbench.steering.generation import generate
from workbench.steering.terms import SteeringTerm
from workbench.vectors.pairs import Instruction

from .quality import QualityThresholds
from .scoring import score

ANSWER_COLUMNS = (
    "prompt",
    "unsteered",
    "steered",
    "unsteered_follows",
    "steered_follows",
    "unsteered_degenerate",
    "steered_degenerate",
)


def compare_answers(
    model: Any,
    prompts: Sequence[str],
    term: SteeringTerm | None,
    instr: Instruction,
    *,
    max_new_tokens: int = 64,
    loose: bool = True,
    thresholds: QualityThresholds | None = None,
) -> pd.DataFrame:
    """Generate each prompt (a user message, no instruction added) unsteered and with
    `term` (None: "do not steer", so both columns hold the same answers), and judge each
    answer by `instr`'s checker (loose by default, as the protocol's metric) and by the
    quality guard. One row a prompt, the columns `ANSWER_COLUMNS`.

    A degenerate answer may pass a checker (a loop of digits has no comma); use
    `clean_counts` to count only answers that follow and are not degenerate.

    Example:
        >>> table = compare_answers(model, ["Hi"], None, instruction("no_comma"), max_new_tokens=4)
        >>> list(table.columns) == list(ANSWER_COLUMNS), bool(table.unsteered[0] == table.steered[0])
        (True, True)
    """
    if not isinstance(instr, Instruction):
        raise ArgumentTypeError(
            f"instr must be an Instruction (workbench.instruction(name)), got {type(instr).__name__}"
        )
    if term is not None and not isinstance(term, SteeringTerm):
        raise ArgumentTypeError(
            f"term must be a SteeringTerm or None, got {type(term).__name__} {term!r:.60}"
        )
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    check_bool("loose", loose)
    limits = QualityThresholds() if thresholds is None else thresholds
    if not isinstance(limits, QualityThresholds):
        raise ArgumentTypeError(
            f"thresholds must be a QualityThresholds or None, got {type(limits).__name__}"
        )
    prompts = list(prompts)
    plain = generate(model, prompts, max_new_tokens=max_new_tokens)
    steered = (
        plain
        if term is None
        else generate(model, prompts, steering=term, max_new_tokens=max_new_tokens)
    )

    def follows(text: str) -> bool:
        return score(text, instr.instruction_id, instr.kwargs, loose=loose)

    return pd.DataFrame(
        {
            "prompt": prompts,
            "unsteered": plain,
            "steered": steered,
            "unsteered_follows": [follows(t) for t in plain],
            "steered_follows": [follows(t) for t in steered],
            "unsteered_degenerate": [limits.flags(t)["degenerate"] for t in plain],
            "steered_degenerate": [limits.flags(t)["degenerate"] for t in steered],
        },
        columns=list(ANSWER_COLUMNS),
    )


def clean_counts(answers: pd.DataFrame) -> dict[str, int]:
    """How many answers follow and are not degenerate, per column, and how many are
    degenerate: ``{"n", "unsteered", "steered", "unsteered_degenerate", "steered_degenerate"}``.

    Example:
        >>> rows = pd.DataFrame({"unsteered_follows": [True, False], "steered_follows": [True, True],
        ...     "unsteered_degenerate": [False, False], "steered_degenerate": [False, True]})
        >>> clean_counts(rows)
        {'n': 2, 'unsteered': 1, 'steered': 1, 'unsteered_degenerate': 0, 'steered_degenerate': 1}
    """
    out = {"n": len(answers)}
    for side in ("unsteered", "steered"):
        ok = answers[f"{side}_follows"].astype(bool) & ~answers[f"{side}_degenerate"].astype(bool)
        out[side] = int(ok.sum())
    for side in ("unsteered", "steered"):
        out[f"{side}_degenerate"] = int(answers[f"{side}_degenerate"].astype(bool).sum())
    return out


def verdict(follows: bool, degenerate: bool, what: str = "follows") -> str:
    """One answer's verdict as a reader sees it: a degenerate answer is never a success.

    Example:
        >>> verdict(True, False, "one sentence"), verdict(True, True), verdict(False, False)
        ('✓ one sentence', '✗ degenerate (loops or gibberish)', '✗ does not follow')
    """
    if degenerate:
        return "✗ degenerate (loops or gibberish)"
    return f"✓ {what}" if follows else "✗ does not follow"
