from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from criticgym.critics import RewardModel, RewardModelScorer, make_scorer, soft_label_loss
from criticgym.critics.judge import swap_average
from criticgym.distill.fit import train_reward_model
from criticgym.distill.pairs import label_pairs, read_jsonl, write_jsonl
from criticgym.errors import ConfigError

POSITIVE = ["wonderful", "brilliant", "delightful", "moving", "superb", "charming"]
NEGATIVE = ["dull", "awful", "boring", "tedious", "clumsy", "dreadful"]


def test_soft_label_loss_values_and_gradient_match_finite_differences():
    zero = torch.zeros(3, dtype=torch.float64)
    assert soft_label_loss(zero, zero, torch.full((3,), 0.7, dtype=torch.float64)).item() == pytest.approx(np.log(2))
    big = torch.full((1,), 30.0, dtype=torch.float64)
    assert soft_label_loss(big, -big, torch.ones(1, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-12)

    r_a = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    r_b = torch.tensor([-0.5, 0.4, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.9, 0.2, 0.5, 1.0], dtype=torch.float64)
    loss = soft_label_loss(r_a, r_b, p)
    loss.backward()
    eps = 1e-6
    for i in range(4):
        bump = torch.zeros(4, dtype=torch.float64)
        bump[i] = eps
        with torch.no_grad():
            numeric = (soft_label_loss(r_a + bump, r_b, p) - soft_label_loss(r_a - bump, r_b, p)) / (2 * eps)
        assert r_a.grad[i].item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-9)
    # analytic: d/dr_a = (sigmoid(r_a - r_b) - p) / N, and the loss depends only on the difference
    expected = (torch.sigmoid(r_a - r_b) - p) / 4
    torch.testing.assert_close(r_a.grad, expected.detach())
    torch.testing.assert_close(r_b.grad, -expected.detach())
    assert torch.autograd.gradcheck(lambda a, b: soft_label_loss(a, b, p), (r_a.detach().requires_grad_(), r_b))


