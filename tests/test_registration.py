"""registration.py: every documented reward set-up becomes objects through gym.make, label:self included."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import criticgym  # noqa: F401  (registers the ids)
from criticgym.cli import main
from criticgym.errors import ConfigError
from criticgym.rewards import Relc, RlaifDirect, RlaifPairwise, Sparse

# Every reward set-up the docs name (rewards.py, registration.py), each with the models of a CPU test.
DOCUMENTED = {
    "sparse": Sparse(),
    "sparse-vader": Sparse(scorer="vader"),
    "relc": Relc(),
    "relc-lexicon": Relc(critic="lexicon"),
    "relc-toxicity": Relc(critic="toxicity"),
    "relc-llm": Relc(critic="llm", critic_model="tiny"),
    "relc-label": Relc(critic="label", critic_model="tiny"),
    "random": Relc(critic="random"),
    "random-lexicon": Relc(critic="random-lexicon", critic_seed=3),
    "rlaif-direct": RlaifDirect(judge_model="tiny"),
    "rlaif-direct-label": RlaifDirect(judge_model="label:tiny"),
    "rlaif-direct-content-free": RlaifDirect(judge_model="label-content-free:tiny"),
    "rlaif-direct-self": RlaifDirect(judge_model="label:self"),
    "rlaif-pairwise": RlaifPairwise(judge_model="tiny"),
    "rlaif-pairwise-label": RlaifPairwise(judge_model="label:tiny"),
    "rlaif-pairwise-lexicon": RlaifPairwise(judge_model="lexicon"),
    "rlaif-pairwise-self": RlaifPairwise(judge_model="label:self"),
}


def episode_returns(reward, **options):
    """One batch of two sub-envs on the same prompt, six tokens each: each row's return."""
    envs = gym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=2,
        reward=reward,
        model="tiny",
        max_new_tokens=6,
        autoreset_mode="disabled",
        **options,
    )
    envs.reset(seed=0)
    tokens = envs.unwrapped.tokenizer.encode(" a dull and bad, awful film", add_special_tokens=False)[:6]
    returns = np.zeros(2)
    for token in tokens:
        _, rewards, terminated, truncated, _ = envs.step(np.array([token, token + 1]))
        returns += rewards
    assert (terminated | truncated).all()
    return returns


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_documented_reward_set_up_builds_through_gym_make(name):
    returns = episode_returns(DOCUMENTED[name])
    assert np.isfinite(returns).all()
    if isinstance(DOCUMENTED[name], RlaifPairwise):  # centred soft preferences of two siblings: 2p - 1, 1 - 2p
        assert returns.sum() == pytest.approx(0.0, abs=1e-6)
        return  # pairs need the vector env
    single = gym.make("criticgym/SentimentControl-v0", reward=DOCUMENTED[name], model="tiny", max_new_tokens=2)
    single.reset(seed=0)
    assert np.isfinite(single.step(300)[1])


@pytest.mark.parametrize("spec", [RlaifDirect, RlaifPairwise])
def test_label_self_is_the_policy_judging_itself(tiny, spec):
    # the env's model is tiny, so label:self asks tiny's label-word question: label:tiny's rewards, to the digit
    by_self = episode_returns(spec(judge_model="label:self"))
    np.testing.assert_allclose(by_self, episode_returns(spec(judge_model="label:tiny")), rtol=1e-6)
    # the policy itself, given as a (model, tokenizer) pair, or as a function returning one
    np.testing.assert_allclose(episode_returns(spec(judge_model="label:self"), policy=tiny), by_self, rtol=1e-5)
    np.testing.assert_allclose(episode_returns(spec(judge_model="label:self"), policy=lambda: tiny), by_self, rtol=1e-5)


def test_label_self_without_a_named_policy_says_what_to_give(tokenizer):
    with pytest.raises(ConfigError, match="does not know the policy: give the env policy="):
        gym.make("criticgym/SentimentControl-v0", reward=RlaifDirect(judge_model="label:self"), model=tokenizer)


