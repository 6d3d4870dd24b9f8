"""Placeholders of bundled instructions, and the types of the checkers' arguments.

An instruction's phrasings and IFEval kwargs may hold ``{name}`` fields (a number of
bullet points, a keyword). Each is declared in ``workbench/data/instructions.jsonl``
with its type and range, so a value is checked before it reaches a phrasing or a
checker: "exactly abc bullet points" or a keyword IFEval would read as a regular
expression never gets that far.

Every checker argument (IFEval's and the workbench's own) has a declared type too,
checked by `checker_arg` before `workbench.vectors.ifeval` builds a checker: IFEval reads a
str where it wants a list letter by letter (``"ocean"`` as o, c, e, a, n) and a bool
as a count.
"""

from __future__ import annotations

import numbers
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from workbench.errors import ArgumentTypeError, InvalidArgumentError
from workbench.options import check_choice, check_int

INT_ARGS = frozenset(
    "capital_frequency frequency let_frequency nth_paragraph num_bullets num_highlights "
    "num_paragraphs num_placeholders num_sections num_sentences num_words".split()
)
STR_ARGS = frozenset(
    "capital_relation end_phrase first_word keyword language let_relation letter "
    "postscript_marker prompt prompt_to_repeat relation section_spliter start_word".split()
)
WORDS_ARGS = frozenset({"keywords", "forbidden_words"})

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
        >>> from workbench.vectors.pairs import instruction_placeholders
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


def unset_arg(value: Any) -> bool:
    """IFEval's data carries every instruction's keys on every row, unused ones None or empty."""
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def checker_arg(instruction_id: str, key: str, value: Any) -> Any:
    """`value` checked against the type of checker argument `key`, hashable (lists as tuples).

    Example:
        >>> checker_arg("keywords:existence", "keywords", ["ocean"])
        ('ocean',)
        >>> checker_arg("detectable_format:number_bullet_lists", "num_bullets", True)
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: instruction 'detectable_format:number_bullet_lists': kwargs['num_bullets'] must be an int, got bool True
    """

    def fail(wanted: str) -> ArgumentTypeError:
        return ArgumentTypeError(
            f"instruction {instruction_id!r}: kwargs[{key!r}] must be {wanted}, "
            f"got {type(value).__name__} {value!r:.60}"
        )

    if key in INT_ARGS:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise fail("an int")
        return int(value)
    if key in STR_ARGS:
        if not isinstance(value, str):
            raise fail("a str")
        return value
    if key in WORDS_ARGS:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            example = [value] if isinstance(value, str) else ["ocean"]
            raise fail(f"a list of str such as {example!r}")
        if not value or not all(v.strip() for v in value):
            # An empty word is in every text: the check would always pass.
            raise InvalidArgumentError(
                f"instruction {instruction_id!r}: kwargs[{key!r}] must be non-empty words, "
                f"got {value!r:.60}"
            )
        return tuple(value)
    return _freeze(key, value)


def _freeze(key: str, value: Any) -> Any:
    """A hashable copy of a value of an undeclared argument (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(key, v) for v in value)
    try:
        hash(value)
    except TypeError:
        raise ArgumentTypeError(
            f"kwargs[{key!r}] must be a string, number or list, got {type(value).__name__}"
        ) from None
    return value