def test_jsonl_round_trip_and_errors(tmp_path):
    records = [
        {"prompt": "Le film", "completion_a": " était 🎬 génial", "completion_b": " bof", "label": 0.75, "judge": "x"},
        {"prompt": "It", "completion_a": " was fine", "completion_b": ' was "fine"\nreally', "label": 0.5},
    ]
    path = tmp_path / "prefs.jsonl"
    assert write_jsonl(path, records) == 2
    assert read_jsonl(path) == records
    path.write_text(json.dumps(records[0]) + "\n{not json\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_jsonl(path)
    path.write_text(json.dumps({"prompt": "a", "completion_a": "b", "label": 0.5}) + "\n")
    with pytest.raises(ConfigError, match="completion_b"):
        read_jsonl(path)
    path.write_text(json.dumps({**records[0], "label": 1.5}) + "\n")
    with pytest.raises(ConfigError, match="probability"):
        read_jsonl(path)


def synthetic_pairs(n, seed):
    """Pairs whose soft label follows a hidden utility: (#positive - #negative words), through a sigmoid."""
    rng = np.random.default_rng(seed)
    words = POSITIVE + NEGATIVE

    def completion():
        chosen = rng.choice(words, size=3)
        return " " + " and ".join(chosen), sum(w in POSITIVE for w in chosen) - sum(w in NEGATIVE for w in chosen)

    out = []
    for _ in range(n):
        (a, u_a), (b, u_b) = completion(), completion()
        out.append(
            {"prompt": "The film was", "completion_a": a, "completion_b": b, "label": 1 / (1 + np.exp(u_b - u_a))}
        )
    return out


def ranking_accuracy(scorer, pairs):
    decided = [r for r in pairs if r["label"] != 0.5]
    a = scorer.score([r["prompt"] for r in decided], [r["completion_a"] for r in decided])
    b = scorer.score([r["prompt"] for r in decided], [r["completion_b"] for r in decided])
    return np.mean([(x > y) == (r["label"] > 0.5) for x, y, r in zip(a, b, decided, strict=True)])


def test_minilm_reward_model_learns_synthetic_soft_labels_and_plugs_into_the_env(tmp_path):
    model, metrics = train_reward_model(synthetic_pairs(240, seed=0), "minilm", epochs=60, log=lambda *_: None)
    assert metrics["val_accuracy"] > 0.8 and metrics["train_loss"] < metrics["loss_curve"][0]
    scorer = RewardModelScorer(model.save(tmp_path / "rm"))
    assert ranking_accuracy(scorer, synthetic_pairs(200, seed=1)) > 0.8  # fresh pairs, never seen
    np.testing.assert_allclose(scorer.score(["The film was"], [" superb"]), model.reward(["The film was superb"]), 1e-5)

    env = gym.make("criticgym/SentimentControl-v0", scorer=str(tmp_path / "rm"), max_new_tokens=1)
    env.reset(seed=0, options={"prompt": "The film was"})
    _, reward, *_, info = env.step(env.unwrapped.tokenizer.encode(" superb")[0])
    assert reward == pytest.approx(scorer.score(["The film was"], [info["completion"]])[0], abs=1e-5)


def test_causal_reward_model_on_tiny_learns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    fillers = [" the", " a", " film", " plot", " and"]

    def pairs(n):
        out = []
        for _ in range(n):
            ends = rng.integers(2, size=2)
            a, b = ("".join(rng.choice(fillers, 2)) + (" good" if e else " bad") for e in ends)
            out.append(
                {
                    "prompt": "It was",
                    "completion_a": a,
                    "completion_b": b,
                    "label": float(1 / (1 + np.exp(3 * (ends[1] - ends[0])))),
                }
            )
        return out

    model, metrics = train_reward_model(pairs(160), "tiny", train_layers=1, epochs=15, lr=3e-3, log=lambda *_: None)
    assert metrics["val_accuracy"] > 0.9
    scorer = make_scorer(str(model.save(tmp_path / "rm")))
    assert isinstance(scorer, RewardModelScorer) and ranking_accuracy(scorer, pairs(60)) > 0.9
    texts = ["It was the plot good", "It was a film bad"]
    torch.testing.assert_close(RewardModel.load(tmp_path / "rm").reward(texts), model.reward(texts))


def test_label_pairs_samples_two_completions_of_each_prompt_and_labels_both_orders(tmp_path):
    class Longer:
        name = "longer"

        def prefer_both_orders(self, prompts, a, b):
            p = np.array([0.9 if len(x) > len(y) else 0.1 for x, y in zip(a, b, strict=True)])
            return p, np.full(len(p), 0.6)  # a position bias toward option 1 in the swapped order

    records = label_pairs("criticgym/SentimentControl-v0", "tiny", Longer(), prompts=5, batch_pairs=2, seed=3)
    assert len(records) == 5 and all(r["judge"] == "longer" for r in records)
    for r in records:
        assert r["completion_a"] != r["completion_b"] or r["p_first_ab"] == 0.1
        assert r["label"] == pytest.approx(float(swap_average(r["p_first_ab"], 0.6)))
    write_jsonl(tmp_path / "p.jsonl", records)
    assert read_jsonl(tmp_path / "p.jsonl") == records


def test_a_judge_with_prefer_alone_is_asked_in_both_orders():
    class FirstIfLonger:  # a plain PreferenceJudge: no prefer_both_orders
        def prefer(self, prompts, a, b):
            return [1.0 if len(x) > len(y) else 0.0 for x, y in zip(a, b, strict=True)]

    records = label_pairs("criticgym/SentimentControl-v0", "tiny", FirstIfLonger(), prompts=4, batch_pairs=2, seed=1)
    assert [r["judge"] for r in records] == ["FirstIfLonger"] * 4
    for r in records:
        longer = len(r["completion_a"]) > len(r["completion_b"])
        shorter = len(r["completion_a"]) < len(r["completion_b"])
        assert (r["p_first_ab"], r["p_first_ba"]) == (float(longer), float(shorter))
        assert r["label"] == pytest.approx(float(swap_average(float(longer), float(shorter))))
