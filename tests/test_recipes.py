"""The recipes of docs/ARCHITECTURE.md, done as a user does them: add a reward, add a judge, add an algorithm.

(Adding a task is tests/envs/test_tasks.py::test_a_task_spec_is_the_one_place_a_new_task_lives.)
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import criticgym  # noqa: F401  (registers the ids)
from criticgym.algos.base import LMAgent, masked_mean
from criticgym.critics import Critique, Span
from criticgym.rewards import Relc, RlaifPairwise
from criticgym.rollout import SamplingParams
from criticgym.rollout.engine import score_completions


class ExclamationCritic:
    """Recipe "add a reward": a span critic (critics/protocols.py:Critic) that marks every '!' as bad."""

    def critique(self, prompts, completions, extrinsic=None):
        return [Critique(tuple(Span(i, i + 1, -1.0) for i, ch in enumerate(text) if ch == "!")) for text in completions]


def test_recipe_add_a_reward_a_critic_object_in_the_relc_spec(tokenizer):
    env = gym.make(
        "criticgym/SentimentControl-v0",
        reward=Relc(alpha2=2.0),
        critic=ExclamationCritic(),
        scorer=lambda p, c: [0.0] * len(c),
        model=tokenizer,
        max_new_tokens=2,
        negative_value=-0.5,
    )
    env.reset(seed=0, options={"prompt": "Great"})
    bang = tokenizer.encode("!", add_special_tokens=False)[0]
    env.step(bang)
    _, reward, _, truncated, info = env.step(bang)
    # two marked tokens, each paid alpha2 * negative_value, all in hindsight on the last step
    assert truncated and reward == pytest.approx(2 * 2.0 * -0.5)
    np.testing.assert_allclose(info["token_rewards"], [-1.0, -1.0])


class FirstWins:
    """Recipe "add a judge": a pairwise judge (critics/protocols.py:PreferenceJudge) that always prefers a."""

    def prefer(self, prompts, completions_a, completions_b):
        return [0.75] * len(prompts)


def test_recipe_add_a_judge_a_preference_judge_object(tokenizer):
    envs = gym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=2,
        reward=RlaifPairwise(),
        judge=FirstWins(),
        model=tokenizer,
        max_new_tokens=1,
        autoreset_mode="disabled",
    )
    envs.reset(seed=0)
    _, rewards, _, truncated, _ = envs.step(np.array([300, 301]))
    assert truncated.all() and rewards.tolist() == pytest.approx([0.5, -0.5])  # 2p - 1 and 1 - 2p


def test_recipe_add_an_algorithm_an_lm_agent_with_rollout_and_iterate(tiny):
    from criticgym.algos.base import token_rewards

    class PlainReinforce(LMAgent):
        """REINFORCE with the batch's mean return as baseline: the algorithm is rollout() and iterate()."""

        def __init__(self, model, tokenizer, envs, lr=1e-2):
            super().__init__(model, tokenizer, envs, lr=lr, kl_coef=0.0, value_head=False, precision="fp32")

        def rollout(self):
            return self.play(sampling=SamplingParams(temperature=1.0))

        def iterate(self):
            collected = self.collect()
            batch, mask = collected.batch, collected.mask
            advantages = (collected.rewards.sum(1, keepdim=True) - collected.rewards.sum(1).mean()) * mask
            logprobs = score_completions(
                self.model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
            )[0]
            loss = -masked_mean(advantages * logprobs, mask)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.iteration += 1
            return {"loss": float(loss), "batch": batch, "advantages": advantages}

    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    envs = gym.make_vec(
        "criticgym/Words-v0",
        num_envs=8,
        model=tokenizer,
        max_new_tokens=4,
        scorer=lambda p, c: [float(len(c)) for c in c],
        autoreset_mode="disabled",
    )
    agent = PlainReinforce(model, tokenizer, envs)
    out = agent.iterate()
    batch, advantages = out["batch"], out["advantages"]
    assert agent.iteration == 1 and np.isfinite(out["loss"])
    assert torch.equal(token_rewards(batch).sum(1), batch.rewards.sum(1))  # a sparse reward: no hindsight vectors
    with torch.no_grad():  # the step raised the advantage-weighted log-likelihood of the batch it learned from
        after = score_completions(
            model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
        )[0]
        before = score_completions(
            tiny[0], batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
        )[0]
    mask = batch.completion_mask.float()
    assert float((advantages * after * mask).sum()) > float((advantages * before * mask).sum())


class MeanBaselineReinforce(LMAgent):
    """Recipe "add an algorithm" as ``criticgym train`` runs it: REINFORCE with the batch's mean return as baseline,
    built from a registered name with the config of the TrainConfig field it names (here ``reinforce``)."""

    def __init__(self, model, tokenizer, envs, config, seed=0, precision="auto"):
        self.config = config
        super().__init__(model, tokenizer, envs, config.lr, 0.0, seed, value_head=False, precision=precision)

    def rollout(self):
        return self.play(sampling=SamplingParams(temperature=self.config.temperature))

    def iterate(self):
        collected = self.collect()
        batch, mask = collected.batch, collected.mask
        returns = collected.rewards.sum(1, keepdim=True)
        logprobs = score_completions(
            self.model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
        )[0]
        loss = -masked_mean((returns - returns.mean()) * mask * logprobs, mask)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return {**self.charts(collected), "losses/policy_loss": float(loss)}


def test_recipe_add_an_algorithm_one_module_and_one_registration(tmp_path):
    from criticgym import algos
    from criticgym.algos.reinforce import ReinforceConfig
    from criticgym.errors import ConfigError
    from criticgym.train import TrainConfig, train

    algos.register_algorithm("mean-reinforce", f"{__name__}:MeanBaselineReinforce", "reinforce", temperature=1.0)
    try:
        with pytest.raises(ConfigError, match="already registered as 'mean-reinforce'"):
            algos.register_algorithm("mean-reinforce", MeanBaselineReinforce, "ppo")
        cfg = TrainConfig(
            env="criticgym/Words-v0",
            reward="sparse",
            agent="mean-reinforce",
            reinforce=ReinforceConfig(lr=1e-3),
            model="tiny",
            iterations=1,
            num_envs=4,
            eval_prompts=4,
            out=str(tmp_path),
            progress=False,
        )
        assert cfg.agent_config == ReinforceConfig(lr=1e-3, temperature=1.0)  # its options, and what its name fixes
        history = train(cfg, log=lambda *a: None)["history"]
        assert history[0]["iteration"] == 1 and np.isfinite(history[0]["losses/policy_loss"])
    finally:
        algos.ALGORITHMS.pop("mean-reinforce")
