"""The feedback frontier's accounting: what each arm costs to serve N completions, and which arms win at which N.

Training-time feedback (sparse, RELC, RLAIF, SELF) pays once, before deployment; inference-time search (best-of-N,
RAIN) pays on every completion. To put both on one axis, an arm's cost to serve N held-out completions is

    cost(N) = training FLOPs (policy + reward, the whole run) + N * inference FLOPs per completion

(the untrained policy and the search arms train nothing; a trained policy's inference is one sampled completion; a
search's is its sampling plus its evaluations). Amortized, ``cost(N) / N = training / N + inference``. At a
deployment size N an arm is on the frontier when no other arm is at once cheaper (or as cheap) and better (or as
good) with one of the two strict; :func:`winners` lists the frontier for each N and :func:`crossover` the N at which
two arms cost the same.

    >>> trained, search = ArmCost(train_flops=1e12, inference_flops=1e9), ArmCost(inference_flops=3e10)
    >>> trained.to_serve(100), search.to_serve(100)
    (1100000000000.0, 3000000000000.0)
    >>> round(crossover(trained, search), 1)  # from about 34 completions on, training is the cheaper way
    34.5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from criticgym.errors import ConfigError

DEPLOYMENT_SIZES = tuple(int(10**k) for k in range(2, 7))
"""The N of the frontier plot: 10^2 .. 10^6 served completions."""


@dataclass(frozen=True)
class ArmCost:
    """What an arm spends: once to train (policy and reward FLOPs), and per served completion."""

    train_flops: float = 0.0
    inference_flops: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.train_flops) and np.isfinite(self.inference_flops)):
            raise ConfigError(f"An arm's FLOPs must be finite, got {self}.")
        if self.train_flops < 0 or self.inference_flops < 0:
            raise ConfigError(f"An arm's FLOPs cannot be negative, got {self}.")

    def to_serve(self, n: float) -> float:
        """Total FLOPs to train (once) and serve ``n`` completions."""
        return float(self.train_flops + n * self.inference_flops)

    def per_completion(self, n: float) -> float:
        """FLOPs per served completion when the training is amortized over ``n`` of them."""
        return float(self.train_flops / n + self.inference_flops)


def training_flops(history: Sequence[Mapping[str, Any]]) -> float:
    """A run's training FLOPs: policy and reward, summed over its iterations (``perf/*_flops`` of each row)."""
    return float(sum(row.get("perf/policy_flops", 0.0) + row.get("perf/reward_flops", 0.0) for row in history))


def inference_flops(spent: Mapping[str, float], completions: int) -> float:
    """FLOPs per completion from what serving ``completions`` of them spent (every phase: policy and evaluator)."""
    if completions < 1:
        raise ConfigError(f"Inference FLOPs per completion need at least one completion, got {completions}.")
    return float(sum(spent.values()) / completions)


def serving_curve(costs: Mapping[str, ArmCost], sizes: Iterable[int] = DEPLOYMENT_SIZES) -> dict[str, np.ndarray]:
    """Each arm's total FLOPs to serve every N of ``sizes``."""
    sizes = list(sizes)
    return {arm: np.array([cost.to_serve(n) for n in sizes]) for arm, cost in costs.items()}


def pareto(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The arms no other arm dominates, cheapest first, from ``arm -> (cost, score)`` (higher score is better)."""

    def dominated(arm: str) -> bool:
        cost, score = points[arm]
        return any(
            c <= cost and s >= score and (c < cost or s > score) for other, (c, s) in points.items() if other != arm
        )

    return sorted((arm for arm in points if not dominated(arm)), key=lambda arm: points[arm])


def winners(
    costs: Mapping[str, ArmCost], scores: Mapping[str, float], sizes: Iterable[int] = DEPLOYMENT_SIZES
) -> dict[int, list[str]]:
    """The frontier at each deployment size N: the arms that no other arm beats at once on cost and on score."""
    missing = set(costs) ^ set(scores)
    if missing:
        raise ConfigError(f"Every arm needs a cost and a score; these have only one: {sorted(missing)}.")
    return {n: pareto({arm: (costs[arm].to_serve(n), scores[arm]) for arm in costs}) for n in sizes}


def crossover(a: ArmCost, b: ArmCost) -> float | None:
    """The number of completions at which ``a`` and ``b`` cost the same to serve (None: they never do)."""
    slope = b.inference_flops - a.inference_flops
    if slope == 0:
        return None
    n = (a.train_flops - b.train_flops) / slope
    return float(n) if n > 0 else None
