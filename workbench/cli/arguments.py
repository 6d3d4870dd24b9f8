"""Argument values: argparse types, option parsers and checks of what the values name.

These run before any model loads, so bad input costs no model load and ends in one
line on stderr.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from workbench.errors import InvalidArgumentError

_LAYER_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
_SHARD = re.compile(r"^(\d+)/(\d+)$")


def positive_int(text: str) -> int:
    """argparse type: an int of at least 1.

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: '0' is not a positive int
    """
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive int")
    return int(text)


def finite_float(text: str) -> float:
    """argparse type: a finite float.

    Example:
        >>> finite_float("1e3"), finite_float("-0.5")
        (1000.0, -0.5)
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def parse_layers(text: str, flag: str = "--layers") -> list[int]:
    """Parse ``"10,12,14"`` or ``"8-20"`` into distinct layer indices, in order.

    Example:
        >>> parse_layers("8-10,14")
        [8, 9, 10, 14]
        >>> parse_layers("")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --layers '' is empty; give layers such as 14, 10,14 or 8-20
    """
    if not text.strip():
        raise InvalidArgumentError(
            f"{flag} {text!r} is empty; give layers such as 14, 10,14 or 8-20"
        )
    layers: list[int] = []
    for part in text.split(","):
        match = _LAYER_PART.match(part.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise InvalidArgumentError(
                f"{flag} {text!r}: {part!r} is not a layer (e.g. 14) or an ascending range "
                "(e.g. 8-20)"
            )
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        layers.extend(range(lo, hi + 1))
    repeated = sorted({x for x in layers if layers.count(x) > 1})
    if repeated:
        raise InvalidArgumentError(f"{flag} {text!r} names layer(s) {repeated} twice")
    return layers


def check_layers_in(layers: Sequence[int], held: Sequence[int], flag: str = "--layers") -> None:
    """Refuse layers the vector does not hold, naming the ones it does."""
    missing = [layer for layer in layers if layer not in held]
    if missing:
        raise InvalidArgumentError(f"{flag}: the vector holds layers {list(held)}, not {missing}")


def check_model_layers(layers: Sequence[int], n_layers: int, flag: str = "--layers") -> None:
    """Refuse layers the model does not have (before any vector exists).

    Example:
        >>> check_model_layers([1, 99], 3)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --layers: the model has layers 0..2, not [99]
    """
    missing = [layer for layer in layers if not 0 <= layer < n_layers]
    if missing:
        raise InvalidArgumentError(f"{flag}: the model has layers 0..{n_layers - 1}, not {missing}")


def check_distinct(items: Sequence[Any], what: str) -> None:
    """Refuse a list that names an item twice (it would be counted twice).

    Example:
        >>> check_distinct(["title", "concise", "title"], "instruction")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: instruction 'title' is given twice; name each once
    """
    for i, item in enumerate(items):
        if item in items[:i]:
            raise InvalidArgumentError(f"{what} {item!r} is given twice; name each once")


def parse_list(text: str, flag: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list of distinct names, each one of `allowed` when given.

    Example:
        >>> parse_list("add,project", "--modes", ("add", "project", "ablate"))
        ['add', 'project']
        >>> parse_list("add,add", "--modes", ("add", "project", "ablate"))
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --modes 'add,add' names 'add' twice; name each once
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidArgumentError(f"{flag} {text!r} is not a comma-separated list")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        raise InvalidArgumentError(f"{flag} {text!r}: {bad} not among {tuple(allowed or ())}")
    _no_repeats(items, items, flag, text)
    return items


def _no_repeats(values: Sequence[Any], items: Sequence[str], flag: str, text: str) -> None:
    # values[i] is items[i] parsed: "1" and "1.0" are one strength.
    for i, value in enumerate(values):
        if value in values[:i]:
            raise InvalidArgumentError(f"{flag} {text!r} names {items[i]!r} twice; name each once")


def parse_floats(text: str, flag: str) -> list[float]:
    """Comma-separated distinct finite numbers.

    Example:
        >>> parse_floats("0.5,1", "--strengths")
        [0.5, 1.0]
        >>> parse_floats("1,1.0", "--strengths")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --strengths '1,1.0' names '1.0' twice; name each once
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidArgumentError(f"{flag} {text!r} is not a comma-separated list")
    values = []
    for item in items:
        try:
            values.append(finite_float(item))
        except argparse.ArgumentTypeError:
            raise InvalidArgumentError(
                f"{flag} {text!r}: {item!r} is not a finite number"
            ) from None
    _no_repeats(values, items, flag, text)
    return values


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --shard '4/4' is not a shard: give I/N, part I of N parts with 0 <= I < N, e.g. 0/4
    """
    match = _SHARD.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise InvalidArgumentError(
            f"--shard {text!r} is not a shard: give I/N, part I of N parts with 0 <= I < N, "
            "e.g. 0/4"
        )
    return int(match[1]), int(match[2])


def check_count(n: int | None, available: int, flag: str, what: str) -> None:
    """Refuse asking for more items than there are (a smaller n would pass silently).

    Example:
        >>> check_count(30, 24, "--queries", "validation queries")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --queries 30: there are only 24 validation queries
    """
    if n is not None and n > available:
        raise InvalidArgumentError(f"{flag} {n}: there are only {available} {what}")


def parse_settings(items: Sequence[str], instruction: str) -> dict[str, Any]:
    """``--set NAME=VALUE`` items, each parsed by its placeholder's declared type.

    Example:
        >>> parse_settings(["num_bullets=4"], "bullets")
        {'num_bullets': 4}
        >>> parse_settings(["num_bullets=-3"], "bullets")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: --set 'num_bullets=-3': instruction 'bullets': placeholder num_bullets must be an int in [1..10], got -3
    """
    from workbench.vectors.pairs import bundled_instruction

    instr = bundled_instruction(instruction)
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise InvalidArgumentError(f"--set expects NAME=VALUE, got {item!r}")
        name = name.strip()
        if name in values:
            raise InvalidArgumentError(f"--set {name} is given twice")
        where = f"--set {item!r}: instruction {instruction!r}: "
        values[name] = instr.placeholder(name).parse(text, where)
    return values
