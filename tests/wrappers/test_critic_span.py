from __future__ import annotations

import threading

import gymnasium as gym
import numpy as np
import pytest

from criticgym.critics import Critique, LexiconCritic, Span
from criticgym.envs import TextGenEnv, TextGenVectorEnv
from criticgym.errors import ConfigError, CriticGymError
from criticgym.rewards import Relc
from criticgym.wrappers import (
    CriticSpanReward,
    CriticSpanRewardVector,
    RewardMix,
    RewardMixVector,
    SparseExtrinsicRewardVector,
)


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class WordCritic:
    """Marks every occurrence of given words (good) and counts its calls."""

    def __init__(self, good=("joy",), bad=("dull",)):
        self.good, self.bad, self.calls = good, bad, []

    def critique(self, prompts, completions, extrinsic=None):
        self.calls.append((list(completions), None if extrinsic is None else list(extrinsic)))
        out = []
        for c in completions:
            spans = []
            for words, value in ((self.good, 1.0), (self.bad, -1.0)):
                for w in words:
                    start = c.find(w)
                    while start >= 0:
                        spans.append(Span(start, start + len(w), value))
                        start = c.find(w, start + 1)
            out.append(Critique(tuple(spans)))
        return out


def play(env, tokenizer, text, prompt="It was"):
    env.reset(seed=0, options={"prompt": prompt})
    rewards = []
    for token in ids_of(tokenizer, text):
        _, reward, terminated, truncated, info = env.step(token)
        rewards.append(reward)
    return rewards, info


def test_hindsight_vector_sums_to_the_return(tokenizer):
    text = " a joy, a dull joy"
    env = RewardMix(
        TextGenEnv("sentiment", model=tokenizer, max_new_tokens=len(ids_of(tokenizer, text))),
        scorer=lambda p, c: [0.25] * len(c),
        critic=WordCritic(),
        alpha1=2.0,
        alpha2=1.0,
    )
    rewards, info = play(env, tokenizer, text)
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    token_rewards = info["token_rewards"]
    assert sum(rewards) == pytest.approx(token_rewards.sum())
    pieces = [tokenizer.decode([t]) for t in ids_of(tokenizer, text)]
    expected = [0.5 if p == " joy" else -0.5 if p == " dull" else 0.0 for p in pieces]
    expected[-1] += 2.0 * 0.25  # alpha1 * r_ex on the last token
    np.testing.assert_allclose(token_rewards, expected)
    assert info["intrinsic_rewards"].tolist() == [0.5 if p == " joy" else -0.5 if p == " dull" else 0.0 for p in pieces]
    assert info["critic_spans"] == 3 and info["critic_called"] == 1 and info["critic_latency_s"] >= 0


def test_span_values_and_scale(tokenizer):
    text = " joy and dull"
    env = CriticSpanReward(
        TextGenEnv("sentiment", model=tokenizer, max_new_tokens=3),
        WordCritic(),
        scale=0.5,
        positive_value=0.0,
        negative_value=-1.0,
    )
    rewards, info = play(env, tokenizer, text)
    assert info["token_rewards"].tolist() == [0.0, 0.0, -0.5]
    assert sum(rewards) == pytest.approx(-0.5)


def test_gate_skips_the_critic_when_the_score_is_high_enough(tokenizer):
    critic = WordCritic()
    env = RewardMix(
        TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1),
        scorer=lambda p, c: [0.9] * len(c),
        critic=critic,
        gate=0.5,
    )
    _, info = play(env, tokenizer, " joy")
    assert critic.calls == [] and info["critic_called"] == 0 and info["critique"] is None
    assert info["token_rewards"].tolist() == [0.9]
    env = RewardMix(
        TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1),
        scorer=lambda p, c: [0.1] * len(c),
        critic=critic,
        gate=0.5,
    )
    _, info = play(env, tokenizer, " joy")
    assert critic.calls == [([" joy"], [0.1])]  # called, and handed the raw extrinsic score


def test_identical_texts_are_critiqued_once(tokenizer):
    critic = WordCritic()
    env = CriticSpanReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1), critic)
    _, first = play(env, tokenizer, " joy")
    _, second = play(env, tokenizer, " joy")
    assert len(critic.calls) == 1
    assert (first["critic_cached"], second["critic_cached"]) == (0, 1)
    np.testing.assert_array_equal(first["token_rewards"], second["token_rewards"])


