from __future__ import annotations

import numpy as np
import pytest
import torch

import criticgym
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutEngine, SamplingParams, join_batches
from criticgym.sources import play, play_rows


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


def _rows_batch(tiny, rows, batch_size, group_size=1):
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=len(rows),
        scorer=lambda prompts, completions: [float(len(c)) for c in completions],
        autoreset_mode="disabled",
        max_new_tokens=6,
    )
    options = {"group_size": group_size}
    return play_rows(
        RolloutEngine(*tiny), envs, rows, batch_size, seed=11, options=options, sampling=SamplingParams(temperature=1.5)
    )


@pytest.mark.parametrize("group_size", [1, 2])
def test_a_batch_played_in_parts_equals_the_batch_played_whole(tiny, group_size):
    whole = _rows_batch(tiny, range(0, 6), 6, group_size)
    parts = [_rows_batch(tiny, range(0, 2), 6, group_size), _rows_batch(tiny, range(2, 6), 6, group_size)]
    joined = join_batches(parts, RolloutEngine(*tiny).pad_id)
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "rewards"):
        assert torch.equal(getattr(joined, field), getattr(whole, field)), field
    torch.testing.assert_close(joined.logprobs, whole.logprobs, atol=1e-3, rtol=1e-4)  # padding changes the sums
    assert [i["completion"] for i in joined.infos] == [i["completion"] for i in whole.infos]
    prompts = [tuple(row[mask.bool()].tolist()) for row, mask in zip(whole.prompt_ids, whole.prompt_mask, strict=True)]
    if group_size == 2:  # whole groups of one prompt, wherever the batch is split
        assert prompts[0::2] == prompts[1::2]
    assert len({i["completion"] for i in whole.infos}) > 1  # rows sample differently


def test_play_rows_draws_the_prompts_a_reset_draws(tiny):
    whole = _rows_batch(tiny, range(0, 4), 4)
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=4, autoreset_mode="disabled")
    obs, _ = envs.reset(seed=11)
    for row in range(4):
        n = int(obs["attention_mask"][row].sum())
        assert whole.prompt_ids[row][whole.prompt_mask[row].bool()].tolist() == obs["input_ids"][row, :n].tolist()


def test_play_rows_refuses_to_split_a_group(tiny):
    with pytest.raises(ConfigError, match="split a group"):
        _rows_batch(tiny, range(1, 3), 4, group_size=2)


def test_one_seed_per_row_makes_rows_independent_of_the_batch(tiny):
    engine = RolloutEngine(*tiny)
    prompts = ["The movie was", "I think", "It is"]
    together = engine.generate(prompts, max_new_tokens=6, seed=[5, 6, 7], sampling=SamplingParams(temperature=1.5))
    alone = engine.generate(prompts[1:2], max_new_tokens=6, seed=[6], sampling=SamplingParams(temperature=1.5))
    n = int(alone.lengths[0])
    assert together.completion_ids[1, :n].tolist() == alone.completion_ids[0, :n].tolist()
    with pytest.raises(ConfigError, match="one per prompt"):
        engine.generate(prompts, max_new_tokens=2, seed=[1, 2])
