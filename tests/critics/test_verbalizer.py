from __future__ import annotations

import numpy as np
import pytest

from criticgym.critics.judge import ScorerJudge, make_judge
from criticgym.critics.verbalizer import LabelWordScorer
from criticgym.envs import LabelWords, get_task
from criticgym.errors import ConfigError
from criticgym.rewards import RlaifDirect
from criticgym.search.values import make_value

WORDS = LabelWords("Review: $text\nSentiment:", good=(" positive", " great"), bad=(" negative",), content_free="N/A")


class Counting:
    """A fake backend: each 'good' in the prompt adds 1 to the log-odds of the good words."""

    def __init__(self):
        self.prompts = []

    def next_token_logprobs(self, prompts, words):
        self.prompts += list(prompts)
        rows = []
        for p in prompts:
            lift = p.count("good") + (0.5 if "N/A" in p else 0.0)
            rows.append([-2.0 + lift, -3.0 + lift, -1.0][: len(words)])
        return np.asarray(rows)


def test_the_gap_pools_label_words_and_fills_the_template():
    backend = Counting()
    scorer = LabelWordScorer(backend, WORDS)
    gaps = scorer.score(["a "], ["good good film"])
    good = np.logaddexp(-2.0 + 2, -3.0 + 2)
    assert gaps == pytest.approx([good - (-1.0)])
    assert backend.prompts == ["Review: a good good film\nSentiment:"]


def test_calibrations_subtract_a_content_free_or_a_centred_gap():
    raw = LabelWordScorer(Counting(), WORDS).score([""], ["good"])[0]
    free = LabelWordScorer(Counting(), WORDS, calibration="content-free")
    assert free.score([""], ["good"])[0] == pytest.approx(raw - (raw - 1 + 0.5))  # N/A: no 'good', lift 0.5
    centre = LabelWordScorer(Counting(), WORDS, calibration="centre", unlabeled=["x", "good", "good good"])
    assert centre.score([""], ["good"])[0] == pytest.approx(0.0)  # the median unlabeled text has one 'good'
    with pytest.raises(ConfigError, match="unlabeled"):
        LabelWordScorer(Counting(), WORDS, calibration="centre")
    with pytest.raises(ConfigError, match="calibration"):
        LabelWordScorer(Counting(), WORDS, calibration="platt")


def test_pairwise_preferences_from_gaps_have_no_position_bias():
    judge = ScorerJudge(LabelWordScorer(Counting(), WORDS), temperature=1.0)
    p_ab, p_ba = judge.prefer_both_orders(["", ""], ["good good", "bad"], ["bad", "good"])
    np.testing.assert_allclose(p_ab + p_ba, [1.0, 1.0])
    assert p_ab[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert LabelWordScorer(Counting(), WORDS).rate([""], ["good good"]) == pytest.approx(  # a search's value
        [np.tanh(LabelWordScorer(Counting(), WORDS).score([""], ["good good"])[0] / 2)]
    )


def test_label_words_must_be_single_tokens_and_the_template_needs_text(tiny):
    with pytest.raises(ConfigError, match="single-token"):
        LabelWordScorer(tiny, LabelWords("T: $text\nS:", (" positively wonderful",), (" negative",)))
    with pytest.raises(ConfigError, match=r"\$text"):
        LabelWordScorer(Counting(), LabelWords("no slot", (" a",), (" b",)))


def test_local_label_word_judge_and_self_label_evaluator(tiny):
    model, tokenizer = tiny
    words = get_task("sentiment").label_words
    judge = make_judge("label:tiny", label_words=words)
    assert isinstance(judge, ScorerJudge) and judge.name == "label:tiny"
    p = judge.prefer(["The film"], [" is great"], [" is awful"])
    assert 0.0 < p[0] < 1.0
    evaluator = make_value("self-label", model, tokenizer, label_words=words)
    values = evaluator.rate(["The film"], [" is great"])
    assert -1.0 <= values[0] <= 1.0
    with pytest.raises(ConfigError, match="label words"):
        make_value("self-label", model, tokenizer)


def test_rlaif_envs_take_a_label_word_judge(tokenizer):
    import gymnasium as gym

    env = gym.make("criticgym/SentimentControl-v0", reward="rlaif-direct", judge_model="label:tiny", max_new_tokens=2)
    env.reset(seed=0)
    _, _, _, _, _ = env.step(tokenizer.encode(" good")[0])
    _, reward, _, truncated, info = env.step(tokenizer.encode(" film")[0])
    assert truncated and -1.0 <= reward <= 1.0 and reward != 0.0
    envs = gym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=2,
        reward="rlaif-pairwise",
        judge_model="label-content-free:tiny",
        autoreset_mode="disabled",
    )
    assert envs.unwrapped is not None and envs.judge.name == "label-content-free:tiny"
    with pytest.raises(ConfigError, match="label_words"):
        gym.make("criticgym/Words-v0", reward="rlaif-direct", judge_model="label:tiny")