def test_vector_critiques_all_ending_episodes_in_one_call(tokenizer):
    critic = WordCritic()
    base = TextGenVectorEnv(4, "sentiment", model=tokenizer, max_new_tokens=2, autoreset_mode="disabled")
    envs = RewardMixVector(base, scorer=lambda p, c: [0.0] * len(c), critic=critic)
    envs.reset(seed=0, options={"prompt": "It was"})
    joy, dull, eos = ids_of(tokenizer, " joy")[0], ids_of(tokenizer, " dull")[0], tokenizer.eos_token_id
    _, r1, term, _, info1 = envs.step(np.array([eos, joy, dull, joy]))
    assert len(critic.calls) == 1 and critic.calls[0][0] == [""]
    assert info1["_token_rewards"].tolist() == [True, False, False, False]
    _, r2, _, trunc, info2 = envs.step(np.array([eos, joy, joy, eos]))
    assert len(critic.calls) == 2 and len(critic.calls[1][0]) == 3  # envs 1, 2, 3 together
    assert info2["token_rewards"][1].tolist() == [0.5, 0.5]
    assert info2["token_rewards"][2].tolist() == [-0.5, 0.5]
    assert info2["token_rewards"][3].tolist() == [0.5, 0.0]
    assert r2.tolist() == [0.0, 1.0, 0.0, 0.5]
    assert info2["critic_spans"].tolist() == [0, 2, 2, 1]


def test_vector_next_step_autoreset_keeps_episodes_apart(tokenizer):
    base = TextGenVectorEnv(2, "sentiment", model=tokenizer, max_new_tokens=2)
    step_penalty = SparseExtrinsicRewardVector(base, lambda p, c: [1.0] * len(c))
    envs = CriticSpanRewardVector(step_penalty, WordCritic())
    envs.reset(seed=0)
    joy, eos = ids_of(tokenizer, " joy")[0], tokenizer.eos_token_id
    envs.step(np.array([eos, joy]))  # env 0 ends (1 token)
    envs.step(np.array([joy, joy]))  # env 0 resets; env 1 ends (2 tokens)
    envs.step(np.array([joy, eos]))  # env 0: 1st token of episode 2; env 1 resets
    _, rewards, _, _, info = envs.step(np.array([joy, eos]))  # env 0 ends its second episode
    assert info["token_rewards"][0].tolist() == [0.5, 1.5]  # two tokens, the score on the last


def test_a_faulty_critic_raises_instead_of_paying(tokenizer):
    def broken(prompts, completions):
        return [Critique((Span(0, 999, 1.0),)) for _ in completions]

    env = CriticSpanReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1), broken)
    env.reset(seed=0)
    with pytest.raises(CriticGymError, match="beyond its completion"):
        env.step(300)

    env = CriticSpanReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1), lambda p, c: [])
    env.reset(seed=0)
    with pytest.raises(CriticGymError, match="0 critiques for 1"):
        env.step(300)


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda n: [Critique((Span(0, 1, float("nan")),))] * n, "value nan"),
        (lambda n: [Critique((Span(0, 1, "0.5"),))] * n, "value '0.5'"),
        (lambda n: None, "returned NoneType"),
        (lambda n: 0.5, "returned float"),
    ],
)
def test_a_custom_critic_s_fault_names_the_critic(tokenizer, answer, message):
    def my_critic(prompts, completions):
        return answer(len(completions))

    env = CriticSpanReward(TextGenEnv("sentiment", model=tokenizer, max_new_tokens=1), my_critic)
    env.reset(seed=0)
    with pytest.raises(CriticGymError, match=f"my_critic.*{message}|{message}.*my_critic") as raised:
        env.step(300)
    assert "object at 0x" not in str(raised.value)


def test_gym_make_relc_defaults_per_task():
    env = gym.make("criticgym/SentimentControl-v0", reward="relc", scorer="vader", max_new_tokens=3)
    wrapper = env
    while not hasattr(wrapper, "rewarder"):
        wrapper = wrapper.env
    assert isinstance(wrapper.rewarder.critic, LexiconCritic)
    assert (wrapper.rewarder.positive_value, wrapper.rewarder.negative_value) == (0.5, -0.5)
    env = gym.make("criticgym/Detoxify-v0", reward="relc", critic="random", critic_seed=3)
    wrapper = env
    while not hasattr(wrapper, "rewarder"):
        wrapper = wrapper.env
    assert type(wrapper.rewarder.critic).__name__ == "RandomCritic"
    assert (wrapper.rewarder.positive_value, wrapper.rewarder.negative_value) == (0.0, -0.5)
    with pytest.raises(ConfigError, match="Unknown critic"):
        gym.make("criticgym/SentimentControl-v0", reward="relc", critic="oracle")


