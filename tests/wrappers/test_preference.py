from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from criticgym.algos.base import token_rewards
from criticgym.envs import TextGenVectorEnv
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutEngine
from criticgym.sources import play
from criticgym.wrappers import DirectJudgeReward, PairwisePreferenceReward

ENV = "criticgym/SentimentControl-v0"


class LongerWins:
    """A pairwise judge that prefers the longer completion (0.8), records its calls, ties at 0.5."""

    def __init__(self):
        self.calls = []

    def prefer(self, prompts, a, b):
        self.calls.append((list(prompts), list(a), list(b)))
        return [0.5 if len(x) == len(y) else (0.8 if len(x) > len(y) else 0.2) for x, y in zip(a, b, strict=True)]


def pairwise_envs(n=4, judge=None, **kwargs):
    kwargs.setdefault("autoreset_mode", "disabled")
    return gym.make_vec(ENV, num_envs=n, reward="rlaif-pairwise", judge=judge or LongerWins(), **kwargs)


def test_group_size_gives_consecutive_rows_one_prompt():
    envs = TextGenVectorEnv(6, "sentiment", autoreset_mode="disabled")
    envs.reset(seed=3, options={"group_size": 3})
    index = envs.episodes.prompt_index
    assert index[0] == index[1] == index[2] and index[3] == index[4] == index[5]
    with pytest.raises(ConfigError, match="group_size"):
        envs.reset(options={"group_size": 4})


def test_siblings_share_prompts_and_the_first_to_end_is_paid_in_hindsight(tokenizer):
    judge = LongerWins()
    envs = pairwise_envs(4, judge, max_new_tokens=3)
    envs.reset(seed=0)
    index = envs.unwrapped.episodes.prompt_index
    assert index[0] == index[1] and index[2] == index[3]
    eos, word = tokenizer.eos_token_id, tokenizer.encode(" good")[0]

    # Row 0 stops at once; rows 1-3 keep writing. Nothing can be judged yet: every pair has a sibling running.
    _, rewards, terminated, _, info = envs.step(np.array([eos, word, word, word]))
    assert terminated[0] and "preference" not in info and not judge.calls and (rewards == 0).all()

    # Row 1 ends: pair (0, 1) is judged. Row 1 (longer) wins 0.8 -> +0.6; row 0, which ended a step earlier,
    # gets -0.6 as the scalar reward of this idle step (its rewards still sum to its return) and in hindsight.
    _, rewards, terminated, _, info = envs.step(np.array([word, eos, word, word]))
    assert len(judge.calls) == 1 and len(judge.calls[0][0]) == 1
    assert rewards[1] == pytest.approx(0.6) and rewards[0] == pytest.approx(-0.6) and not terminated[0]
    assert info["_token_rewards"].tolist() == [True, True, False, False]
    assert info["preference"][:2] == pytest.approx([0.2, 0.8])
    np.testing.assert_allclose(info["token_rewards"][0], [-0.6])  # one token: EOS
    np.testing.assert_allclose(info["token_rewards"][1], [0.0, 0.6])

    # Rows 2 and 3 run out of budget on the same step: a tie, 0 each, and the judged pair is not judged again.
    _, rewards, _, truncated, info = envs.step(np.array([word, word, word, word]))
    assert truncated[2:].all() and len(judge.calls) == 2 and len(judge.calls[1][0]) == 1
    assert info["preference"][2:] == pytest.approx([0.5, 0.5]) and rewards[2:] == pytest.approx([0.0, 0.0])


