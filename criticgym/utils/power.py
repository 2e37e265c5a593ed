"""The power of a paired comparison: the smallest difference a benchmark can detect, and what it would take.

Two arms run on the same seeds and serve the same held-out prompts. Their paired difference on seed ``s`` and
prompt ``p`` is ``d[s, p]``; a benchmark reports the mean over seeds of each seed's mean over prompts with a
Student-t interval, so its test is a one-sample t-test on the per-seed means ``d[s]``. The variance of one ``d[s]``
splits as in a one-way random-effects model (seeds the groups, prompts the repeats):

    Var(d[s]) = seed_variance + prompt_variance / prompts

``seed_variance`` comes from training (another seed trains another policy), ``prompt_variance`` from sampling (the
same policy writes better or worse on another prompt, or another sample). More prompts shrink only the second term,
so a benchmark whose seed term dominates needs seeds, not prompts. The power arithmetic is statsmodels' (the
noncentral t of :class:`statsmodels.stats.power.TTestPower`); this module says what to feed it.

Example (4 seeds of 2 prompts, by hand: per-seed means 2, 6, 4, 4 have variance 8/3; within each seed the two
prompts differ by 2, a variance of 2, so the seed term is 8/3 - 2/2 = 5/3):

    >>> r = paired_resolution([[1, 3], [5, 7], [3, 5], [3, 5]], [[0, 0]] * 4)
    >>> r.difference, round(r.seed_variance, 4), r.prompt_variance
    (4.0, 1.6667, 2.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
"""Two-sided significance level: a 95% interval."""
POWER = 0.8
"""The chance of detecting a true difference of the detectable size."""
MOST_SEEDS = 100_000
"""Past this many seeds (or prompts) a difference counts as out of reach."""


def detectable_effect(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest standardized mean (mean / sd) a two-sided one-sample t-test of ``n`` values detects.

    ``inf`` for fewer than 2 values (no interval, no test).

    Example (10 pairs at 5% and 80% power: about one standard deviation; the normal approximation's
    (1.960 + 0.842) / sqrt(10) = 0.886 ignores the t distribution's wider tails):
        >>> round(detectable_effect(10), 3)
        0.996
    """
    from statsmodels.stats.power import TTestPower

    if n < 2:
        return math.inf
    return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided"))