def test_gym_make_relc_pays_lexicon_spans(tokenizer):
    env = gym.make("criticgym/SentimentControl-v0", reward="relc", scorer=lambda p, c: [0.0] * len(c), max_new_tokens=3)
    rewards, info = play(env, tokenizer, " a wonderful joy")
    assert info["token_rewards"].tolist() == [0.0, 0.5, 0.5]
    assert sum(rewards) == pytest.approx(1.0)


def test_rewinding_a_wrapped_relc_env_gives_the_rewards_of_a_fresh_episode(tokenizer):
    """get_state / set_state through the reward wrappers: the abandoned branch leaves no trace."""

    def make():
        return gym.make(
            "criticgym/SentimentControl-v0", reward="relc", critic="lexicon", scorer="vader", max_new_tokens=4
        )

    words = {w: ids_of(tokenizer, w)[0] for w in (" a", " joy", " dull", " film")}
    env = make()
    env.reset(options={"prompt": "It was"})
    env.step(words[" a"])
    snapshot = env.get_wrapper_attr("get_state")()
    for w in (" dull", " dull", " dull"):  # a branch that ends and is paid
        *_, info = env.step(words[w])
    assert info["intrinsic_rewards"].tolist() == [0.0, -0.5, -0.5, -0.5]
    env.get_wrapper_attr("set_state")(snapshot)
    rewound = [env.step(words[w]) for w in (" joy", " film", " joy")]

    fresh = make()
    fresh.reset(options={"prompt": "It was"})
    expected = [fresh.step(words[w]) for w in (" a", " joy", " film", " joy")][1:]
    for got, want in zip(rewound, expected, strict=True):
        assert got[1] == want[1] and got[2:4] == want[2:4]
    np.testing.assert_array_equal(rewound[-1][4]["token_rewards"], expected[-1][4]["token_rewards"])
    assert rewound[-1][4]["completion"] == " a joy film joy"


def test_rewinding_the_wrapped_vector_env_gives_the_rewards_of_fresh_episodes(tokenizer):
    def make():
        return gym.make_vec(
            "criticgym/SentimentControl-v0",
            num_envs=2,
            reward="relc",
            critic="lexicon",
            scorer="vader",
            max_new_tokens=3,
            autoreset_mode="disabled",
        )

    a, joy, dull = (ids_of(tokenizer, w)[0] for w in (" a", " joy", " dull"))
    envs = make()
    envs.reset(options={"prompt": ["It was", "It was"]})
    envs.step(np.array([a, a]))
    snapshot = envs.get_state()
    envs.step(np.array([dull, dull]))
    *_, info = envs.step(np.array([dull, dull]))  # this branch ends and is paid, then is abandoned
    assert info["_token_rewards"].all()
    envs.set_state(snapshot)
    envs.step(np.array([joy, dull]))
    _, rewound, _, truncated, info = envs.step(np.array([joy, a]))

    fresh = make()
    fresh.reset(options={"prompt": ["It was", "It was"]})
    for column in ([a, a], [joy, dull]):
        fresh.step(np.array(column))
    _, expected, _, _, fresh_info = fresh.step(np.array([joy, a]))
    assert truncated.all()
    np.testing.assert_allclose(rewound, expected)
    for row in range(2):
        np.testing.assert_allclose(info["token_rewards"][row], fresh_info["token_rewards"][row])


class HeldCritic(WordCritic):
    """A WordCritic that answers only once released, and records the thread that called it."""

    def __init__(self):
        super().__init__()
        self.entered, self.release, self.threads = threading.Event(), threading.Event(), []

    def critique(self, prompts, completions, extrinsic=None):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.release.wait(timeout=30), "never released"
        return super().critique(prompts, completions, extrinsic)


