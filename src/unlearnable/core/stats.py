"""Intervals for the numbers the audit and the leaderboard report.

    wilson(0.853, 10_000)            # (0.8460, 0.8598): 95 % score interval of a test accuracy
    mean_interval([0.61, 0.64, 0.6]) # mean, sample std and the t interval of the mean over seeds
    overlap((0.5, 0.6), (0.58, 0.7)) # True: the two cannot be told apart at this confidence

Why Wilson rather than the normal approximation: a protected set's accuracies sit near chance
or near 100 % on small test sets, where p ± z·sqrt(p(1-p)/n) leaves [0, 1] and has the wrong
coverage; the score interval does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import t as student_t

from .errors import UnlearnableError

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile

MAX_SEEDS = 20  # the most seeds an audit or a leaderboard reruns on (--seeds)


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` observed on `n` trials (default 95 %)."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"wilson: p must lie in [0, 1], got {p}")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def t975(df: int) -> float:
    """Student's t 97.5 % quantile for `df` degrees of freedom: the interval of a mean over a few seeds."""
    if df < 1:
        raise ValueError(f"t975: df must be at least 1, got {df}")
    return float(student_t.ppf(0.975, df))


def check_seeds(n: object) -> int:
    """`n` as a number of seeds (1 to `MAX_SEEDS`), else the one-line error naming --seeds."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SEEDS:
        raise UnlearnableError(f"--seeds must be an integer from 1 to {MAX_SEEDS}, got {n!r}")
    return n


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, tuple[float, float] | None]:
    """(mean, sample std, 95 % t interval of the mean) of `values`; std and interval are None
    for a single value (one seed says nothing of the spread)."""
    if not values:
        raise ValueError("mean_interval: no values")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    return mean, std, (mean - half, mean + half)


def widest(*intervals: tuple[float, float] | None) -> tuple[float, float] | None:
    """The union of the intervals given (None ones ignored): the wider uncertainty wins."""
    given = [iv for iv in intervals if iv is not None]
    if not given:
        return None
    return min(lo for lo, _ in given), max(hi for _, hi in given)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]
