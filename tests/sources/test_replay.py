"""Replaying tokens sampled elsewhere through the env (the vLLM engine's path), checked without vLLM.

A stand-in sampler draws the tokens with our own engine and each row's seed, so the replayed batch can be compared
with the batch :func:`~criticgym.sources.play` plays on the same seeds: the same tokens, rewards, hindsight vectors,
log-probs and values. The real vLLM runs in ``make test-vllm`` (tests/vllm).
"""

from __future__ import annotations

import copy

import pytest
import torch

import criticgym
from criticgym.errors import ConfigError
from criticgym.rewards import TOKEN_REWARDS, Relc
from criticgym.rollout import RolloutEngine, SamplingParams, left_pad
from criticgym.rollout.vllm import Sampled
from criticgym.sources import VLLMRollouts, play, row_seed


class EngineSampler:
    """What :class:`~criticgym.rollout.vllm.VLLMSampler` does, with the built-in engine: for tests without vLLM."""

    def __init__(self, model, tokenizer, cut: int = 0) -> None:
        self.engine, self.cut, self.synced = RolloutEngine(model, tokenizer), cut, []

    def sync(self, model) -> float:
        self.synced.append(model)
        return 0.0

    def sample(self, prompts, max_new_tokens, *, seeds, stop_ids, sampling=SamplingParams()) -> Sampled:
        ids, mask = left_pad([list(p) for p in prompts], self.engine.pad_id, self.engine.device)
        batch = self.engine.run(ids, mask, max_new_tokens, seed=list(seeds), eos_ids=stop_ids, sampling=sampling)
        lengths = [int(n) - self.cut for n in batch.lengths]
        tokens = [batch.completion_ids[r, :n].tolist() for r, n in enumerate(lengths)]
        return Sampled(tokens, [batch.logprobs[r, :n].tolist() for r, n in enumerate(lengths)])


def envs_of(n: int = 6):
    reward = Relc(critic="lexicon", scorer="vader")  # dense span rewards: hindsight vectors too
    return criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=n, reward=reward, autoreset_mode="disabled", max_new_tokens=10
    )


def ending_model(tiny):
    """tiny, with its EOS logit raised to just below the top one, so that rows end at different lengths."""
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    eos = tokenizer.eos_token_id

    def raise_eos(module, args, out):
        out = out.clone()
        out[..., eos] = out.max(dim=-1).values - 1.5
        return out

    model.lm_head.register_forward_hook(raise_eos)
    return model, tokenizer


def test_a_replayed_batch_is_the_batch_play_gives_for_the_same_tokens(tiny):
    model, tokenizer = ending_model(tiny)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    engine = RolloutEngine(model, tokenizer, ref_model=model, value_head=head)
    sampling = SamplingParams(temperature=1.3, top_p=0.95)
    source = VLLMRollouts(envs_of(), EngineSampler(model, tokenizer))
    replayed = source.play(engine, seed=5, sampling=sampling)
    played = play(engine, envs_of(), seed=5, row_seeds=[row_seed(5, r) for r in range(6)], sampling=sampling)

    assert source.sampler.synced == [model]  # the learner's weights go to the sampler before every batch
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "rewards"):
        assert torch.equal(getattr(replayed, field), getattr(played, field)), field
    for field in ("logprobs", "values", "ref_logprobs"):
        torch.testing.assert_close(getattr(replayed, field), getattr(played, field), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(replayed.sampler_logprobs, played.logprobs, atol=1e-4, rtol=1e-4)
    assert played.sampler_logprobs is None  # the built-in engine is the learner: nothing to compare
    assert len(set(replayed.lengths.tolist())) > 1  # rows of several lengths
    for mine, theirs in zip(replayed.infos, played.infos, strict=True):
        assert mine["completion"] == theirs["completion"]
        assert mine[TOKEN_REWARDS].tolist() == theirs[TOKEN_REWARDS].tolist()


def test_a_sampler_that_stops_before_the_env_ends_the_episode_is_an_error(tiny):
    source = VLLMRollouts(envs_of(2), EngineSampler(*tiny, cut=1))
    with pytest.raises(ConfigError, match="did not end its episode"):
        source.play(RolloutEngine(*tiny), seed=0)


def test_vllm_rollouts_need_a_vector_env_that_does_not_autoreset(tiny):
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=2)
    with pytest.raises(ConfigError, match="autoreset_mode='disabled'"):
        VLLMRollouts(envs, EngineSampler(*tiny))
