"""The workbench's named options as `typing.Literal` types, validated in one place.

Each option is declared once here; `check_choice` validates a value against it and
raises `InvalidArgumentError` naming the value and the choices. Dataclasses call it
in ``__post_init__`` and functions at their entry, so no option is checked by hand.

Example:
    >>> check_choice("backend", "bridge", Backend)
    'bridge'
    >>> check_choice("backend", "jax", Backend)
    Traceback (most recent call last):
    ...
    workbench.errors.InvalidArgumentError: backend 'jax' is not one of ('bridge', 'hooked')
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, get_args

from .errors import ArgumentTypeError, InvalidArgumentError

Mode = Literal["add", "project", "clamp", "ablate"]
# The modes whose coefficient is a target along u (strength: a multiple of z̄).
TARGET_MODES = ("project", "clamp")
Positions = Literal["all", "prompt", "generated"]
# Which side of a gate's threshold a gated term steers (`workbench.steering.gates`).
GateSide = Literal["below", "above"]
Backend = Literal["bridge", "hooked"]
PromptStyle = Literal["chat", "plain"]
Split = Literal["train", "validation", "test"]
# The dtypes `load_model` takes (float64 on the hooked backend only).
Dtype = Literal["float32", "float16", "bfloat16", "float64"]
# "last": the last prompt token; "mean": mean over the prompt's real tokens.
# An int k (not a Literal) reads the mean of the last k tokens.
ReadPosition = Literal["last", "mean"]
# What selection maximises: accuracy, or clean accuracy (follows and not degenerate).
Objective = Literal["accuracy", "clean_accuracy"]
# What `workbench select`, the demo and the report choose by when not told (metric,
# objective): IFEval's loose accuracy, as the reference method, counted only on answers
# that are not degenerate. `select()` itself keeps the plain strict-accuracy defaults.
CHOOSE_BY: tuple[str, str] = ("follows_loose", "clean_accuracy")
# The protocol's presets (`workbench.evaluation.protocol.PRESETS` holds their values).
Preset = Literal["paper", "quick"]

# The hook instruction vectors are read at and steered through, per layer.
RESID_HOOK = "blocks.{layer}.hook_resid_post"


def choices(option: Any) -> tuple[str, ...]:
    """The values a Literal option allows."""
    return tuple(get_args(option))


def check_choice(name: str, value: Any, option: Any) -> Any:
    """Return `value` if it is one of the Literal `option`'s values, else raise."""
    allowed = choices(option)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgumentError(f"{name} {value!r} is not one of {allowed}")
    return value


def _scalar(value: Any) -> Any:
    """A 0-d tensor or array as its Python number; anything else unchanged.

    Duck-typed (``ndim == 0`` and ``.item()``) so that this module imports no torch.
    """
    if not isinstance(value, numbers.Number) and getattr(value, "ndim", None) == 0:
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    return value


