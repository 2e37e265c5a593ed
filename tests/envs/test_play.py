from __future__ import annotations

import numpy as np
import pytest
import torch

import criticgym
from criticgym.envs import play
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutEngine


def test_rollout_needs_a_vector_env_that_does_not_autoreset(tiny):
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=2, reward=None)
    with pytest.raises(ConfigError, match="autoreset_mode='disabled'"):
        play(RolloutEngine(*tiny), envs)


def test_rollout_drives_the_vector_env(sharp):
    model, tokenizer = sharp
    calls = []

    def length_reward(prompts, completions):
        calls.append(len(completions))
        return [float(len(c)) for c in completions]

    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=5, scorer=length_reward, autoreset_mode="disabled", max_new_tokens=7
    )
    batch = play(RolloutEngine(model, tokenizer), envs, seed=0)
    assert batch.completion_ids.shape == (5, 7)
    assert batch.lengths.tolist() == [7] * 5  # the env's budget, not the engine's default
    for row, info in enumerate(batch.infos):
        assert info["completion_ids"].tolist() == batch.completion_ids[row].tolist()
        assert info["completion"] == tokenizer.decode(batch.completion_ids[row], skip_special_tokens=True)
        assert batch.rewards[row, -1] == pytest.approx(len(info["completion"]))
        assert batch.rewards[row, :-1].abs().sum() == 0
    assert calls == [5]  # all five episodes ended on the same step: one batched scorer call
    # the prompts are the env's
    obs_prompts = [tokenizer.decode(batch.prompt_ids[r][batch.prompt_mask[r].bool()]) for r in range(5)]
    assert obs_prompts == [info["prompt"] for info in batch.infos]


def test_rollout_is_reproducible(sharp):
    model, tokenizer = sharp
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=3, reward=None, autoreset_mode="disabled")
    engine = RolloutEngine(model, tokenizer)
    a, b = play(engine, envs, seed=7), play(engine, envs, seed=7)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.prompt_ids, b.prompt_ids)
    np.testing.assert_array_equal([i["prompt"] for i in a.infos], [i["prompt"] for i in b.infos])
