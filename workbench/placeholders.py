"""Placeholders of bundled instructions: a declared type, range and default for each.

An instruction's phrasings and IFEval kwargs may hold ``{name}`` fields (a number of
bullet points, a keyword). Each is declared in ``workbench/data/instructions.jsonl``
with its type and range, so a value is checked before it reaches a phrasing or a
checker: "exactly abc bullet points" or a keyword IFEval would read as a regular
expression never gets that far.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from .errors import InvalidArgumentError
from .options import check_choice, check_int

PlaceholderType = Literal["int", "word", "text"]
# A word of letters with inner apostrophes or hyphens ("don't", "well-being"). IFEval's
# keyword checks put the word into a regular expression, so nothing else may pass.
_WORD = re.compile(r"^[^\W\d_]+(?:['’-][^\W\d_]+)*$")
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Placeholder:
    """A value an instruction's phrasings take, with its type, range and default.

    Types: ``"int"`` (an int in ``[min..max]``), ``"word"`` (one word of ``min..max``
    letters, inner ``'`` or ``-`` allowed: IFEval's keyword checks use it as a regular
    expression) and ``"text"`` (one line of ``min..max`` characters, no double quote,
    since the phrasings quote it, and no surrounding spaces).

    Example:
        >>> from workbench.pairs import instruction_placeholders
        >>> p = instruction_placeholders("bullets")["num_bullets"]
        >>> p.describe(), p.parse("4")
        ('an int in [1..10]', 4)
        >>> p.check(0)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: placeholder num_bullets must be an int in [1..10], got 0
    """

    name: str
    type: PlaceholderType
    default: Any
    min: int
    max: int
    description: str = ""

    def __post_init__(self) -> None:
        check_choice("placeholder type", self.type, PlaceholderType)
        check_int(f"placeholder {self.name} min", self.min, low=None if self.type == "int" else 1)
        check_int(f"placeholder {self.name} max", self.max, low=self.min)
        self.check(self.default)

    def describe(self) -> str:
        """The expected value in words, e.g. ``'an int in [1..10]'``."""
        if self.type == "int":
            return f"an int in [{self.min}..{self.max}]"
        if self.type == "word":
            return f"one word of {self.min}..{self.max} letters (inner ' or - allowed)"
        return f"one line of {self.min}..{self.max} characters without double quotes"

    def _fail(self, shown: str, where: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{where}placeholder {self.name} must be {self.describe()}, got {shown}"
        )

    def check(self, value: Any, where: str = "") -> Any:
        """Return `value` if it has this placeholder's type and range, else raise.

        `where` prefixes the message (e.g. ``"instruction 'bullets': "``).
        """
        wanted = int if self.type == "int" else str
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise self._fail(f"{type(value).__name__} {value!r}", where)
        if self.type == "int":
            ok = self.min <= value <= self.max
        elif self.type == "word":
            ok = self.min <= len(value) <= self.max and bool(_WORD.match(value))
        else:
            printable = all(unicodedata.category(c)[0] != "C" for c in value)
            ok = self.min <= len(value) <= self.max and printable and value == value.strip()
            ok = ok and '"' not in value
        if not ok:
            raise self._fail(repr(value), where)
        return value

    def parse(self, text: str, where: str = "") -> Any:
        """Read a command-line string as this placeholder's type and check it.

        Example:
            >>> Placeholder("num_bullets", "int", 3, 1, 10).parse("abc")
            Traceback (most recent call last):
            ...
            workbench.errors.InvalidArgumentError: placeholder num_bullets must be an int in [1..10], got 'abc'
        """
        if self.type == "int":
            if not isinstance(text, str) or not _INT.match(text.strip()):
                raise self._fail(repr(text), where)
            return self.check(int(text), where)
        return self.check(text, where)
