"""GRPO: group-relative advantages (outcome and process supervision) against hand-computed cases, its KL term, and
learning the toy task."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import criticgym
from criticgym.algos.grpo import GRPO, GRPOConfig, group_advantages, k3_kl
from criticgym.errors import ConfigError
from criticgym.rollout import load_policy


def words_envs(n=32):
    return criticgym.make_vec("criticgym/Words-v0", num_envs=n, autoreset_mode="disabled")


def test_outcome_rewards_give_the_group_normalized_return_on_every_token():
    # two groups of k=4; each completion's one reward on its last token (rows of 3, 2, 3, 1 tokens, ...)
    lengths = [3, 2, 3, 1, 2, 2, 3, 3]
    outcomes = [1.0, 0.0, 0.0, 1.0, 2.0, -1.0, 0.5, 0.5]
    mask = torch.tensor([[1.0] * n + [0.0] * (3 - n) for n in lengths])
    scores = torch.zeros(8, 3)
    for row, (n, r) in enumerate(zip(lengths, outcomes, strict=True)):
        scores[row, n - 1] = r
    advantages = group_advantages(scores, mask, k=4, eps=0.0)
    # group 1: mean 1/2, unbiased std sqrt(1/3); group 2: mean 1/2, unbiased std sqrt(4.5/3)
    high = 0.5 / math.sqrt(1 / 3)
    expected = [high, -high, -high, high]
    expected += [1.5 / math.sqrt(1.5), -1.5 / math.sqrt(1.5), 0.0, 0.0]
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(advantages[row, :n], [expected[row]] * n, rtol=1e-6, atol=1e-7)
        assert advantages[row, n:].abs().sum() == 0


def test_dense_rewards_give_deepseekmaths_process_supervision():
    # k=2: row 0 has rewards 0.5 (token 0) and 1.0 (its last token); row 1 (2 tokens) only its last, -1.0
    scores = torch.tensor([[0.5, 0.0, 1.0], [0.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    steps = [0.5, 1.0, -1.0]
    mean = sum(steps) / 3
    std = math.sqrt(sum((s - mean) ** 2 for s in steps) / 2)
    a, b, c = ((s - mean) / std for s in steps)
    advantages = group_advantages(scores, mask, k=2, eps=0.0)
    # each token: the sum of the normalized step rewards from it on
    np.testing.assert_allclose(advantages[0], [a + b, b, b], rtol=1e-6)
    np.testing.assert_allclose(advantages[1], [c, c, 0.0], rtol=1e-6)


def test_the_kl_term_is_the_k3_estimator():
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -2.0 + math.log(2), -0.5 - math.log(2)])
    # exp(ref - logp) - (ref - logp) - 1: 0 where they agree; 2 - ln 2 - 1 and 1/2 + ln 2 - 1
    np.testing.assert_allclose(k3_kl(logprobs, ref), [0.0, 1 - math.log(2), math.log(2) - 0.5], atol=1e-6)


def test_grpo_needs_groups_that_divide_the_batch():
    model, tokenizer = load_policy("tiny")
    with pytest.raises(ConfigError, match="multiple of k"):
        GRPO(model, tokenizer, words_envs(6), GRPOConfig(k=4))
    agent = GRPO(model, tokenizer, words_envs(8), GRPOConfig(k=4, beta=0.0))
    assert agent.value_head is None and agent.ref_model is None  # no value head; beta 0: no reference model
    prompts = [info["prompt"] for info in agent.rollout().infos]
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4


# Learning threshold. The untrained policy scores about 0.70 on Words-v0 (first batches 0.63-0.70 here). After 40
# iterations GRPO reaches 0.89-0.98 (last five batches, seeds 0-5, this config, the locked install); the threshold
# sits below the worst seed by a margin that an ordinary library update should not eat.
def test_grpo_learns_the_toy_task():
    model, tokenizer = load_policy("tiny")
    agent = GRPO(model, tokenizer, words_envs(), GRPOConfig(lr=3e-3, beta=0.01, k=4, minibatch_size=16))
    returns = [agent.iterate()["charts/episodic_return"] for _ in range(40)]
    first, last = returns[0], float(np.mean(returns[-5:]))
    assert last > 0.82 and last > first + 0.1, (first, last)


def test_a_resumed_grpo_run_equals_an_uninterrupted_one():
    def new_agent():
        model, tokenizer = load_policy("tiny")
        return GRPO(model, tokenizer, words_envs(8), GRPOConfig(lr=1e-3, k=4, epochs=2, minibatch_size=4), seed=5)

    straight = new_agent()
    expected = [straight.iterate()["charts/episodic_return"] for _ in range(4)]
    first = new_agent()
    returns = [first.iterate()["charts/episodic_return"] for _ in range(2)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    resumed = new_agent()
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    returns += [resumed.iterate()["charts/episodic_return"] for _ in range(2)]
    assert returns == expected


def test_criticgym_train_names_grpo_and_its_options(tmp_path):
    from criticgym.train import TrainConfig, config_from_args, train

    cfg = config_from_args(["--agent", "grpo", "--grpo.k", "2", "--grpo.beta", "0.1", "--num-envs", "4", "sparse"])
    assert cfg.agent_config == GRPOConfig(k=2, beta=0.1)
    options = dict(env="criticgym/Words-v0", reward="sparse", model="tiny", num_envs=4, eval_prompts=4)
    run = TrainConfig(agent="grpo", grpo=GRPOConfig(k=2), iterations=1, out=str(tmp_path), progress=False, **options)
    history = train(run, log=lambda *a: None)["history"]
    assert history[0]["iteration"] == 1 and "losses/kl" in history[0]
