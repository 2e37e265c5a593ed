from __future__ import annotations

import numpy as np
import pytest

from criticgym.critics.judge import DigitJudge, Example, PairwiseJudge, expected_score, soft_label, swap_average
from criticgym.errors import ConfigError, CriticGymError


class PositionBiased:
    """A backend whose judge prefers the option holding 'good', plus a bias toward option 1."""

    def __init__(self, bias=1.0):
        self.bias, self.prompts, self.generated = bias, [], []

    def generate(self, prompts, max_new_tokens=128):
        self.generated.extend(prompts)
        return ["Option 1 is kinder."] * len(prompts)

    def next_token_logprobs(self, prompts, candidates):
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            sample = p.rsplit("Text:", 1)[1]
            one, two = sample.split("Option 2:")
            merit = ("good" in one) - ("good" in two)
            logits = np.array([merit + self.bias, 0.0])
            out.append(logits - np.log(np.exp(logits).sum()))
        return np.array(out)


def test_soft_label_and_swap_average_arithmetic():
    np.testing.assert_allclose(soft_label(np.log([0.6]), np.log([0.2])), [0.75])
    # position bias: P(1)=0.8 with a first and P(1)=0.6 with b first -> a better with (0.8 + 0.4) / 2
    np.testing.assert_allclose(swap_average([0.8], [0.6]), [0.6])
    np.testing.assert_allclose(swap_average([0.7], [0.7]), [0.5])  # pure position bias -> no preference


def test_pairwise_judge_cancels_position_bias():
    backend = PositionBiased(bias=1.0)
    judge = PairwiseJudge(backend)
    p_ab, p_ba = judge.prefer_both_orders(["x", "x"], ["good film", "meh"], ["meh", "meh too"])
    assert p_ab[1] == pytest.approx(p_ba[1]) and p_ab[1] > 0.5  # the same position wins both times: bias
    prefer = judge.prefer(["x", "x"], ["good film", "meh"], ["meh", "meh too"])
    assert prefer[0] > 0.5 and prefer[1] == pytest.approx(0.5)  # the tie is a tie once both orders are averaged
    assert all(p.endswith("\nPreferred=") for p in backend.prompts)


def test_pairwise_prompt_has_four_parts_and_examples():
    judge = PairwiseJudge(PositionBiased(), preamble="Be kind.", examples=[Example("ctx", "nice", "rude", 1)])
    prompt = judge.build_prompt("The film", " was good", " was bad")
    assert prompt.startswith("Be kind.\n")
    assert "Option 1: nice\nOption 2: rude\nPreferred=1" in prompt
    assert prompt.endswith("Text: The film\nOption 1:  was good\nOption 2:  was bad")
    with pytest.raises(ConfigError):
        PairwiseJudge(PositionBiased(), examples=[Example("c", "a", "b", 3)])


def test_chain_of_thought_reads_the_label_after_a_rationale():
    backend = PositionBiased()
    PairwiseJudge(backend, chain_of_thought=True).prefer(["x"], ["good"], ["bad"])
    assert len(backend.generated) == 2 and all(g.endswith("Rationale:") for g in backend.generated)
    assert all("Rationale: Option 1 is kinder.\nPreferred=" in p for p in backend.prompts)


def test_score_mapping_to_minus_one_one():
    levels = tuple(range(10))
    certain = np.full((3, 10), -np.inf)
    certain[0, 0], certain[1, 9], certain[2, 4] = 0.0, 0.0, 0.0
    np.testing.assert_allclose(expected_score(certain, levels), [0, 9, 4])
    uniform = np.log(np.full((1, 10), 0.1))
    np.testing.assert_allclose(expected_score(uniform, levels), [4.5])

    class Fixed:
        def next_token_logprobs(self, prompts, candidates):
            return np.tile(certain[1], (len(prompts), 1))

    judge = DigitJudge(Fixed())
    assert judge.rate(["a"], ["b"]) == [1.0] and judge.score(["a"], ["b"]) == [1.0]
    with pytest.raises(CriticGymError, match="no probability"):
        expected_score(np.full((1, 10), -np.inf), levels)