def test_engine_rollout_collects_hindsight_preferences_for_every_row(tiny):
    model, tokenizer = tiny
    envs = pairwise_envs(6)
    batch = play(RolloutEngine(model, tokenizer), envs, seed=1)
    assert all("token_rewards" in info and "preference" in info for info in batch.infos)
    returns = token_rewards(batch).sum(1).numpy()
    np.testing.assert_allclose(returns[0::2] + returns[1::2], 0.0, atol=1e-6)  # centered within each pair
    # the scalar step rewards carry the same returns, late ones credited to the row's last token
    np.testing.assert_allclose(batch.rewards.sum(1).numpy(), returns, atol=1e-6)
    np.testing.assert_allclose((batch.rewards * batch.completion_mask).sum(1).numpy(), returns, atol=1e-6)
    lengths = [len(info["completion"]) for info in batch.infos]
    for a in range(0, 6, 2):
        assert np.sign(returns[a]) == np.sign(lengths[a] - lengths[a + 1])


def test_pairwise_errors_name_the_fix():
    with pytest.raises(ConfigError, match="even"):
        pairwise_envs(3)
    with pytest.raises(ConfigError, match="autoreset_mode='disabled'"):
        pairwise_envs(2, autoreset_mode="next_step")
    with pytest.raises(ConfigError, match="make_vec"):
        gym.make(ENV, reward="rlaif-pairwise", judge=LongerWins())
    with pytest.raises(ConfigError, match="prefer"):
        pairwise_envs(2, judge=object())
    envs = pairwise_envs(4)
    with pytest.raises(ConfigError, match="both siblings"):
        envs.reset(options={"reset_mask": np.array([True, False, False, False])})
    with pytest.raises(ConfigError, match="same prompt"):
        envs.reset(options={"prompt": ["a", "b", "c", "c"]})
    envs.reset(options={"prompt": ["a", "a", "c", "c"]})  # siblings match: fine
    with pytest.raises(ConfigError, match="Pairwise RLAIF needs a PreferenceJudge"):
        PairwisePreferenceReward(envs.unwrapped, object())


def test_a_faulty_judge_raises_instead_of_paying():
    from criticgym.errors import CriticGymError

    class Broken:
        def prefer(self, prompts, a, b):
            return [float("nan")] * len(a)

    envs = pairwise_envs(2, Broken(), max_new_tokens=1)
    envs.reset(seed=0)
    with pytest.raises(CriticGymError, match="non-finite"):
        envs.step(np.array([300, 300]))


def test_direct_mode_rates_each_completion():
    class Rater:
        def rate(self, prompts, completions):
            return [0.25] * len(prompts)

    env = DirectJudgeReward(gym.make(ENV, reward=None, max_new_tokens=1).unwrapped, Rater())
    env.reset(seed=0)
    _, reward, _, truncated, info = env.step(300)
    assert truncated and reward == 0.25 == info["extrinsic_reward"]
    with pytest.raises(ConfigError, match="rate"):
        DirectJudgeReward(env.unwrapped, LongerWins())


def test_rewinding_a_pairwise_env_gives_the_rewards_of_a_fresh_episode(tokenizer):
    """Snapshots carry the wrapper's per-row state (finished sibling, paid steps, judged flag)."""
    eos, word = tokenizer.eos_token_id, tokenizer.encode(" good")[0]

    def play_out(envs, actions):
        out = []
        for action in actions:
            _, rewards, _, _, info = envs.step(np.array(action))
            out.append((rewards.tolist(), [None if v is None else list(v) for v in info.get("token_rewards", [])]))
        return out

    branch = [[word, word], [word, eos]]  # after row 0 has ended: row 1 writes one more word, then ends
    fresh = pairwise_envs(2, max_new_tokens=4)
    fresh.reset(seed=0)
    expected = play_out(fresh, [[eos, word], *branch])

    envs = pairwise_envs(2, max_new_tokens=4)
    envs.reset(seed=0)
    play_out(envs, [[eos, word]])
    snapshot = envs.get_state()
    abandoned = play_out(envs, [[word, eos]])  # row 1 ends at once: the pair is judged on this branch
    assert abandoned[0][0][1] != 0
    envs.set_state(snapshot)
    assert play_out(envs, branch) == expected[1:]
