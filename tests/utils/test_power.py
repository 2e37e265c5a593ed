"""The detectable-difference arithmetic against hand-computed cases and the noncentral t written out with scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from criticgym.bench.resolution import markdown_lines, resolution_rows
from criticgym.errors import ConfigError
from criticgym.utils.power import detectable_effect, needed_count, paired_resolution


def t_test_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """A two-sided one-sample t-test's power, from the noncentral t by hand (the reference)."""
    df, shift = n - 1, effect * math.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10, 32])
def test_the_detectable_effect_has_exactly_80_percent_power(n):
    assert t_test_power(detectable_effect(n), n) == pytest.approx(0.8, abs=1e-6)


def test_the_detectable_effect_approaches_the_normal_approximation_with_many_values():
    n = 10_000
    by_hand = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(n)  # (1.960 + 0.842) / 100
    assert detectable_effect(n) == pytest.approx(by_hand, rel=1e-3)
    assert detectable_effect(1) == math.inf


@pytest.mark.parametrize("effect", [0.3, 0.8, 1.0, 2.5])
def test_the_count_needed_is_the_first_whole_count_that_reaches_the_power(effect):
    n = needed_count(effect)
    assert t_test_power(effect, n) >= 0.8
    assert n == 2 or t_test_power(effect, n - 1) < 0.8


def test_a_count_out_of_reach_is_none_and_no_difference_needs_no_seeds_beyond_two():
    assert needed_count(1e-4) is None
    assert needed_count(0.0) is None
    assert needed_count(math.inf) == 2


def test_the_variance_splits_between_seeds_and_prompts_as_computed_by_hand():
    # per-seed mean differences 2, 6, 4, 4: mean 4, variance (4 + 4 + 0 + 0) / 3 = 8/3;
    # within each seed the two prompts' differences are 2 apart: variance 2, so the seed part is 8/3 - 2/2 = 5/3
    arm = np.array([[1.0, 3.0], [5.0, 7.0], [3.0, 5.0], [3.0, 5.0]])
    r = paired_resolution(arm + 10.0, np.full_like(arm, 10.0))
    assert (r.seeds, r.prompts, r.difference) == (4, 2, 4.0)
    assert r.sd == pytest.approx(math.sqrt(8 / 3))
    assert r.seed_variance == pytest.approx(5 / 3)
    assert r.prompt_variance == pytest.approx(2.0)
    assert r.prompt_share == pytest.approx((2 / 2) / (8 / 3))
    assert r.half_width == pytest.approx(stats.t.ppf(0.975, 3) * math.sqrt(8 / 3) / 2)
    assert r.resolved
    assert r.detectable == pytest.approx(detectable_effect(4) * math.sqrt(8 / 3))


def test_seeds_and_prompts_needed_for_a_named_difference():
    arm = np.array([[1.0, 3.0], [5.0, 7.0], [3.0, 5.0], [3.0, 5.0]])
    r = paired_resolution(arm, np.zeros_like(arm))
    # at the measured 2 prompts the per-seed sd is sqrt(8/3): 1.0 needs the count for effect 1 / sqrt(8/3)
    assert r.seeds_for(1.0) == needed_count(1.0 / math.sqrt(8 / 3))
    # 200 prompts leave the seed part: sd sqrt(5/3 + 2/200)
    assert r.seeds_for(1.0, prompts=200) == needed_count(1.0 / math.sqrt(5 / 3 + 0.01))
    # with 4 seeds the sd may be at most 4 / d(4); prompts fill what the seed part leaves
    room = (4.0 / detectable_effect(4)) ** 2 - 5 / 3
    assert r.prompts_for(4.0) == math.ceil(2.0 / room)
    # a difference smaller than the seed part allows at 4 seeds: no number of prompts does it
    assert r.prompts_for(1.0) is None
    assert r.prompts_for(1.0, seeds=40) == math.ceil(2.0 / ((1.0 / detectable_effect(40)) ** 2 - 5 / 3))


def test_per_seed_scores_give_the_total_variance_without_a_split():
    r = paired_resolution([0.5, 0.7, 0.6], [0.4, 0.4, 0.5])
    assert r.difference == pytest.approx(0.5 / 3)
    assert r.prompt_variance is None and r.prompt_share is None and r.prompts_for(0.1) is None
    assert r.sd == pytest.approx(np.std([0.1, 0.3, 0.1], ddof=1))


def test_one_seed_has_no_interval_and_mismatched_scores_are_refused():
    r = paired_resolution([[1.0, 2.0]], [[0.0, 0.0]])
    assert math.isnan(r.half_width) and math.isnan(r.detectable)  # no interval, no test with one seed
    # nothing to plan from: the seed variance is unknown (an arm with one finished seed in a report)
    assert r.prompt_share is None and r.seeds_for(0.1) is None and r.prompts_for(0.1) is None
    lines = markdown_lines(resolution_rows({("a", 0): [1.0, 2.0], ("b", 0): [0.0, 0.0]}, "b", 0.1), "judge")
    assert "| a | 1 | 2 | +1.500 | no | unknown | unknown | unknown | unknown |" in lines
    with pytest.raises(ConfigError, match="same seeds"):
        paired_resolution([[1.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]])