def test_eval_checkpoint_of_a_run_trained_on_label_self(tmp_path):
    trained_run_evaluates_through_the_cli(tmp_path, RlaifDirect(judge_model="label:self"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_eval_checkpoint_of_a_run_trained_on_every_documented_reward_set_up(tmp_path, name):
    trained_run_evaluates_through_the_cli(tmp_path, DOCUMENTED[name])


def trained_run_evaluates_through_the_cli(tmp_path, reward):
    from criticgym.algos.reinforce import ReinforceConfig
    from criticgym.train import TrainConfig, train

    cfg = TrainConfig(
        env="criticgym/SentimentControl-v0",
        reward=reward,
        agent="rloo",
        model="tiny",
        iterations=1,
        num_envs=4,
        max_new_tokens=4,
        reinforce=ReinforceConfig(lr=1e-2, k=2),
        eval_prompts=4,
        out=str(tmp_path / "run"),
        progress=False,
    )
    result = train(cfg, log=lambda *a: None)
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--prompts", "4", "--out", str(out)]) == 0
    columns = json.loads(out.read_text())
    # the same held-out prompts, the same frozen judge: the base column is the run's first evaluation, the trained
    # policy's its last
    assert columns["base"]["eval/reward"] == pytest.approx(result["evals"][0]["eval/reward"], rel=1e-5)
    assert columns["iteration 1"]["eval/reward"] == pytest.approx(result["evals"][-1]["eval/reward"], rel=1e-5)


def test_label_self_names_a_pairwise_judge_for_labelling_too():
    from criticgym.registration import make_judge

    texts = (["The film"] * 2, [" was great", " was bad"], [" was bad", " was great"])
    by_self = make_judge("label:self", "sentiment", pairwise=True, policy="tiny").prefer(*texts)
    assert by_self == pytest.approx(make_judge("label:tiny", "sentiment", pairwise=True).prefer(*texts))


class Constant:
    """A direct judge that rates every completion 0.25."""

    def rate(self, prompts, completions):
        return [0.25] * len(completions)


def test_a_registered_judge_is_a_name_the_reward_set_ups_take(monkeypatch):
    from criticgym import registration

    monkeypatch.setattr(registration, "JUDGES", dict(registration.JUDGES))
    seen = []

    def factory(ctx):
        seen.append((ctx.task.name, ctx.pairwise, ctx.policy))
        return Constant()

    registration.register_judge("quarter", factory)
    returns = episode_returns(RlaifDirect(judge_model="quarter"))
    np.testing.assert_allclose(returns, [0.25, 0.25])
    assert seen == [("sentiment", False, "tiny")]  # the task, direct, and the env's model as the policy


def length_score(prompts, completions):  # a fast scorer: the episode limit's tests need no model
    return [len(c) / 100 + 0.01 for c in completions]


@pytest.mark.parametrize("make", ["make", "make_vec"])
def test_an_episode_limit_shorter_than_the_token_budget_is_refused_naming_the_budget(make):
    from criticgym.envs import get_task

    budget = get_task("words").max_new_tokens
    for build in (getattr(criticgym, make), getattr(gym, make)) if make == "make_vec" else (criticgym.make,):
        with pytest.raises(ConfigError, match=rf"max_episode_steps=2 is shorter .*{budget} tokens.*max_new_tokens=2"):
            build("criticgym/Words-v0", model="tiny", max_episode_steps=2)
    # a limit the episodes never reach is no surprise: it is taken (and has no effect)
    env = getattr(criticgym, make)("criticgym/Words-v0", model="tiny", max_episode_steps=budget, scorer=length_score)
    env.close()


def test_a_feedback_episodes_limit_counts_both_turns():
    options = dict(model="tiny", feedback="program", max_new_tokens=4)
    with pytest.raises(ConfigError, match=r"two turns of 4 tokens.*max_new_tokens=3"):
        criticgym.make("criticgym/Arithmetic-v0", max_episode_steps=7, **options)
    criticgym.make("criticgym/Arithmetic-v0", max_episode_steps=8, **options).close()


@pytest.mark.parametrize("reward", [Sparse(scorer=length_score), Relc(critic="lexicon", scorer=length_score)])
def test_an_episode_cut_by_a_time_limit_outside_the_env_says_it_is_unscored(reward):
    # gym.make applies TimeLimit outside the env, where criticgym cannot see it: the cut episode's info says so
    for env in (
        gym.make("criticgym/Words-v0", model="tiny", reward=reward, max_episode_steps=2),
        gym.wrappers.TimeLimit(criticgym.make("criticgym/Words-v0", model="tiny", reward=reward), 2),
    ):
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step(5)
        assert info["unscored"] and not (terminated or truncated)
        _, reward_, terminated, truncated, info = env.step(5)
        assert truncated and not terminated and reward_ == 0
        assert info["unscored"] and "extrinsic_reward" not in info  # not a score of 0: no score
    # the fix the refusal names: the budget ends the episode, scored
    env = gym.make("criticgym/Words-v0", model="tiny", reward=reward, max_new_tokens=2)
    env.reset(seed=0)
    env.step(5)
    _, reward_, _, truncated, info = env.step(5)
    assert truncated and "unscored" not in info and reward_ >= info["extrinsic_reward"] > 0
