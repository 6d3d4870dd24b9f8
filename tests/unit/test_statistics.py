"""Intervals and the paired test (`workbench.evaluation.statistics`).

Every expected number is computed here independently of the module (the Wilson
interval from its defining score equation, McNemar from binomial probabilities) or
taken from a published table.
"""

from __future__ import annotations

import math
import random
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from workbench.errors import ArgumentTypeError, InvalidArgumentError, WorkbenchError
from workbench.evaluation.statistics import (
    Z95,
    Effect,
    Proportion,
    mcnemar_exact,
    paired_effect,
    paired_interval,
    proportion,
    wilson,
)


def score(p: float, k: int, n: int) -> float:
    """The Wilson score statistic |k/n - p| / sqrt(p (1 - p) / n)."""
    return abs(k / n - p) / math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize(("k", "n"), [(1, 2), (3, 12), (7, 24), (12, 24), (23, 24), (81, 263)])
def test_a_wilson_interval_ends_where_the_score_test_reaches_1_96(k, n):
    p = wilson(k, n)
    assert (p.k, p.n, p.value) == (k, n, k / n)
    assert p.low < k / n < p.high
    assert score(p.low, k, n) == pytest.approx(Z95, rel=1e-9)
    assert score(p.high, k, n) == pytest.approx(Z95, rel=1e-9)
    # Just inside the ends the score is below 1.96; just outside, above.
    for end, inward in ((p.low, 1e-6), (p.high, -1e-6)):
        assert score(end + inward, k, n) < Z95 < score(end - inward, k, n)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (score).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_the_published_table(k, n, low, high):
    p = wilson(k, n)
    assert (round(p.low, 4), round(p.high, 4)) == (low, high)


def test_wilson_at_none_and_all_touches_0_and_1():
    none, every = wilson(0, 12), wilson(12, 12)
    assert none.low == 0.0 and every.high == 1.0
    # At k = 0 the upper end solves z² (1 - p) = n p: p = z² / (n + z²).
    assert none.high == pytest.approx(Z95**2 / (12 + Z95**2))
    assert every.low == pytest.approx(1 - none.high)


def test_a_proportion_of_booleans_counts_the_trues():
    outcomes = [True, False, True, True, False, np.bool_(True)]
    assert proportion(outcomes) == wilson(4, 6)
    assert proportion(np.array([False, False])).k == 0


def binomial_p_value(fixed: int, broken: int) -> float:
    """Two-sided exact binomial test at 1/2: the total chance of every count no more
    likely than the one observed (the definition, not the doubled tail)."""
    m = fixed + broken
    chance = [math.comb(m, i) / 2**m for i in range(m + 1)]
    return min(1.0, sum(c for c in chance if c <= chance[fixed] * (1 + 1e-9)))