def needed_count(effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest values (at least 2) for a two-sided one-sample t-test to detect a standardized mean ``effect``.

    ``None`` if it would take more than :data:`MOST_SEEDS`.
    """
    from statsmodels.stats.power import TTestPower

    effect = abs(effect)
    if effect == math.inf:
        return 2
    if effect == 0 or not math.isfinite(effect):
        return None
    test = TTestPower()
    if test.power(effect_size=effect, nobs=2, alpha=alpha, alternative="two-sided") >= power:
        return 2
    if test.power(effect_size=effect, nobs=MOST_SEEDS, alpha=alpha, alternative="two-sided") < power:
        return None
    n = math.ceil(test.solve_power(effect_size=effect, alpha=alpha, power=power, alternative="two-sided"))
    # the solver's float answer rounded up; step to the first whole count that reaches the power (float slack)
    while n > 2 and test.power(effect_size=effect, nobs=n - 1, alpha=alpha, alternative="two-sided") >= power:
        n -= 1
    while test.power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided") < power:
        n += 1
    return n


@dataclass(frozen=True)
class Resolution:
    """What a paired comparison over ``seeds`` seeds of ``prompts`` prompts resolves (see the module's text)."""

    seeds: int
    prompts: int
    difference: float
    """The mean paired difference."""
    half_width: float
    """Its 95% interval's half-width (Student t over seeds); nan for one seed."""
    sd: float
    """The standard deviation of the per-seed differences."""
    seed_variance: float
    """The variance of a per-seed difference that more prompts would not remove (training); 0 at the floor."""
    prompt_variance: float | None
    """The variance of one prompt's difference within a seed (sampling); None without per-prompt scores."""
    alpha: float = ALPHA
    power: float = POWER

    @property
    def detectable(self) -> float:
        """The smallest true difference this comparison detects with probability ``power``."""
        return detectable_effect(self.seeds, self.alpha, self.power) * self.sd

    @property
    def resolved(self) -> bool:
        """Whether the 95% interval excludes 0."""
        return bool(abs(self.difference) > self.half_width)

    @property
    def prompt_share(self) -> float | None:
        """The share of a per-seed difference's variance that comes from the prompts (sampling)."""
        if self.prompt_variance is None or not math.isfinite(self.seed_variance):  # one seed: the split unknown
            return None
        prompts = self.prompt_variance / self.prompts
        total = self.seed_variance + prompts
        return prompts / total if total > 0 else 0.0

    def variance(self, prompts: int | None = None) -> float:
        """The variance of one per-seed difference at ``prompts`` prompts (the measured sd's square by default)."""
        if prompts is None or self.prompt_variance is None:
            return self.sd**2
        return self.seed_variance + self.prompt_variance / prompts

    def seeds_for(self, difference: float, prompts: int | None = None) -> int | None:
        """The seeds needed to detect ``difference`` at ``prompts`` prompts per seed (this comparison's by default).

        ``None`` if out of reach (:data:`MOST_SEEDS`) or unknown (one seed: no variance measured).
        """
        variance = self.variance(prompts if prompts is not None else self.prompts)
        if not math.isfinite(variance):
            return None
        sd = math.sqrt(variance)
        return needed_count(difference / sd if sd > 0 else math.inf, self.alpha, self.power)

    def prompts_for(self, difference: float, seeds: int | None = None) -> int | None:
        """The prompts per seed needed to detect ``difference`` with ``seeds`` seeds (this comparison's by default).

        ``None`` if no number of prompts would do (the seed variance alone is too large: more seeds are needed),
        without per-prompt scores, or with one seed (the seed variance unknown).
        """
        if self.prompt_variance is None or not math.isfinite(self.seed_variance):
            return None
        largest_sd = abs(difference) / detectable_effect(seeds or self.seeds, self.alpha, self.power)
        room = largest_sd**2 - self.seed_variance
        if room <= 0:
            return None
        needed = max(1, math.ceil(self.prompt_variance / room))
        return needed if needed <= MOST_SEEDS else None


def paired_resolution(arm, baseline, alpha: float = ALPHA, power: float = POWER) -> Resolution:
    """The resolution of ``arm - baseline`` from their scores, paired by seed (rows) and prompt (columns).

    A 1-D input holds one score per seed: the total variance is known, its split is not (``prompt_variance`` None).
    """
    from criticgym.errors import ConfigError
    from criticgym.utils.stats import mean_ci

    arm, baseline = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if arm.shape != baseline.shape or arm.ndim not in (1, 2) or arm.shape[0] < 1:
        raise ConfigError(
            f"Paired scores need the same seeds (and prompts) for both arms: got shapes {arm.shape} and "
            f"{baseline.shape}; pass (seeds,) or (seeds, prompts) arrays of the seeds both ran."
        )
    differences = arm - baseline
    per_seed = differences if differences.ndim == 1 else differences.mean(axis=1)
    seeds = len(per_seed)
    mean, half = mean_ci(per_seed)
    total = float(per_seed.var(ddof=1)) if seeds > 1 else math.nan
    prompts, prompt_variance, seed_variance = 1, None, total
    if differences.ndim == 2 and differences.shape[1] > 1:
        prompts = differences.shape[1]
        prompt_variance = float(differences.var(axis=1, ddof=1).mean())
        seed_variance = max(total - prompt_variance / prompts, 0.0) if seeds > 1 else math.nan
    return Resolution(
        seeds=seeds,
        prompts=prompts,
        difference=float(mean),
        half_width=float(half),
        sd=math.sqrt(total) if seeds > 1 else math.nan,
        seed_variance=seed_variance,
        prompt_variance=prompt_variance,
        alpha=alpha,
        power=power,
    )