def test_self_rewarding_training_judges_with_a_frozen_copy_of_the_policy(tmp_path):
    from criticgym.algos.reinforce import ReinforceConfig
    from criticgym.train import TrainConfig, train

    def run(judge_model):
        cfg = TrainConfig(
            env="criticgym/SentimentControl-v0",
            reward=RlaifDirect(judge_model=judge_model),
            agent="rloo",
            model="tiny",
            iterations=3,
            num_envs=4,
            max_new_tokens=4,
            reinforce=ReinforceConfig(lr=1e-2, k=2),
            eval_every=1,
            eval_prompts=4,
            out=str(tmp_path / judge_model),
            progress=False,
        )
        return train(cfg, log=lambda *a: None)

    # the policy is tiny, so a frozen copy of it judges as a fresh tiny does, at every iteration; a judge that moved
    # with the policy would pay other rewards from the second iteration on
    by_self, by_name = run("label:self"), run("label:tiny")
    returns = [h["charts/episodic_return"] for h in by_self["history"]]
    # (equal up to float rounding: the copy's kernels may sum in another order)
    assert returns == pytest.approx([h["charts/episodic_return"] for h in by_name["history"]], rel=1e-5)
    assert [e["eval/reward"] for e in by_self["evals"]] == pytest.approx(
        [e["eval/reward"] for e in by_name["evals"]], rel=1e-5, abs=1e-6
    )
    assert len(set(returns)) == 3  # the policy moved, so the batches differ


def test_the_self_judge_does_not_move_with_the_policy():
    import torch

    from criticgym.registration import make_judge
    from criticgym.rollout import load_policy
    from criticgym.train.build import initial_policy

    model, tokenizer = load_policy("tiny")
    policy = initial_policy(model, tokenizer)
    judge = make_judge("label:self", "sentiment", pairwise=False, policy=policy)
    before = judge.score(["The film"], [" was great"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    assert judge.score(["The film"], [" was great"]) == pytest.approx(before)
    assert policy() is policy()  # one frozen copy, however many envs ask for it


def test_the_label_word_critic_judges_each_clause_in_one_call():
    from criticgym.critics.verbalizer import LabelWordCritic
    from criticgym.registration import make_critic

    backend = Counting()
    # centred on a one-'good' text: a clause with no 'good' sits at -1, with two at +1, with one at 0
    scorer = LabelWordScorer(backend, WORDS, calibration="centre", unlabeled=["good"], include_prompt=False)
    completion = "plain words, good good here. good"
    (critique,) = LabelWordCritic(scorer, margin=0.5).critique(["The film"], [completion])
    assert [(completion[s.start : s.end], s.label) for s in critique.spans] == [
        ("plain words", "negative"),
        (" good good here", "positive"),
    ]
    assert [s.value for s in critique.spans] == pytest.approx([np.tanh(-0.5), np.tanh(0.5)])
    assert len(backend.prompts) == 1 + 3  # the centring text, then the three clauses together
    assert LabelWordCritic(scorer).critique([""], [""])[0].spans == ()
    with pytest.raises(ConfigError, match="label_words"):
        make_critic("label", "words", None)
