from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import criticgym
from criticgym.envs import TextGenVectorEnv
from criticgym.errors import ConfigError, UnknownEnvError
from tests.conftest import assert_same, rollout_actions

IDS = sorted(criticgym.ENV_IDS)


def length_score(prompts, completions):  # a fast, deterministic scorer for the checks
    return [len(c) / 100 for c in completions]


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id):
    env = gym.make(env_id, scorer=length_score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_stable_baselines3_env_checker(env_id):
    env = gym.make(env_id, scorer=length_score)
    sb3_check_env(env, warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_relc_set_ups_pass_both_checkers(env_id):
    critic = "lexicon" if env_id.endswith("Summarize-v0") else None  # the default LLM critic needs the 135M model
    kwargs = {"reward": "relc", "scorer": length_score, **({"critic": critic} if critic else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(gym.make(env_id, **kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id, **kwargs), warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_rollouts_are_deterministic(env_id):
    def run():
        env = gym.make(env_id, scorer=length_score)
        env.action_space.seed(5)
        actions = [env.action_space.sample() for _ in range(64)]
        return rollout_actions(env, actions, seed=11)

    first, second = run(), run()
    assert_same(first, second)
    assert first[-1][2] or first[-1][3]  # the episode ended
    assert first[-1][1] == pytest.approx(len(first[-1][4]["completion"]) / 100)


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_gives_the_native_vector_env(env_id):
    envs = gym.make_vec(env_id, num_envs=3, scorer=length_score)
    assert isinstance(envs.unwrapped, TextGenVectorEnv)
    obs, _ = envs.reset(seed=0)
    assert obs["input_ids"].shape == (3, envs.unwrapped.episodes.width)


def test_unknown_env_id_names_the_valid_ones():
    with pytest.raises(UnknownEnvError, match="criticgym/SentimentControl-v0"):
        criticgym.make("criticgym/Sentiment-v9")
    with pytest.raises(gym.error.Error):  # plain gym.make fails too, with Gymnasium's own suggestion
        gym.make("criticgym/Sentiment-v9")


def test_unknown_reward_setup_names_the_valid_ones():
    with pytest.raises(ConfigError, match="sparse"):
        gym.make("criticgym/SentimentControl-v0", reward="dense-magic")


def test_reward_none_pays_nothing():
    env = gym.make("criticgym/SentimentControl-v0", reward=None)
    env.reset(seed=0, options={"prompt": "What a wonderful"})
    _, reward, terminated, _, info = env.step(env.unwrapped.eos_token_id)
    assert terminated and reward == 0 and "extrinsic_reward" not in info


def test_import_is_light():
    code = "import sys, criticgym; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_default_scorers_are_the_tasks():
    from criticgym.critics import SentimentClassifier, ToxicityScorer
    from criticgym.critics.scorers import RougeScorer

    expected = {
        "criticgym/SentimentControl-v0": SentimentClassifier,
        "criticgym/Detoxify-v0": ToxicityScorer,
        "criticgym/Summarize-v0": RougeScorer,
    }
    for env_id, kind in expected.items():
        env = gym.make(env_id)
        wrapper = env
        while not hasattr(wrapper, "scorer"):
            wrapper = wrapper.env
        assert isinstance(wrapper.scorer, kind)