def test_judges_on_a_local_model_read_its_next_token_distribution(tiny):
    import torch

    from criticgym.critics import LocalBackend

    model, tokenizer = tiny

    def next_token(prompt: str, candidates) -> np.ndarray:
        """Log-probs of each candidate's token after the chat-formatted prompt: one plain forward, no padding."""
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.no_grad():
            logprobs = model(torch.tensor([list(ids)])).logits[0, -1].float().log_softmax(-1)
        return np.array([float(logprobs[tokenizer.encode(c, add_special_tokens=False)[0]]) for c in candidates])

    backend = LocalBackend(tiny)
    pairwise, direct = PairwiseJudge(backend), DigitJudge(backend)
    prefer = pairwise.prefer(["The film"], [" was great"], [" was awful"])
    ab = next_token(pairwise.build_prompt("The film", " was great", " was awful") + "\nPreferred=", "12")
    ba = next_token(pairwise.build_prompt("The film", " was awful", " was great") + "\nPreferred=", "12")
    p_ab, p_ba = (np.exp(x[0]) / np.exp(x).sum() for x in (ab, ba))
    np.testing.assert_allclose(prefer, [(p_ab + 1 - p_ba) / 2], rtol=1e-4)  # both orders, swap-averaged

    digits = next_token(direct.build_prompt("The film", " was great"), [str(d) for d in range(10)])
    weights = np.exp(digits) / np.exp(digits).sum()
    expected = float(weights @ np.arange(10))
    np.testing.assert_allclose(direct.rate(["The film"], [" was great"]), [(expected - 4.5) / 4.5], rtol=1e-4)


def test_gym_make_rlaif_direct_pays_the_judge_score(tokenizer):
    import gymnasium as gym

    class Confident:
        def next_token_logprobs(self, prompts, candidates):
            out = np.full((len(prompts), 10), -np.inf)
            out[:, 7] = 0.0  # always "7"
            return out

    env = gym.make(
        "criticgym/SentimentControl-v0", reward="rlaif-direct", judge=DigitJudge(Confident()), max_new_tokens=1
    )
    env.reset(seed=0)
    _, reward, _, truncated, info = env.step(300)
    assert truncated and reward == pytest.approx((7 - 4.5) / 4.5) == info["extrinsic_reward"]
    envs = gym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=2, reward="rlaif-direct", judge=DigitJudge(Confident())
    )
    assert envs.unwrapped.num_envs == 2


def test_evaluate_judge_measures_agreement_and_position_bias():
    from criticgym.critics import VaderSentiment, evaluate_judge, make_judge
    from criticgym.critics.judge import ScorerJudge

    lexicon = evaluate_judge(make_judge("lexicon"), pairs=100, seed=0)
    assert lexicon["judge"] == "lexicon" and lexicon["pairs"] == 100
    assert lexicon["agreement"] > 0.6 and lexicon["position_bias_rate"] == 0.0  # symmetric by construction
    low, high = lexicon["agreement_ci95"]
    assert low < lexicon["agreement"] < high
    # a scorer judge also ranks single reviews; on random pairs the agreement estimates that AUC
    assert 0.6 < lexicon["auc"] <= 1.0 and abs(lexicon["auc"] - lexicon["agreement"]) < 0.1

    class AlwaysFirst:
        def prefer_both_orders(self, prompts, a, b):
            return np.full(len(a), 0.9), np.full(len(a), 0.9)

    biased = evaluate_judge(AlwaysFirst(), pairs=50, seed=0)
    assert biased["auc"] is None  # no scores of single reviews
    assert biased["position_bias_rate"] == biased["prefers_first"] == 1.0
    assert biased["consistency"] == 0.0 and biased["agreement"] == 0.5  # both orders averaged: a tie every time
    assert 0.2 < biased["agreement_one_order"] < 0.8  # one order alone: whichever review happened to come first

    judge = ScorerJudge(VaderSentiment(), temperature=0.1)
    p_ab, p_ba = judge.prefer_both_orders(["x"], [" wonderful"], [" awful"])
    assert p_ab[0] > 0.99 and p_ba[0] == pytest.approx(1 - p_ab[0])
    with pytest.raises(ConfigError, match="pairs"):
        evaluate_judge(AlwaysFirst(), pairs=0)
    assert isinstance(make_judge("tiny"), PairwiseJudge)
