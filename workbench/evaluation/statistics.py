"""Uncertainty of the protocol's numbers: 95% intervals and a paired exact test.

Pure functions on booleans (one per prompt) or counts; no model.

- `proportion` / `wilson`: a share of `n` with its Wilson score interval.
- `paired_effect`: steered against unsteered on the same prompts: the gain in
  accuracy, its paired 95% interval (Newcombe's method 10), the exact McNemar
  p-value and the prompts `fixed` (fail -> pass) and `broken` (pass -> fail).

Why closed forms and not scipy (measured 2026-12 in the project venv, Python 3.11.7):
scipy 1.17.1 (1.18 needs Python >= 3.12) installs 143 MB (scipy 113 MB, scipy.libs
30 MB) and ``from scipy.stats import binomtest`` takes 0.57-0.76 s after numpy. It
would give two of the three pieces, `binomtest` (the exact test) and its Wilson
``proportion_ci``, each a few lines here with `math.comb` and
`statistics.NormalDist`; it has no interval for a difference of *paired*
proportions, the third piece, which is written out here either way. The tests check
every function against values computed independently (Wilson by hand, McNemar from
binomial sums, a textbook table).

Why Newcombe's method 10 and not a bootstrap over prompts: the protocol's test sets
hold 12-24 prompts. There a percentile bootstrap is coarse and undercovers, and when
no prompt changes (fixed = broken = 0) every resample has gain 0, so it reports the
interval [0, 0], certainty that 12 prompts cannot give. Method 10 (Newcombe 1998,
Statistics in Medicine 17:2635) combines the Wilson intervals of both accuracies with
their correlation; it stays inside [-1, 1], is never empty and needs no seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from workbench.errors import ArgumentTypeError, InvalidArgumentError

# The two-sided 95% normal quantile, 1.959963984540054.
Z95 = NormalDist().inv_cdf(0.975)

# Slack for rounding when a result checks that its numbers agree.
_EPS = 1e-12


@dataclass(frozen=True)
class Proportion:
    """`k` of `n` with the 95% Wilson interval [`low`, `high`] of the share `k / n`.

    Example:
        >>> p = wilson(3, 12)
        >>> p.value, p.n, round(p.low, 4), round(p.high, 4)
        (0.25, 12, 0.0889, 0.5323)
        >>> Proportion(5, 4, 0.0, 1.0)
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: k 5 is not between 0 and n 4
    """

    k: int
    n: int
    low: float
    high: float

    def __post_init__(self) -> None:
        for name in ("k", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArgumentTypeError(f"{name} must be an int, got {value!r}")
        if self.n < 1:
            raise InvalidArgumentError(f"n {self.n} is not a count of at least 1")
        if not 0 <= self.k <= self.n:
            raise InvalidArgumentError(f"k {self.k} is not between 0 and n {self.n}")
        if not (
            -_EPS <= self.low <= self.value + _EPS and self.value - _EPS <= self.high <= 1 + _EPS
        ):
            raise InvalidArgumentError(
                f"interval [{self.low}, {self.high}] does not hold {self.k}/{self.n} within [0, 1]"
            )

    @property
    def value(self) -> float:
        """The share ``k / n``."""
        return self.k / self.n

    @property
    def ci95(self) -> tuple[float, float]:
        """``(low, high)``."""
        return (self.low, self.high)


@dataclass(frozen=True)
class Effect:
    """Steered against unsteered on the same `n` prompts.

    Attributes:
        gain: steered accuracy minus unsteered accuracy, ``(fixed - broken) / n``.
        ci95: its paired 95% interval (Newcombe's method 10), ``(low, high)``.
        p_value: the exact McNemar test of "steering changes nothing" (two-sided).
        fixed: prompts that fail unsteered and pass steered.
        broken: prompts that pass unsteered and fail steered.
        n: the prompts compared.

    Example:
        >>> e = paired_effect([False, False, True, False], [True, True, True, False])
        >>> e.gain, e.fixed, e.broken, e.n, e.p_value
        (0.5, 2, 0, 4, 0.5)
    """

    gain: float
    ci95: tuple[float, float]
    p_value: float
    fixed: int
    broken: int
    n: int

    def __post_init__(self) -> None:
        for name in ("fixed", "broken", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} {value!r} is not a count")
        if self.n < 1 or self.fixed + self.broken > self.n:
            raise InvalidArgumentError(
                f"fixed {self.fixed} + broken {self.broken} do not fit in n {self.n} prompts"
            )
        if abs(self.gain - (self.fixed - self.broken) / self.n) > _EPS:
            raise InvalidArgumentError(
                f"gain {self.gain} is not (fixed - broken) / n = "
                f"({self.fixed} - {self.broken}) / {self.n}"
            )
        low, high = self.ci95
        if not (-1 - _EPS <= low <= self.gain + _EPS and self.gain - _EPS <= high <= 1 + _EPS):
            raise InvalidArgumentError(f"ci95 {self.ci95} does not hold gain {self.gain}")
        if not 0 <= self.p_value <= 1:
            raise InvalidArgumentError(f"p_value {self.p_value} is not in [0, 1]")
        object.__setattr__(self, "ci95", (float(low), float(high)))


def _booleans(name: str, values: Any) -> list[bool]:
    """`values` as a list of bools; anything but True/False (numpy's too) is refused."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ArgumentTypeError(
            f"{name} must be a sequence of True/False, got {type(values).__name__} {values!r:.60}"
        )
    out = []
    for i, v in enumerate(values):
        # numpy.bool_ is not a bool subclass; ints and NaN are refused, not coerced.
        if not isinstance(v, (bool, np.bool_)):
            raise ArgumentTypeError(
                f"{name}[{i}] is {type(v).__name__} {v!r:.40}, not True or False"
            )
        out.append(bool(v))
    if not out:
        raise InvalidArgumentError(f"{name} is empty; give one True/False per prompt")
    return out


def wilson(k: int, n: int) -> Proportion:
    """`k` successes of `n` with their 95% Wilson score interval.

    The interval is the set of shares p whose score test ``|k/n - p| / sqrt(p(1-p)/n)``
    stays under 1.96: centre ``(k + z²/2) / (n + z²)``, half width
    ``z / (n + z²) * sqrt(k (n - k) / n + z² / 4)``.

    Example:
        >>> p = wilson(0, 10)
        >>> p.low, round(p.high, 4)
        (0.0, 0.2775)
    """
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{name} must be an int, got {value!r}")
    if n < 1:
        raise InvalidArgumentError(f"n {n} is not a count of at least 1")
    if not 0 <= k <= n:
        raise InvalidArgumentError(f"k {k} is not between 0 and n {n}")
    z2 = Z95 * Z95
    centre = (k + z2 / 2) / (n + z2)
    half = Z95 / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    # At k = 0 or k = n the interval touches 0 or 1 exactly; rounding must not move it.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, low, high)


def proportion(outcomes: Sequence[bool]) -> Proportion:
    """The share of True in `outcomes` (one per prompt) with its 95% Wilson interval.

    Example:
        >>> proportion([True, False, False, False]).value
        0.25
    """
    values = _booleans("outcomes", outcomes)
    return wilson(sum(values), len(values))


def mcnemar_exact(fixed: int, broken: int) -> float:
    """The exact two-sided McNemar p-value for `fixed` and `broken` discordant prompts.

    Under "steering changes nothing" each discordant prompt is fixed or broken with
    chance 1/2, so `fixed` is Binomial(fixed + broken, 1/2); the p-value doubles the
    smaller tail (the two-sided binomial test, as the distribution is symmetric).

    Example:
        >>> mcnemar_exact(0, 0), mcnemar_exact(5, 0), mcnemar_exact(1, 9)
        (1.0, 0.0625, 0.021484375)
    """
    for name, value in (("fixed", fixed), ("broken", broken)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(f"{name} {value!r} is not a count")
    m = fixed + broken
    tail = sum(math.comb(m, i) for i in range(min(fixed, broken) + 1))
    return min(1.0, 2 * tail / 2**m)


def paired_interval(both: int, fixed: int, broken: int, neither: int) -> tuple[float, float]:
    """Newcombe's method 10 95% interval for a paired gain ``(fixed - broken) / n``.

    The 2×2 table of prompts: `both` pass steered and unsteered, `fixed` pass only
    steered, `broken` pass only unsteered, `neither` pass. It squares and adds the
    Wilson distances of the two accuracies, less their correlation φ (set to 0 for
    small positive associations, ``0 <= AD - BC <= n/2``, as in the paper).

    Example:
        >>> [round(x, 4) for x in paired_interval(59, 6, 16, 80)]  # Fagerland et al. 2017, 8.5
        [-0.1186, -0.0046]
    """
    cells = {"both": both, "fixed": fixed, "broken": broken, "neither": neither}
    for name, value in cells.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(f"{name} {value!r} is not a count")
    n = both + fixed + broken + neither
    if n < 1:
        raise InvalidArgumentError("the table holds no prompts (all four counts are 0)")
    steered, plain = wilson(both + fixed, n), wilson(both + broken, n)
    p1, p2 = steered.value, plain.value
    margins = (both + fixed) * (broken + neither) * (both + broken) * (fixed + neither)
    phi = 0.0
    if margins > 0:
        ad_bc = both * neither - fixed * broken
        if ad_bc > n / 2:
            phi = (ad_bc - n / 2) / math.sqrt(margins)
        elif ad_bc < 0:
            phi = ad_bc / math.sqrt(margins)
    d1_low, d1_high = p1 - steered.low, steered.high - p1
    d2_low, d2_high = p2 - plain.low, plain.high - p2
    gain = p1 - p2
    # max(0, ...): rounding can make the radicand a hair negative when it is 0.
    low = gain - math.sqrt(max(0.0, d1_low**2 - 2 * phi * d1_low * d2_high + d2_high**2))
    high = gain + math.sqrt(max(0.0, d2_low**2 - 2 * phi * d2_low * d1_high + d1_high**2))
    return (max(-1.0, low), min(1.0, high))


def paired_effect(unsteered: Sequence[bool], steered: Sequence[bool]) -> Effect:
    """The `Effect` of steering: `unsteered[i]` and `steered[i]` score the same prompt i.

    Example:
        >>> e = paired_effect([True, False, False], [True, True, False])
        >>> round(e.gain, 4), e.fixed, e.broken, e.p_value
        (0.3333, 1, 0, 1.0)
        >>> paired_effect([True], [True, False])
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: unsteered holds 1 outcomes and steered 2; pair one of each per prompt
    """
    before = _booleans("unsteered", unsteered)
    after = _booleans("steered", steered)
    if len(before) != len(after):
        raise InvalidArgumentError(
            f"unsteered holds {len(before)} outcomes and steered {len(after)}; "
            "pair one of each per prompt"
        )
    pairs = list(zip(before, after, strict=True))
    both = pairs.count((True, True))
    fixed = pairs.count((False, True))
    broken = pairs.count((True, False))
    neither = pairs.count((False, False))
    n = len(pairs)
    return Effect(
        gain=(fixed - broken) / n,
        ci95=paired_interval(both, fixed, broken, neither),
        p_value=mcnemar_exact(fixed, broken),
        fixed=fixed,
        broken=broken,
        n=n,
    )
