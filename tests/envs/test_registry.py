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
from criticgym.rewards import Relc, RlaifDirect, Sparse
from tests.conftest import assert_same, rollout_actions

IDS = sorted(criticgym.ENV_IDS)


def length_score(prompts, completions):  # a fast, deterministic scorer for the checks
    return [len(c) / 100 for c in completions]


class LengthJudge:  # a fast, deterministic direct judge for the checks
    def rate(self, prompts, completions):
        return [min(len(c) / 100, 1.0) for c in completions]


# every reward set-up a single env takes (pairwise compares siblings, so it exists on the vector env only)
SET_UPS = {
    "sparse": {"reward": Sparse(), "scorer": length_score},
    "relc": {"reward": Relc(critic="lexicon"), "scorer": length_score},
    "relc-random": {"reward": Relc(critic="random-lexicon", critic_seed=1), "scorer": length_score},
    "rlaif-direct": {"reward": RlaifDirect(), "judge": LengthJudge()},
    "none": {"reward": None},
}
WRAPPED = "is different from the unwrapped version"  # the checker's note that it was given a wrapped env


@pytest.mark.parametrize("set_up", sorted(SET_UPS))
@pytest.mark.parametrize("env_id", IDS)
def test_every_id_and_reward_set_up_passes_both_checkers_as_gym_make_returns_it(env_id, set_up):
    env = gym.make(env_id, **SET_UPS[set_up])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any other checker warning fails the test
        warnings.filterwarnings("ignore", message=f".*{WRAPPED}")
        gym_check_env(env, skip_render_check=True)
    sb3_check_env(gym.make(env_id, **SET_UPS[set_up]), warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_the_tasks_default_relc_critics_pass_both_checkers(env_id):
    if env_id.endswith("Summarize-v0"):
        pytest.skip("Summarize's default critic is the LLM critic, which needs the 135M model")
    env = gym.make(env_id, reward="relc", scorer=length_score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=f".*{WRAPPED}")
        gym_check_env(env, skip_render_check=True)


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
    obs, info = envs.reset(seed=0)
    assert obs["input_ids"].shape == (3, envs.unwrapped.episodes.width)
    # each row is its prompt followed by room for the completion, nothing generated yet; the first row is the single
    # env's prompt of the same seed
    lengths = obs["attention_mask"].sum(axis=1)
    assert list(info["n_tokens"]) == [0, 0, 0] and all(lengths > 0)
    for row, n in enumerate(lengths):
        assert obs["attention_mask"][row, :n].all() and not obs["attention_mask"][row, n:].any()
    single, _ = gym.make(env_id, scorer=length_score).reset(seed=0)
    first = single["input_ids"][single["attention_mask"].astype(bool)]
    assert list(obs["input_ids"][0, : lengths[0]]) == list(first)


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
