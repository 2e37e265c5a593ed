from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from criticgym.utils.stats import mean_ci, welch_ci, wilson


@pytest.mark.parametrize("k, n", [(0, 5), (3, 10), (8, 10), (10, 10), (57, 200)])
def test_wilson_equals_scipy_for_whole_counts_and_holds_the_proportion(k, n):
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    low, high = wilson(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_matches_the_textbook_and_takes_ties_as_halves():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson(7.5, 10)  # a tie counted as half a success
    assert wilson(7, 10)[0] < low < wilson(8, 10)[0] and wilson(7, 10)[1] < high < wilson(8, 10)[1]
    assert np.isnan(wilson(0, 0)[0])


def test_mean_ci_is_the_student_t_interval_per_column():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 8.0]])
    mean, half = mean_ci(values)
    low, high = stats.t.interval(0.95, 2, loc=values.mean(0), scale=stats.sem(values, axis=0))
    np.testing.assert_allclose(mean, values.mean(0))
    np.testing.assert_allclose(half, (high - low) / 2)
    assert np.isnan(mean_ci([4.0])[1])


def test_welch_interval_by_hand_with_unequal_variances_and_sizes():
    import math

    a, b = [1.0, 2.0, 6.0], [0.0, 0.5, 1.0, 0.5, 1.0]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 5  # 7/3 / 3 and 0.175 / 5
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 4)  # Welch-Satterthwaite
    difference, half = welch_ci(a, b)
    assert difference == pytest.approx(3.0 - 0.6)
    assert half == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))
