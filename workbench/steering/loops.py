"""Loop stop: end a row once its newest tokens are one short cycle repeated.

A steered answer stuck in ``search/search/search…`` or ``A A A A`` is decided long
before the token budget; decoding it further only costs time. `LoopStop` states when
a row counts as such a loop, by either of two rules:

- a cycle: the last ``p * r`` generated tokens are one cycle of ``p`` tokens repeated
  ``r`` times back to back, for a period ``1 <= p <= max_period``, with
  ``r >= min_copies`` and ``p * r >= min_tokens`` (a one-token cycle needs 32 copies,
  a four-token one 8, a 32-token one 8, so 256 tokens verbatim), and the repeated
  stretch decodes to text with at least ``min_letters`` letters (so runs of digits,
  rules or table borders, ``0, 0, 0, …``, ``|---|---|``, never stop this way);
- a window: a whole ``window_chars``-character window of the text, at the quality
  guard's window starts, compresses with zlib below ``max_window_ratio`` (0.2: digit
  and symbol loops such as ``-2-2-2…`` sit near 0.04; a templated 20-item list is
  0.295, and the guard calls a text degenerate below 0.42).

Why these: the quality guard already calls a 3–40 character stretch repeated more
than 5 times, or a window under 0.42, degenerate, so a stopped row would have been
flagged at its full length too (a window seen here is a window of the whole text);
8 copies and 0.2 leave margin over that. Markdown lists, tables, code and refrains
do not repeat token for token eight times over: on the guard's labelled set
(``tests/data/degenerate_labels.jsonl``), none of the 88 answers read as sound is
stopped (``tests/integration/test_long_budgets.py``). The check is cheap: per row and
period a run length of ``t[i] == t[i - p]`` kept on the host and updated with each
new token; a row is decoded only when its runs reach the bound, and every
`LoopWatch.check_every` tokens for the window rule.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import InvalidArgumentError
from workbench.options import as_float, check_int


@dataclass(frozen=True)
class LoopStop:
    """When `generate` ends a row as a loop (see the module docstring).

    Attributes:
        max_period: longest cycle, in tokens, that is looked for.
        min_copies: back-to-back copies of the cycle needed, at least 2.
        min_tokens: tokens the copies must cover together.
        min_letters: letters the repeated stretch must decode to.
        window_chars: characters of a window of the window rule.
        max_window_ratio: a whole window compressing below this ends the row.

    Example:
        >>> LoopStop().copies_needed(1), LoopStop().copies_needed(4), LoopStop().copies_needed(32)
        (32, 8, 8)
    """

    max_period: int = 32
    min_copies: int = 8
    min_tokens: int = 32
    min_letters: int = 2
    window_chars: int = 512
    max_window_ratio: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_period", check_int("max_period", self.max_period, low=1))
        object.__setattr__(self, "min_copies", check_int("min_copies", self.min_copies, low=2))
        object.__setattr__(self, "min_tokens", check_int("min_tokens", self.min_tokens, low=2))
        object.__setattr__(self, "min_letters", check_int("min_letters", self.min_letters, low=0))
        object.__setattr__(
            self, "window_chars", check_int("window_chars", self.window_chars, low=2)
        )
        ratio = as_float("max_window_ratio", self.max_window_ratio)
        if not 0 <= ratio <= 1:
            raise InvalidArgumentError(f"max_window_ratio must be in [0, 1], got {ratio!r}")
        object.__setattr__(self, "max_window_ratio", ratio)

    def copies_needed(self, period: int) -> int:
        """Copies of a `period`-token cycle that make a loop."""
        return max(self.min_copies, -(-self.min_tokens // period))

    def record(self) -> dict[str, int]:
        """The rule as JSON-friendly fields (what a sweep file's configuration holds)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def find(self, tokens: Sequence[int], decode: Callable[[list[int]], str]) -> int | None:
        """The period of the loop `tokens` end in, or None (the rule on a whole list).

        Example:
            >>> LoopStop().find([5, 6] * 16, lambda ids: "ab" * len(ids))
            2
            >>> LoopStop().find([5, 6] * 15, lambda ids: "ab" * len(ids)) is None
            True
        """
        tokens = list(tokens)
        for period in range(1, self.max_period + 1):
            span = period * self.copies_needed(period)
            if span > len(tokens):
                continue
            tail = tokens[-span:]
            if tail[period:] == tail[:-period] and self._worded(tail, decode):
                return period
        return None

    def windows(self, text: str, checked: int = 0) -> tuple[bool, int]:
        """Whether a whole window of `text` past the first `checked` compresses below
        `max_window_ratio`, and how many whole windows `text` holds.

        Windows start every ``window_chars // 2`` characters, as the quality guard's
        do; the last 4 characters are left out (a character split across tokens decodes
        as a stand-in until its last byte arrives). So a window seen here is a window of
        the whole answer too, and the guard reads the same bytes.

        Example:
            >>> LoopStop().windows("ha" * 600)
            (True, 3)
            >>> LoopStop().windows("ha" * 100)
            (False, 0)
        """
        step = max(1, self.window_chars // 2)
        usable = len(text) - 4
        whole = max(0, (usable - self.window_chars) // step + 1)
        for k in range(checked, whole):
            if window_ratio(text[k * step : k * step + self.window_chars]) < self.max_window_ratio:
                return True, whole
        return False, whole

    def _worded(self, tail: list[int], decode: Callable[[list[int]], str]) -> bool:
        return sum(c.isalpha() for c in decode(tail)) >= self.min_letters


def window_ratio(text: str) -> float:
    """zlib's compressed size (level 9) over the raw UTF-8 size of `text`; 1.0 if empty.

    Example:
        >>> window_ratio("ha" * 200) < 0.1 < 0.5 < window_ratio("A plain sentence.")
        True
    """
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0


class LoopWatch:
    """`LoopStop` applied to a decode batch as it grows, row by row.

    Per row and period it keeps the run length of ``t[i] == t[i - p]``, updated with
    each new token, so the cycle part costs a few array operations a step; a row is
    decoded only when its runs reach the bound, and every `check_every` tokens for
    the window part. Rows follow the batch as it changes (`keep`, `extend`).
    """

    check_every = 16

    def __init__(self, rule: LoopStop) -> None:
        self.rule = rule
        self.periods = np.arange(1, rule.max_period + 1)
        # Matches needed at period p: the first copy has nothing to match against.
        self.need = np.array([(rule.copies_needed(int(p)) - 1) * int(p) for p in self.periods])
        self.runs = np.zeros((0, rule.max_period), dtype=np.int64)
        self.checked: list[int] = []

    def looped(self, row: int, tokens: list[int], decode: Callable[[list[int]], str]) -> bool:
        """Account for `tokens[-1]` of batch row `row`; whether the row now loops."""
        back = len(tokens) - 1 - self.periods
        earlier = np.array([tokens[b] if b >= 0 else -1 for b in back])
        self.runs[row] = np.where(earlier == tokens[-1], self.runs[row] + 1, 0)
        hit = (
            bool((self.runs[row] >= self.need).any()) and self.rule.find(tokens, decode) is not None
        )
        checked = self.checked[row]
        if not hit and len(tokens) % self.check_every == 0:
            hit, checked = self.rule.windows(decode(tokens), checked)
        # Never between the bytes of one character: the stopped text stays a prefix of
        # the text the row would have had. A window hit held back is looked at again.
        if hit and decode(tokens[-4:]).endswith("\ufffd"):
            return False
        self.checked[row] = checked
        return hit

    def keep(self, rows: list[int]) -> None:
        self.runs = self.runs[rows]
        self.checked = [self.checked[i] for i in rows]

    def extend(self, n: int) -> None:
        self.runs = np.concatenate([self.runs, np.zeros((n, self.runs.shape[1]), np.int64)])
        self.checked += [0] * n
