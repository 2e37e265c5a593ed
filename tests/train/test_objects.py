"""Objects in a run's reward set-up: a user's critic function and judge object train, resume and evaluate by name."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from criticgym import registration
from criticgym.algos.reinforce import ReinforceConfig
from criticgym.cli import main
from criticgym.critics import Critique, Span
from criticgym.errors import ConfigError
from criticgym.rewards import Relc, RlaifDirect, as_dict, from_dict
from criticgym.train import TrainConfig, train


def first_letter_critic(prompts, completions):
    """A user's span critic, a plain function: the first character of every completion is a good span."""
    return [Critique((Span(0, 1, 1.0),)) if completion else Critique() for completion in completions]


class LengthJudge:
    """A user's direct judge: longer completions (up to 20 characters) rate higher, in [0, 1]."""

    def rate(self, prompts, completions):
        return [min(len(c), 20) / 20 for c in completions]


JUDGE = LengthJudge()

REWARDS = {"critic-function": Relc(critic=first_letter_critic), "judge-object": RlaifDirect(judge_model=JUDGE)}


def config(out, reward, **overrides):
    options = dict(
        env="criticgym/Words-v0",
        reward=reward,
        agent="reinforce",
        model="tiny",
        iterations=4,
        num_envs=4,
        reinforce=ReinforceConfig(lr=1e-2),
        eval_every=1,
        eval_prompts=4,
        checkpoint_every=1,
        out=str(out),
        progress=False,
    )
    return TrainConfig(**(options | overrides))


def test_a_spec_writes_its_objects_by_import_path_and_reads_them_back():
    data = as_dict(Relc(critic=first_letter_critic))
    assert data["critic"] == {"object": f"{__name__}:first_letter_critic"}
    assert from_dict(json.loads(json.dumps(data))) == Relc(critic=first_letter_critic)
    judged = as_dict(RlaifDirect(judge_model=JUDGE))
    assert judged["judge_model"] == {"object": f"{__name__}:JUDGE"}  # an instance, by the module name that holds it
    assert from_dict(judged).judge_model is JUDGE
    unnamed = as_dict(Relc(critic=lambda prompts, completions: []))
    assert unnamed["critic"]["object"] is None and unnamed["critic"]["type"].endswith("<locals>.<lambda>")
    with pytest.raises(ConfigError, match="critic was an object criticgym could not name"):
        from_dict(unnamed)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_a_users_object_trains_and_resumes_with_equal_metrics(tmp_path, name):
    straight = train(config(tmp_path / "straight", REWARDS[name]), log=lambda *a: None)
    train(config(tmp_path / "resumed", REWARDS[name], iterations=2), log=lambda *a: None)
    resumed = train(config(tmp_path / "resumed", REWARDS[name], resume=True), log=lambda *a: None)

    assert [h["charts/episodic_return"] for h in resumed["history"]] == [
        h["charts/episodic_return"] for h in straight["history"]
    ]
    assert [e["eval/reward"] for e in resumed["evals"]] == [e["eval/reward"] for e in straight["evals"]]
    if name == "critic-function":  # the critic's spans were paid on top of the task's score
        assert all(h["charts/episodic_return"] > h["charts/extrinsic"] for h in straight["history"])
    else:  # the judge's rating is the reward
        assert all(0.0 <= h["charts/episodic_return"] <= 1.0 for h in straight["history"])
    saved = json.loads((tmp_path / "resumed" / "config.json").read_text())["reward"]
    assert {"object": f"{__name__}:{'first_letter_critic' if name == 'critic-function' else 'JUDGE'}"} in saved.values()


def test_an_object_it_cannot_name_trains_but_is_refused_on_resume_and_eval(tmp_path, capsys):
    reward = Relc(critic=lambda prompts, completions: first_letter_critic(prompts, completions))
    train(config(tmp_path, reward, iterations=1), log=lambda *a: None)
    with pytest.raises(ConfigError, match=r"cannot resume .* objects criticgym cannot name: critic \(.*<lambda>\)"):
        train(config(tmp_path, reward, iterations=2, resume=True), log=lambda *a: None)
    assert main(["eval", "--checkpoint", str(tmp_path), "--prompts", "4"]) == 2
    err = capsys.readouterr().err
    assert "critic was an object criticgym could not name" in err and "<lambda>" in err


def test_a_registered_critic_is_a_name_every_caller_takes(monkeypatch):
    monkeypatch.setattr(registration, "CRITICS", dict(registration.CRITICS))
    registration.register_critic("first-letter", lambda ctx: first_letter_critic)
    with pytest.raises(ConfigError, match="A different critic is already registered as 'first-letter'"):
        registration.register_critic("first-letter", lambda ctx: None)
    with pytest.raises(ConfigError, match="plain word"):
        registration.register_critic("random-mine", lambda ctx: None)

    def returns(critic):
        env = gym.make("criticgym/Words-v0", reward=Relc(critic=critic), model="tiny", max_new_tokens=3)
        env.reset(seed=0)
        return [env.step(token)[1] for token in (300, 301, 302)]

    by_name = returns("first-letter")
    np.testing.assert_array_equal(by_name, returns(first_letter_critic))
    assert TrainConfig(reward=Relc(critic="first-letter")).to_dict()["reward"]["critic"] == "first-letter"
