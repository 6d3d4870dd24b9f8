"""Instruction pairs: the bundled dataset and user-supplied pairs.

A pair is one base query asked twice: once alone ("without") and once with an
instruction sentence appended ("with"). The bundled data (``workbench/data``) has
base queries split into train / validation / test with disjoint queries, and for
each instruction several phrasings that are rotated across queries, plus the IFEval
instruction id and kwargs used to score responses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from workbench.errors import ArgumentTypeError, InvalidArgumentError, UnknownNameError, nearest
from workbench.options import Split, check_choice, check_int, choices

from .placeholders import Placeholder

DATASET_VERSION = "1"
SPLITS: tuple[str, ...] = choices(Split)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class BaseQuery:
    """A query with no instruction in it."""

    id: str
    text: str
    category: str
    split: str


@dataclass(frozen=True)
class Pair:
    """One base query with and without an instruction (unformatted user text)."""

    with_instruction: str
    without_instruction: str
    instruction_id: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    query_id: str | None = None


# Kwargs derived from declared placeholders: IFEval's "less than N" relation needs
# N = most sentences + 1.
_DERIVED: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "num_sentences_plus_one": lambda v: v["num_sentences"] + 1,
}


@dataclass(frozen=True)
class Instruction:
    """An instruction with its phrasings and IFEval id, possibly still templated.

    Phrasings and kwargs may hold placeholders such as ``{keyword}``, declared in
    `placeholders` with their type, range and default; `render` fills them and
    records the values in `values`.
    """

    name: str
    group: str
    instruction_id: str
    kwargs: Mapping[str, Any]
    phrasings: tuple[str, ...]
    placeholders: Mapping[str, Placeholder] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.placeholders.items()}

    def placeholder(self, name: str) -> Placeholder:
        """The declared placeholder `name`; an unknown name lists the valid ones.

        Example:
            >>> instruction_placeholders("lowercase")
            {}
            >>> _instructions()["lowercase"].placeholder("colour")
            Traceback (most recent call last):
            ...
            workbench.errors.InvalidArgumentError: instruction 'lowercase' has no placeholder 'colour'; it takes none
        """
        if isinstance(name, str) and name in self.placeholders:
            return self.placeholders[name]
        valid = ", ".join(f"{n} ({p.describe()})" for n, p in self.placeholders.items())
        raise InvalidArgumentError(
            f"instruction {self.name!r} has no placeholder {name!r}; it takes {valid or 'none'}"
        )

    def render(self, **values: Any) -> Instruction:
        """Fill placeholders, e.g. ``instruction("include_keyword").render(keyword="ocean")``.

        Missing values come from the defaults. Every value is checked against its
        declared type and range (`Placeholder.check`), so a phrasing never reads
        "exactly abc bullet points"; an unknown name raises `InvalidArgumentError`
        listing the valid ones.
        """
        where = f"instruction {self.name!r}: "
        checked = {k: self.placeholder(k).check(v, where) for k, v in values.items()}
        filled = {**self.defaults, **checked}
        full = {**filled, **{k: f(filled) for k, f in _DERIVED.items() if k in _used(self)}}
        return Instruction(
            name=self.name,
            group=self.group,
            instruction_id=self.instruction_id,
            kwargs=_fill(self.kwargs, full),
            phrasings=tuple(p.format(**full) for p in self.phrasings),
            values=filled,
        )


def _used(instr: Instruction) -> set[str]:
    """The placeholder names the phrasings and kwargs hold."""
    texts = [*instr.phrasings, json.dumps(instr.kwargs)]
    return {name for text in texts for name in _PLACEHOLDER.findall(text)}


def _check_declared(instr: Instruction) -> Instruction:
    """Refuse bundled data whose phrasings use undeclared placeholders (or vice versa)."""
    used = _used(instr)
    undeclared = used - set(instr.placeholders) - set(_DERIVED)
    unused = set(instr.placeholders) - used
    if undeclared or unused:
        raise InvalidArgumentError(
            f"instruction {instr.name!r}: placeholders {sorted(undeclared)} are used but not "
            f"declared, {sorted(unused)} declared but not used"
        )
    return instr


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    """Fill placeholders in kwargs; a value that is exactly one placeholder keeps its type."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return value.format(**values)
    if isinstance(value, Mapping):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    text = resources.files("workbench").joinpath("data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@cache
def _queries() -> tuple[BaseQuery, ...]:
    return tuple(BaseQuery(**row) for row in _read_jsonl("base_queries.jsonl"))


@cache
def _instructions() -> dict[str, Instruction]:
    table = {}
    for row in _read_jsonl("instructions.jsonl"):
        declared = {n: Placeholder(n, **spec) for n, spec in row["placeholders"].items()}
        fields = {**row, "phrasings": tuple(row["phrasings"]), "placeholders": declared}
        table[row["name"]] = _check_declared(Instruction(**fields))
    return table


def base_queries(split: Split | None = None) -> list[BaseQuery]:
    """Bundled base queries, optionally of one split (``train``/``validation``/``test``)."""
    if split is not None:
        check_choice("split", split, Split)
    return [q for q in _queries() if split is None or q.split == split]


def instruction_names() -> list[str]:
    """Names of the bundled instructions, e.g. ``"lowercase"``, ``"include_keyword"``."""
    return list(_instructions())


def bundled_instruction(name: str) -> Instruction:
    """The bundled instruction `name` as stored: phrasings and kwargs still templated.

    `instruction` renders it; this form is for what the template declares (its
    `placeholders`) and for checking a name before anything costly. An unknown name
    suggests the nearest.

    Example:
        >>> raw = bundled_instruction("bullets")
        >>> raw.kwargs, sorted(raw.placeholders)
        ({'num_bullets': '{num_bullets}'}, ['num_bullets'])
        >>> bundled_instruction("bulets")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.UnknownNameError: unknown instruction 'bulets'; did you mean one of ['bullets']? Bundled: [...]
    """
    table = _instructions()
    if not isinstance(name, str):
        raise ArgumentTypeError(
            f"instruction name must be a str, got {type(name).__name__} {name!r}"
        )
    if name not in table:
        raise UnknownNameError(
            f"unknown instruction {name!r}; did you mean one of {nearest(name, table)}? "
            f"Bundled: {sorted(table)}"
        )
    return table[name]


def instruction(name: str, **values: Any) -> Instruction:
    """A bundled instruction by name, rendered with `values` (or its defaults).

    Each value is checked against the placeholder's declared type and range
    (`instruction_placeholders` lists them); a bad one raises `InvalidArgumentError`
    naming the placeholder, the value and what was expected.

    Example:
        >>> instruction("bullets", num_bullets=4).kwargs
        {'num_bullets': 4}
        >>> instruction("bullets", num_bullets=-3)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: instruction 'bullets': placeholder num_bullets must be an int in [1..10], got -3
    """
    return bundled_instruction(name).render(**values)


def instruction_placeholders(name: str) -> dict[str, Placeholder]:
    """The placeholders bundled instruction `name` takes, by name (empty if none).

    Example:
        >>> p = instruction_placeholders("include_keyword")["keyword"]
        >>> p.type, p.default
        ('word', 'example')
    """
    return dict(bundled_instruction(name).placeholders)


def make_pairs(
    instr: Instruction | str,
    *,
    split: Split = "train",
    n: int | None = None,
    queries: Sequence[BaseQuery | str] | None = None,
) -> list[Pair]:
    """Pairs for one instruction, rotating its phrasings across base queries.

    Args:
        instr: an `Instruction` (rendered) or the name of a bundled one.
        split: which bundled split of base queries to use (ignored with `queries`).
        n: this many pairs (the first `n` queries); more than the split holds is refused.
        queries: your own base queries instead of the bundled ones.

    Example:
        >>> pairs = make_pairs("one_sentence", split="train", n=4)
        >>> pairs[0].without_instruction in pairs[0].with_instruction
        True
    """
    if isinstance(instr, str):
        instr = instruction(instr)
    if not isinstance(instr, Instruction):
        raise ArgumentTypeError(
            f"instr must be an Instruction or a bundled instruction's name, "
            f"got {type(instr).__name__} {instr!r}"
        )
    if instr.placeholders:
        raise InvalidArgumentError(
            f"instruction {instr.name!r} still has placeholders "
            f"{sorted(instr.placeholders)}; call .render() to fill them"
        )
    check_choice("split", split, Split)
    qs = base_queries(split) if queries is None else _user_queries(queries)
    if n is not None:
        n = check_int("n", n, low=1)
        if n > len(qs):
            # Fewer pairs than asked for would pass silently into every figure.
            where = f"the {split} split" if queries is None else "the given queries"
            raise InvalidArgumentError(
                f"n {n}: {where} holds only {len(qs)} queries; ask for at most {len(qs)}"
            )
        qs = qs[:n]
    return [
        Pair(
            with_instruction=f"{q.text} {instr.phrasings[i % len(instr.phrasings)]}",
            without_instruction=q.text,
            instruction_id=instr.instruction_id,
            kwargs=dict(instr.kwargs),
            query_id=q.id,
        )
        for i, q in enumerate(qs)
    ]


def _user_queries(queries: Any) -> list[BaseQuery]:
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
        raise ArgumentTypeError(
            f"queries must be a list of str or BaseQuery, got {type(queries).__name__} "
            f"{queries!r}; wrap one query in a list: [query]"
        )
    if not queries:
        raise InvalidArgumentError("queries is empty: pass at least one query, or None")
    qs = []
    for i, q in enumerate(queries):
        if isinstance(q, str):
            q = BaseQuery(f"user{i}", q, "user", "user")
        elif not isinstance(q, BaseQuery):
            raise ArgumentTypeError(
                f"query {i} must be a str or BaseQuery, got {type(q).__name__} {q!r}"
            )
        qs.append(q)
    return qs


def _as_pair(i: int, item: Any) -> Pair:
    if isinstance(item, Pair):
        sides: tuple[Any, ...] = (item.with_instruction, item.without_instruction)
    elif isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise InvalidArgumentError(
                f"pair {i} must be a (with, without) tuple of 2 str, got {len(item)} "
                f"item(s): {item!r}"
            )
        sides = tuple(item)
    else:
        raise ArgumentTypeError(
            f"pair {i} must be a Pair or a (with, without) tuple of str, "
            f"got {type(item).__name__} {item!r}"
        )
    for side, text in zip(("with", "without"), sides, strict=True):
        if not isinstance(text, str):
            raise ArgumentTypeError(
                f"pair {i}: the {side}-instruction side must be a str, "
                f"got {type(text).__name__} {text!r}"
            )
    if isinstance(item, Pair):
        if item.instruction_id is not None and not isinstance(item.instruction_id, str):
            raise ArgumentTypeError(
                f"pair {i}: instruction_id must be a str or None, got {item.instruction_id!r}"
            )
        if not isinstance(item.kwargs, Mapping):
            raise ArgumentTypeError(
                f"pair {i}: kwargs must be a mapping such as {{'keywords': ['ocean']}}, "
                f"got {type(item.kwargs).__name__} {item.kwargs!r:.60}"
            )
    if sides[0] == sides[1]:
        raise InvalidArgumentError(
            f"pair {i} has identical with/without sides ({sides[0]!r}); "
            "its difference would be zero"
        )
    return item if isinstance(item, Pair) else Pair(*sides)


def as_pairs(items: Iterable[Any]) -> list[Pair]:
    """Normalise user input (`Pair`s or ``(with, without)`` string tuples) to `Pair`s.

    Raises `InvalidArgumentError` for an empty list, a tuple that is not two
    sides, or a pair whose two sides are identical (its difference would be exactly
    zero), and `ArgumentTypeError` for an item or side of the wrong type.

    Example:
        >>> as_pairs([("Describe rain. Be brief.", "Describe rain.")])[0].without_instruction
        'Describe rain.'
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ArgumentTypeError(
            f"pairs must be a list of Pair or (with, without) tuples, "
            f"got {type(items).__name__} {items!r}"
        )
    pairs = [_as_pair(i, item) for i, item in enumerate(items)]
    if not pairs:
        raise InvalidArgumentError("no pairs given: an instruction vector needs at least one pair")
    return pairs