def as_float(name: str, value: Any) -> float:
    """`value` as a finite Python float: an int, float, numpy scalar or 0-d tensor, not a bool.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> as_float("weight", np.float32(2.5)), as_float("weight", torch.tensor(4.0))
        (2.5, 4.0)
        >>> as_float("weight", True)
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: weight must be a real number (int, float, numpy scalar or 0-d tensor), got bool True
    """
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"{name} must be a real number (int, float, numpy scalar or 0-d tensor), "
            f"got {type(value).__name__} {value!r}"
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} {value!r} is not a finite number")
    return number


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as a Python int in ``[low, high]``: an int, numpy integer or 0-d integer
    tensor, not a bool (nor a float, even a whole one).

    Example:
        >>> import numpy as np
        >>> check_int("layer", np.int64(2), low=0)
        2
        >>> check_int("layer", 14.0, low=0)
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: layer must be an int, got float 14.0
    """
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "" if low is None else f"{low}"
        hi = "" if high is None else f"{high}"
        raise InvalidArgumentError(f"{name} {value} is out of range [{lo}..{hi}]")
    return value


def check_bool(name: str, value: Any) -> bool:
    """`value` if it is True or False (a flag is never read by truthiness).

    Example:
        >>> check_bool("formatted", "no")
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: formatted must be True or False, got str 'no'
    """
    if not isinstance(value, bool):
        raise ArgumentTypeError(
            f"{name} must be True or False, got {type(value).__name__} {value!r}"
        )
    return value


def as_list(name: str, values: Any, example: str) -> list:
    """`values` as a list: a list, tuple, range, or 1-d numpy array or torch tensor.

    A str is refused (it would be read letter by letter), and so are sets and
    iterators (no order, or used up once read).

    Example:
        >>> as_list("modes", "add", "['add']")
        Traceback (most recent call last):
        ...
        workbench.errors.ArgumentTypeError: modes must be a list, got str 'add'; give a list such as ['add']
    """
    if isinstance(values, (str, bytes)):
        raise ArgumentTypeError(
            f"{name} must be a list, got {type(values).__name__} {values!r}; "
            f"give a list such as {example}"
        )
    if hasattr(values, "ndim") and hasattr(values, "tolist"):
        if values.ndim != 1:
            raise InvalidArgumentError(
                f"{name} must be one-dimensional, got an array of shape {tuple(values.shape)}"
            )
        return values.tolist()
    if not isinstance(values, Sequence):
        raise ArgumentTypeError(
            f"{name} must be a list such as {example}, got {type(values).__name__} {values!r:.60}"
        )
    return list(values)


def check_distinct(name: str, values: list) -> list:
    """`values` if no item repeats, else an error naming the repeated ones."""
    repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
    if repeated:
        raise InvalidArgumentError(
            f"{name} {values} contain duplicates: {', '.join(map(repr, repeated))} repeated"
        )
    return values


def int_list(name: str, values: Any, item: str) -> list[int]:
    """Non-empty, distinct ints (numpy ints included) from `values` (see `as_list`).

    Example:
        >>> import numpy as np
        >>> int_list("layers", np.arange(2, 5), "layer")
        [2, 3, 4]
    """
    values = as_list(name, values, "[1, 2]")
    if not values:
        raise InvalidArgumentError(f"{name} is empty; give at least one {item}")
    return check_distinct(name, [check_int(f"{name}[{i}]", v) for i, v in enumerate(values)])


def float_list(name: str, values: Any, item: str) -> list[float]:
    """Non-empty, distinct finite numbers (numpy floats included) as Python floats.

    Example:
        >>> float_list("strengths", (0.5, 1), "strength")
        [0.5, 1.0]
    """
    values = as_list(name, values, "[0.5, 1.0]")
    if not values:
        raise InvalidArgumentError(f"{name} is empty; give at least one {item}")
    return check_distinct(name, [as_float(f"{name}[{i}]", v) for i, v in enumerate(values)])


def check_read_position(position: Any) -> str | int:
    """``"last"``, ``"mean"``, or a positive int k (mean of the last k prompt tokens)."""
    if isinstance(position, str) and position in choices(ReadPosition):
        return position
    position = _scalar(position)
    if isinstance(position, numbers.Integral) and not isinstance(position, bool) and position >= 1:
        return int(position)
    raise InvalidArgumentError(
        f"position {position!r} is not one of {choices(ReadPosition)} or a positive int k "
        "(the mean of the last k prompt tokens)"
    )


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite, however large an int.

    Example:
        >>> is_finite_number(2**2000), is_finite_number(float("nan")), is_finite_number(True)
        (False, False, False)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_hook_template(template: Any) -> str:
    """A hook name template with ``{layer}`` and no other field, or an error.

    Example:
        >>> check_hook_template("blocks.{layer}.{x}")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: hook_name 'blocks.{layer}.{x}' must be a template with '{layer}' and no other field, e.g. 'blocks.{layer}.hook_resid_post'
    """
    ok = isinstance(template, str) and "{layer}" in template
    if ok:
        try:
            ok = template.format(layer=0) != template.format(layer=1)
        except (KeyError, IndexError, ValueError, AttributeError):
            ok = False
    if not ok:
        raise InvalidArgumentError(
            f"hook_name {template!r} must be a template with '{{layer}}' and no other field, "
            "e.g. 'blocks.{layer}.hook_resid_post'"
        )
    return template
