from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from criticgym.envs import TextGenEnv, TextGenVectorEnv
from criticgym.errors import CriticGymError
from criticgym.wrappers import SparseExtrinsicReward, SparseExtrinsicRewardVector


class CountingScorer:
    def __init__(self):
        self.calls = []

    def score(self, prompts, completions, references=None):
        self.calls.append(list(completions))
        return [float(len(c)) for c in completions]


def test_pays_the_score_at_the_last_step_only(tokenizer):
    scorer = CountingScorer()
    env = SparseExtrinsicReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=3), scorer, scale=0.5)
    env.reset(seed=0)
    rewards = [env.step(300)[1] for _ in range(3)]
    assert rewards[:2] == [0.0, 0.0]
    completion = tokenizer.decode([300] * 3)
    assert rewards[2] == pytest.approx(0.5 * len(completion))
    assert scorer.calls == [[completion]]


def test_vector_scores_every_ending_episode_in_one_call(tokenizer):
    scorer = CountingScorer()
    base = TextGenVectorEnv(4, "sentiment", model=tokenizer, max_new_tokens=3, autoreset_mode="disabled")
    envs = SparseExtrinsicRewardVector(base, scorer)
    envs.reset(seed=0)
    eos = tokenizer.eos_token_id
    _, r1, *_, info1 = envs.step(np.array([eos, 300, 300, eos]))
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 2  # envs 0 and 3, together
    assert r1.tolist() == [0.0, 0.0, 0.0, 0.0]  # empty completions score 0 here
    assert info1["_extrinsic_reward"].tolist() == [True, False, False, True]
    envs.step(np.array([eos, 300, 300, eos]))
    _, r3, _, truncated, info3 = envs.step(np.array([eos, 300, 300, eos]))
    assert truncated.tolist() == [False, True, True, False]
    assert len(scorer.calls) == 2 and len(scorer.calls[1]) == 2
    expected = len(tokenizer.decode([300] * 3))
    assert r3.tolist() == [0.0, expected, expected, 0.0]


def test_the_reference_reaches_the_scorer(tokenizer):
    seen = []

    def rouge_like(prompts, completions, references):
        seen.extend(references)
        return [0.0] * len(completions)

    env = SparseExtrinsicReward(TextGenEnv("summarize", model=tokenizer, max_new_tokens=1), rouge_like)
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(300)
    assert seen == [info["reference"]] and seen[0]


def test_a_faulty_scorer_raises_instead_of_paying(tokenizer):
    env = SparseExtrinsicReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1), lambda p, c: [np.nan])
    env.reset(seed=0)
    with pytest.raises(CriticGymError, match="non-finite"):
        env.step(300)


def test_gym_make_default_reward_is_sparse():
    env = gym.make("criticgym/SentimentControl-v0", scorer="vader", max_new_tokens=1)
    env.reset(seed=0, options={"prompt": "A wonderful, moving"})
    _, reward, _, truncated, info = env.step(300)
    assert truncated and reward == pytest.approx(info["extrinsic_reward"]) and reward != 0


@pytest.mark.parametrize("reward", ["sparse", "rlaif-direct"])
def test_an_overlapped_scorer_or_judge_pays_what_the_synchronous_one_pays(tokenizer, reward):
    import threading

    import criticgym

    threads = []

    class Length:  # a scorer and a direct judge: longer completions score higher
        def score(self, prompts, completions, references=None):
            threads.append(threading.current_thread())
            return [len(c) / 40 for c in completions]

        rate = score

    word, eos = tokenizer(" word", add_special_tokens=False)["input_ids"][0], tokenizer.eos_token_id
    ends = [2, 5, 8, 3, 8, 4]  # the step on which each row ends (8: the budget)
    columns = [[eos if t + 1 == end else word for end in ends] for t in range(8)]
    runs = []
    for overlap in (False, True):
        envs = criticgym.make_vec(
            "criticgym/Words-v0",
            num_envs=6,
            reward=reward,
            autoreset_mode="disabled",
            model=tokenizer,
            overlap_feedback=overlap,
            **({"scorer": Length()} if reward == "sparse" else {"judge": Length()}),
        )
        envs.reset(seed=0)
        steps = [envs.step(np.array(column)) for column in columns]
        envs.close()
        scores = [
            next(s[4]["extrinsic_reward"][row] for s in steps if s[4].get("_extrinsic_reward", [0] * 6)[row])
            for row in range(6)
        ]
        runs.append((sum(np.asarray(s[1], dtype=np.float64) for s in steps), scores))
    (returns, scores), (late_returns, late_scores) = runs
    np.testing.assert_allclose(late_returns, returns)
    assert late_scores == scores and returns.min() > 0
    assert any(t is not threading.main_thread() for t in threads)
    with pytest.raises(criticgym.errors.ConfigError, match="pairwise judge already waits"):
        criticgym.make_vec(
            "criticgym/Words-v0",
            num_envs=2,
            reward="rlaif-pairwise",
            autoreset_mode="disabled",
            model=tokenizer,
            judge=Length(),
            overlap_feedback=True,
        )