@pytest.mark.parametrize(("fixed", "broken"), [(0, 0), (3, 0), (1, 9), (4, 4), (7, 2), (0, 24)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_prompts(fixed, broken):
    assert mcnemar_exact(fixed, broken) == pytest.approx(binomial_p_value(fixed, broken))
    assert mcnemar_exact(fixed, broken) == mcnemar_exact(broken, fixed)


def test_mcnemar_known_values():
    assert mcnemar_exact(0, 0) == 1.0  # nothing changed: no evidence of a change
    assert mcnemar_exact(5, 0) == 2 / 32
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)  # 2 (1 + 10) / 2**10
    assert mcnemar_exact(6, 6) == 1.0


def test_the_paired_interval_matches_the_published_example():
    # Cavo et al. (2012) in Fagerland, Lydersen and Laake (2017), "Statistical
    # analysis of contingency tables", ch. 8: Newcombe square-and-add -0.0621
    # (-0.1186 to -0.0046).
    low, high = paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_without_correlation_the_paired_interval_squares_and_adds_wilson_distances():
    # both * neither - fixed * broken = 2 * 2 - 4 * 1 = 0: phi is 0.
    both, fixed, broken, neither = 2, 4, 1, 2
    n = 9
    s, u = wilson(both + fixed, n), wilson(both + broken, n)
    gain = s.value - u.value
    low = gain - math.hypot(s.value - s.low, u.high - u.value)
    high = gain + math.hypot(u.value - u.low, s.high - s.value)
    assert paired_interval(both, fixed, broken, neither) == pytest.approx((low, high))


def test_the_paired_interval_is_never_a_point_and_stays_in_minus_1_to_1():
    # No prompt changed: gain 0, but 12 prompts cannot make it certain.
    low, high = paired_interval(5, 0, 0, 7)
    assert low < 0 < high and low == pytest.approx(-high)
    assert paired_interval(0, 12, 0, 0)[1] == 1.0
    assert paired_interval(0, 0, 12, 0)[0] == -1.0
    # Swapping steered and unsteered mirrors the interval.
    low, high = paired_interval(3, 5, 1, 3)
    assert paired_interval(3, 1, 5, 3) == pytest.approx((-high, -low))


def test_the_paired_interval_covers_the_true_gain_about_95_percent_of_the_time():
    rng = random.Random(17)
    n, runs = 24, 2000
    # Per prompt: pass unsteered with 0.3; steering fixes 40% of fails, breaks 10% of passes.
    p_plain, p_fix, p_break = 0.3, 0.4, 0.1
    true_gain = (1 - p_plain) * p_fix - p_plain * p_break
    covered = 0
    for _ in range(runs):
        plain = [rng.random() < p_plain for _ in range(n)]
        steered = [(rng.random() >= p_break) if b else (rng.random() < p_fix) for b in plain]
        low, high = paired_effect(plain, steered).ci95
        covered += low <= true_gain <= high
    assert 0.93 <= covered / runs <= 0.99


def test_a_paired_effect_counts_fixed_and_broken_prompts():
    plain = [True, True, False, False, False, True]
    steered = [True, False, True, True, False, True]
    e = paired_effect(plain, steered)
    assert (e.fixed, e.broken, e.n) == (2, 1, 6)
    assert e.gain == pytest.approx(proportion(steered).value - proportion(plain).value)
    assert e.ci95 == paired_interval(2, 2, 1, 1)
    assert e.p_value == mcnemar_exact(2, 1) == 1.0
    assert isinstance(e.ci95, tuple)


@pytest.mark.parametrize(
    ("plain", "steered", "error", "shown"),
    [
        ([True], [True, False], InvalidArgumentError, "unsteered holds 1 outcomes and steered 2"),
        ([], [], InvalidArgumentError, "unsteered is empty"),
        ([True, 1], [True, True], ArgumentTypeError, "unsteered[1] is int 1"),
        ([True], [None], ArgumentTypeError, "steered[0] is NoneType None"),
        ([True], [float("nan")], ArgumentTypeError, "steered[0] is float nan"),
        ("TF", "TF", ArgumentTypeError, "must be a sequence of True/False, got str"),
        (True, [True], ArgumentTypeError, "got bool True"),
    ],
)
def test_bad_outcomes_are_refused_by_name(plain, steered, error, shown):
    with pytest.raises(error) as caught:
        paired_effect(plain, steered)
    assert isinstance(caught.value, WorkbenchError)
    assert shown in str(caught.value)


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        (lambda: wilson(3, 0), "n 0"),
        (lambda: wilson(5, 4), "k 5 is not between 0 and n 4"),
        (lambda: wilson(1.0, 4), "k must be an int, got 1.0"),
        (lambda: wilson(True, 4), "got True"),
        (lambda: mcnemar_exact(-1, 2), "fixed -1"),
        (lambda: paired_interval(0, 0, 0, 0), "no prompts"),
        (lambda: Proportion(1, 4, 0.3, 0.5), "does not hold 1/4"),
        (lambda: Effect(0.5, (0.0, 0.9), 0.5, 1, 0, 4), "gain 0.5 is not (fixed - broken) / n"),
        (lambda: Effect(0.25, (0.3, 0.9), 0.5, 1, 0, 4), "ci95 (0.3, 0.9) does not hold"),
        (lambda: Effect(0.25, (0.0, 0.9), 1.5, 1, 0, 4), "p_value 1.5"),
        (lambda: Effect(1.0, (0.0, 1.0), 0.5, 5, 0, 4), "do not fit in n 4"),
    ],
)
def test_inconsistent_numbers_are_refused(call, shown):
    with pytest.raises(WorkbenchError) as caught:
        call()
    assert shown in str(caught.value)


def test_results_are_frozen():
    with pytest.raises(FrozenInstanceError):
        wilson(1, 2).k = 2
    with pytest.raises(FrozenInstanceError):
        paired_effect([True], [False]).gain = 0.0