def test_an_overlapped_critic_runs_while_other_episodes_generate_and_pays_the_same(tokenizer):
    joy, dull, eos = ids_of(tokenizer, " joy")[0], ids_of(tokenizer, " dull")[0], tokenizer.eos_token_id
    columns = [[eos, joy, dull, joy], [eos, dull, joy, joy], [eos, joy, joy, joy]]  # env 0 ends first, the rest at 3

    def run(critic, overlap):
        base = TextGenVectorEnv(4, "sentiment", model=tokenizer, max_new_tokens=3, autoreset_mode="disabled")
        envs = RewardMixVector(base, lambda p, c: [0.25] * len(c), critic, alpha1=2.0, overlap=overlap)
        envs.reset(seed=0, options={"prompt": "It was"})
        steps = [envs.step(np.array(column)) for column in columns]
        envs.close()
        return steps

    held = HeldCritic()
    base = TextGenVectorEnv(4, "sentiment", model=tokenizer, max_new_tokens=3, autoreset_mode="disabled")
    envs = RewardMixVector(base, lambda p, c: [0.25] * len(c), held, alpha1=2.0, overlap=True)
    envs.reset(seed=0, options={"prompt": "It was"})
    _, rewards, terminated, _, info = envs.step(np.array(columns[0]))  # returns with the critic still held
    assert terminated.tolist() == [True, False, False, False] and not held.release.is_set()
    assert rewards.tolist() == [0.5, 0.0, 0.0, 0.0] and "intrinsic_rewards" not in info  # the score, not the spans
    envs.step(np.array(columns[1]))  # env 0 idles; envs 1-3 keep generating while its critique is held
    assert held.entered.wait(timeout=30) and held.threads[0] is not threading.main_thread()
    held.release.set()
    _, rewards, _, truncated, info = envs.step(np.array(columns[2]))  # the last episodes end: wait for everything
    assert truncated[1:].all() and info["_intrinsic_rewards"].all()
    assert [len(c[0]) for c in held.calls] == [1, 3]  # env 0 alone, then the three that ended together
    envs.close()

    expected, overlapped = run(WordCritic(), overlap=False), run(WordCritic(), overlap=True)
    totals = [sum(np.asarray(step[1]) for step in steps) for steps in (expected, overlapped)]
    np.testing.assert_allclose(totals[0], totals[1])  # each row's return, whichever step paid it
    for key in ("token_rewards", "intrinsic_rewards", "critic_spans"):
        for row in range(4):
            want = next(s[4][key][row] for s in expected if key in s[4] and s[4][f"_{key}"][row])
            have = next(s[4][key][row] for s in overlapped if key in s[4] and s[4][f"_{key}"][row])
            np.testing.assert_array_equal(have, want)


def test_an_overlapped_critic_s_fault_raises_and_overlap_needs_disabled_autoreset(tokenizer):
    def broken(prompts, completions):
        return [Critique((Span(0, 999, 1.0),)) for _ in completions]

    base = TextGenVectorEnv(2, "sentiment", model=tokenizer, max_new_tokens=2, autoreset_mode="disabled")
    envs = CriticSpanRewardVector(base, broken, overlap=True)
    envs.reset(seed=0)
    envs.step(np.array([tokenizer.eos_token_id, 300]))  # env 0's critique fails in the thread
    with pytest.raises(CriticGymError, match="beyond its completion"):
        envs.step(np.array([300, 300]))  # collected at the latest when the last episode ends
    with pytest.raises(ConfigError, match="autoreset_mode='disabled'"):
        CriticSpanRewardVector(TextGenVectorEnv(2, "sentiment", model=tokenizer), WordCritic(), overlap=True)
    with pytest.raises(ConfigError, match="make_vec"):
        gym.make("criticgym/SentimentControl-v0", reward="relc", model=tokenizer, overlap_feedback=True)


def test_training_with_an_overlapped_critic_equals_the_inline_critic_and_charges_its_flops(tmp_path):
    from criticgym.algos.ppo import PPOConfig
    from criticgym.train import TrainConfig, train

    common = dict(
        env="criticgym/SentimentControl-v0",
        reward=Relc(critic="llm", critic_model="tiny"),  # a network, so that its FLOPs count
        model="tiny",
        num_envs=4,
        iterations=2,
        eval_prompts=2,
        max_new_tokens=8,
        ppo=PPOConfig(lr=3e-3, epochs=1, minibatch_size=2, temperature=1.5),
        progress=False,
    )
    runs = [
        train(TrainConfig(out=str(tmp_path / str(overlap)), overlap_feedback=overlap, **common), log=lambda *_: None)
        for overlap in (False, True)
    ]
    inline, overlapped = ([h for h in run["history"]] for run in runs)
    for a, b in zip(inline, overlapped, strict=True):
        assert a["charts/episodic_return"] == b["charts/episodic_return"]
        assert a["perf/reward_flops"] == b["perf/reward_flops"] > 0  # charged to the reward, not the policy
        assert a["perf/policy_flops"] == b["perf/policy_flops"]
