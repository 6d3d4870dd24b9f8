"""Offline IFEval scoring: does a response follow an instruction?

`score` runs Google's IFEval checker for an instruction id (``punctuation:no_comma``,
``detectable_format:number_bullet_lists`` with ``{"num_bullets": 3}``, ...) on a
response and returns a bool; `score_frame` does it for many rows. Strict mode checks
the response as it is; loose mode (IFEval's own) also tries it with its first line,
its last line, or both removed, and each of those with every ``*`` removed, and
passes if any non-empty variant passes. An empty or blank response never passes.

The instruction ids, their kwargs, the checkers and the offline nltk data are the
registry's: `workbench.vectors.ifeval`.

Example:
    >>> score("**Certainly!** Here it is.", "startend:start_word", {"start_word": "certainly"})
    True
    >>> score("Sure! here it is:\\nall in lowercase", "change_case:english_lowercase")
    False
    >>> score("Sure! here it is:\\nall in lowercase", "change_case:english_lowercase", loose=True)
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.options import check_bool
from workbench.vectors.ifeval import check_text, checker, count_words

_FRAME_COLUMNS = ["instruction_id", "follows_strict", "follows_loose", "response_words"]


def _loose_variants(response: str) -> list[str]:
    """IFEval's loose variants: first / last / both lines cut, each with and without ``*``."""
    lines = response.split("\n")
    cut = [response] + ["\n".join(part).strip() for part in (lines[1:], lines[:-1], lines[1:-1])]
    return list(dict.fromkeys(cut + [v.replace("*", "") for v in cut]))


def score(
    response: str,
    instruction_id: str,
    kwargs: Mapping | None = None,
    *,
    loose: bool = False,
    prompt: str | None = None,
) -> bool:
    """Whether `response` follows the instruction `instruction_id` with `kwargs`.

    `kwargs` are the checker's arguments, as in IFEval's data; keys whose value is None
    or empty are dropped, and every argument the checker takes must be given (IFEval
    would otherwise draw one at random). `prompt` fills ``prompt_to_repeat`` for
    ``combination:repeat_prompt``: the request the response must repeat, without the
    repeat instruction itself. `loose` applies IFEval's loose mode (module docstring).

    Example:
        >>> score("- a\\n- b\\n- c", "detectable_format:number_bullet_lists", {"num_bullets": 3})
        True
    """
    check_text("response", response)
    check_bool("loose", loose)
    check = checker(instruction_id, kwargs, prompt=prompt)
    variants = _loose_variants(response) if loose else [response]
    return any(v.strip() and check(v) for v in variants)


def score_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Score many responses: one output row per input row, in order.

    Each row is a mapping with ``response``, ``instruction_id`` and optionally
    ``kwargs`` and ``prompt``. Columns: ``instruction_id``, ``follows_strict``,
    ``follows_loose`` and ``response_words`` (`count_words`).

    Example:
        >>> score_frame([{"response": "hi there", "instruction_id": "length:concise"}]).to_dict("records")
        [{'instruction_id': 'length:concise', 'follows_strict': True, 'follows_loose': True, 'response_words': 2}]
    """
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ArgumentTypeError(f"row {i} must be a mapping, got {type(row).__name__}")
        missing = [k for k in ("response", "instruction_id") if k not in row]
        if missing:
            raise InvalidArgumentError(f"row {i} lacks {missing}; it has {sorted(row)}")
        args = (row["response"], row["instruction_id"], row.get("kwargs"))
        try:
            strict = score(*args, prompt=row.get("prompt"))
            # Loose mode tries the response as is first, so strict implies loose.
            follows_loose = strict or score(*args, loose=True, prompt=row.get("prompt"))
        except WorkbenchError as e:
            raise type(e)(f"row {i}: {e}") from e
        records.append((row["instruction_id"], strict, follows_loose, count_words(args[0])))
    return pd.DataFrame(records, columns=_FRAME_COLUMNS)
