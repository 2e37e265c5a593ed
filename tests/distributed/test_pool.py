"""A critic pool on Ray actors (RELC's critic shared by every env), on a local Ray with 2 CPUs and the tiny model."""

from __future__ import annotations

import pytest
import torch

import criticgym
from criticgym.critics import Critique, FunctionCritic, Span
from criticgym.rollout import RolloutEngine, SamplingParams
from criticgym.sources import play

ray = pytest.importorskip("ray")

from tests.ray_actors import kill  # noqa: E402


def _marks_the_first_three_characters(prompts, completions):
    return [Critique((Span(0, min(3, len(c)), 1.0 if len(c) % 2 else -1.0, "first"),)) for c in completions]


def test_a_critic_pool_gives_the_inline_critic_s_rewards_and_survives_a_dead_actor(cluster, tiny):
    from criticgym.distributed.pool import CriticPool

    def make():  # defined in the test, so that Ray ships it by value
        return FunctionCritic(lambda prompts, completions: _marks(prompts, completions))

    _marks = _marks_the_first_three_characters
    pool = CriticPool(make, actors=2)
    engine = RolloutEngine(*tiny)
    batches = []
    for critic in (FunctionCritic(_marks_the_first_three_characters), pool):
        envs = criticgym.make_vec(
            "criticgym/Words-v0", num_envs=5, reward="relc", critic=critic, autoreset_mode="disabled", model="tiny"
        )
        batches.append(play(engine, envs, seed=4, sampling=SamplingParams(temperature=1.5)))
    inline, pooled = batches
    assert torch.equal(inline.rewards, pooled.rewards)
    assert inline.rewards.abs().sum() > 0
    assert [i["token_rewards"].tolist() for i in inline.infos] == [i["token_rewards"].tolist() for i in pooled.infos]

    kill(pool.actors.handles[1])
    again = pool.critique(["p"] * 3, ["abcd", "abc", "x"])
    assert [c.spans[0].value for c in again] == [-1.0, 1.0, 1.0]
    assert pool.actors.replaced == 1
    pool.close()
