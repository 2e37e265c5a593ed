"""The frontier's FLOPs accounting, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from criticgym.bench import frontier as fr
from criticgym.errors import ConfigError

# training 1.2 TFLOP once (policy 1.0 + reward 0.2), then 1 GFLOP per completion; search: nothing to train, 30 GFLOP
# per completion (best-of-30 style); the untrained policy: 1 GFLOP per completion
COSTS = {
    "relc": fr.ArmCost(train_flops=1.2e12, inference_flops=1e9),
    "best-of-n": fr.ArmCost(inference_flops=3e10),
    "untrained": fr.ArmCost(inference_flops=1e9),
}
SCORES = {"relc": 0.40, "best-of-n": 0.50, "untrained": 0.06}


def test_training_flops_add_policy_and_reward_over_iterations_and_inference_divides_by_completions():
    history = [
        {"perf/policy_flops": 4e11, "perf/reward_flops": 1e11},
        {"perf/policy_flops": 6e11, "perf/reward_flops": 1e11},
    ]
    assert fr.training_flops(history) == 1.2e12
    assert fr.inference_flops({"policy": 2.4e10, "reward": 6e9}, completions=32) == pytest.approx(3e10 / 32)
    with pytest.raises(ConfigError, match="at least one completion"):
        fr.inference_flops({"policy": 1.0}, completions=0)


def test_the_cost_to_serve_n_is_training_plus_n_completions_and_amortizes():
    relc = COSTS["relc"]
    assert relc.to_serve(100) == 1.2e12 + 100 * 1e9 == 1.3e12
    assert relc.per_completion(100) == pytest.approx(1.3e10)
    assert relc.per_completion(10**6) == pytest.approx(1e9 + 1.2e6)  # training all but vanishes
    curve = fr.serving_curve(COSTS, sizes=(100, 10_000))
    np.testing.assert_allclose(curve["relc"], [1.3e12, 1.12e13])
    np.testing.assert_allclose(curve["best-of-n"], [3e12, 3e14])
    with pytest.raises(ConfigError, match="cannot be negative"):
        fr.ArmCost(train_flops=-1.0)


def test_crossover_is_where_training_starts_to_pay():
    # 1.2e12 + n 1e9 = n 3e10  ->  n = 1.2e12 / 2.9e10
    assert fr.crossover(COSTS["relc"], COSTS["best-of-n"]) == pytest.approx(1.2e12 / 2.9e10)
    assert fr.crossover(COSTS["relc"], COSTS["untrained"]) is None  # the same inference: training never pays back
    assert fr.crossover(COSTS["best-of-n"], COSTS["untrained"]) is None  # best-of-n is never the cheaper one


def test_winners_at_each_deployment_size():
    found = fr.winners(COSTS, SCORES, sizes=(10, 100, 10**6))
    # at 10 completions search is both cheaper (3e11 < 1.21e12) and better than RELC: RELC is off the frontier
    assert found[10] == ["untrained", "best-of-n"]
    # from the crossover (about 41) on, RELC is cheaper than search but scores less: both are on the frontier
    assert found[100] == ["untrained", "relc", "best-of-n"]
    assert found[10**6] == ["untrained", "relc", "best-of-n"]
    better = {**SCORES, "relc": 0.6}  # a trained arm that also scores more takes search off the frontier once cheaper
    assert fr.winners(COSTS, better, sizes=(100,))[100] == ["untrained", "relc"]
    with pytest.raises(ConfigError, match="only one"):
        fr.winners(COSTS, {"relc": 0.4}, sizes=(100,))
