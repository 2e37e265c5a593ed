"""Intervals for results, from scipy: a mean's Student-t interval and a proportion's Wilson interval."""

from __future__ import annotations

import numpy as np


def mean_ci(values, axis: int = 0, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the half-width of its Student-t interval along ``axis`` (nan half-width for fewer than 2 values).

    Example:
        >>> mean, half = mean_ci([1.0, 2.0, 3.0])
        >>> float(mean), round(float(half), 4)
        (2.0, 2.4841)
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * stats.sem(values, axis=axis)


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; ``successes`` may count ties as halves.

    Equal to scipy's ``binomtest(k, n).proportion_ci(method="wilson")`` for whole counts (tested); written out
    here because scipy takes whole counts only.

    Example:
        >>> [round(x, 3) for x in wilson(8, 10)]
        [0.49, 0.943]
    """
    from scipy import stats

    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p (float rounding can put an end a hair past it at p = 0 or 1)
    return float(min(max(centre - half, 0.0), p)), float(max(min(centre + half, 1.0), p))


def welch_ci(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """mean(a) - mean(b) of two independent samples and the half-width of its Welch interval (scipy's).

    Example (equal sizes and variances: the pooled t interval, 6 degrees of freedom):
        >>> difference, half = welch_ci([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
        >>> difference, round(half, 4)
        (1.0, 2.2337)
    """
    from scipy import stats

    result = stats.ttest_ind(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_var=False)
    low, high = result.confidence_interval(confidence)
    return float(np.mean(a) - np.mean(b)), float((high - low) / 2)
