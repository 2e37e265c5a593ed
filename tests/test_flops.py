from __future__ import annotations

import copy

import pytest
import torch

from criticgym import flops
from criticgym.rewards import RlaifDirect
from criticgym.rollout import load_policy


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny")


def parameters(model, trainable=False):
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding
    return sum(
        p.numel() for p in model.parameters() if (p is not embedding or tied) and (p.requires_grad or not trainable)
    )


def test_a_forward_pass_costs_two_flops_per_parameter_and_token(tiny):
    model, _ = tiny
    flops.take()
    with torch.no_grad(), flops.phase("reward"):
        model(input_ids=torch.ones(3, 7, dtype=torch.long))
    assert flops.take() == {"reward": 2.0 * parameters(model) * 21}


def test_a_pass_with_gradients_adds_the_backward_pass_of_the_trainable_part(tiny):
    from criticgym.utils.training import freeze_lower_layers

    model = copy.deepcopy(tiny[0])  # the copy is tracked too
    freeze_lower_layers(model, 1)
    trainable = parameters(model, trainable=True)
    head = model.get_output_embeddings().weight
    frozen_head = 0 if head.requires_grad else head.numel()
    assert 0 < trainable < parameters(model)
    flops.take()
    with flops.phase("policy"):
        model(input_ids=torch.ones(2, 5, dtype=torch.long))
    expected = (2 * parameters(model) + 2 * (trainable + frozen_head) + 2 * trainable) * 10
    assert flops.take() == {"policy": float(expected)}


def test_phases_nest_and_untracked_calls_go_to_other(tiny):
    model, _ = tiny
    flops.take()
    with torch.no_grad(), flops.phase("policy"):
        with flops.phase("reward"):
            model(input_ids=torch.ones(1, 4, dtype=torch.long))
        model(input_ids=torch.ones(1, 2, dtype=torch.long))
    with torch.no_grad():
        model(input_ids=torch.ones(1, 1, dtype=torch.long))
    per_token = 2.0 * parameters(model)
    assert flops.take() == {"reward": 4 * per_token, "policy": 2 * per_token, "other": per_token}
    assert flops.take() == {}


def test_training_charges_the_policy_and_the_judge_separately(tmp_path):
    from criticgym.algos.reinforce import ReinforceConfig
    from criticgym.train import TrainConfig, train

    common = dict(
        env="criticgym/Detoxify-v0",  # its scorer is a linear model, not a network: a sparse reward costs 0 FLOPs
        agent="rloo",
        model="tiny",
        iterations=1,
        num_envs=4,
        max_new_tokens=4,
        reinforce=ReinforceConfig(k=2),
        eval_prompts=4,
        progress=False,
    )
    runs = [
        train(TrainConfig(reward="sparse", out=str(tmp_path / "a"), **common), log=print)["history"][0],
        train(TrainConfig(reward=RlaifDirect(judge_model="label:self"), out=str(tmp_path / "b"), **common))["history"][
            0
        ],
    ]
    model, _ = load_policy("tiny")
    at_least = 2 * parameters(model) * 4 * 8  # 4 rows, at least 8 tokens of prompt and completion each
    # the same policy work whatever the reward; the judge (a frozen copy of the policy) reads every completion
    assert runs[0]["perf/policy_flops"] == runs[1]["perf/policy_flops"] > at_least
    assert runs[0]["perf/reward_flops"] == 0.0 and runs[1]["perf/reward_flops"] > at_least / 2


def test_the_estimate_matches_torchs_flop_counter_up_to_attention_scores(tiny):
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = tiny
    ids = torch.ones(4, 16, dtype=torch.long)
    flops.take()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    estimate = flops.take()["other"]
    config = model.config
    # what the estimate leaves out: QK^T and attention-times-V, 2 * 2 * T * T * d per layer and sequence
    scores = 4 * config.num_hidden_layers * 4 * 16 * 16 * config.hidden_size
    assert estimate == pytest.approx(counter.get_total_flops() - scores, rel=0.005)
