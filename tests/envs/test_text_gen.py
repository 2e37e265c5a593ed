from __future__ import annotations

import numpy as np
import pytest

from criticgym.envs import TextGenEnv, TextGenVectorEnv
from criticgym.errors import ConfigError, InvalidActionError, PromptTooLongError


@pytest.fixture
def env(tokenizer):
    return TextGenEnv("sentiment", model=tokenizer, max_new_tokens=5, render_mode="ansi")


def token(tokenizer, text):
    (tid,) = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tid


def test_reset_with_a_prompt_lays_out_the_observation(env, tokenizer):
    obs, info = env.reset(seed=0, options={"prompt": "The film is"})
    ids = tokenizer("The film is", add_special_tokens=False)["input_ids"]
    n = len(ids)
    assert obs["input_ids"].shape == obs["attention_mask"].shape == (16 + 5,)
    assert obs["input_ids"][:n].tolist() == ids
    assert (obs["input_ids"][n:] == tokenizer.pad_token_id).all()
    assert obs["attention_mask"].tolist() == [1] * n + [0] * (21 - n)
    assert info == {"n_tokens": 0, "prompt": "The film is"}


def test_steps_append_tokens_and_the_budget_truncates(env, tokenizer):
    env.reset(seed=0, options={"prompt": "The film is"})
    word = token(tokenizer, " great")
    for i in range(5):
        obs, reward, terminated, truncated, info = env.step(word)
        assert reward == 0.0 and not terminated
        assert truncated == (i == 4)
        assert info["n_tokens"] == i + 1
    assert info["completion"] == " great" * 5
    assert info["completion_ids"].tolist() == [word] * 5
    assert info["prompt"] == "The film is" and info["prompt_index"] == -1
    assert obs["attention_mask"].sum() == 3 + 5


def test_eos_terminates(env, tokenizer):
    env.reset(seed=0, options={"prompt": "The film is"})
    env.step(token(tokenizer, " bad"))
    _, _, terminated, truncated, info = env.step(tokenizer.eos_token_id)
    assert terminated and not truncated
    assert info["completion"] == " bad"  # EOS is not part of the text
    assert info["completion_ids"].tolist()[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("action", [-1, 49152, 10**9, 3.5])
def test_actions_outside_the_vocabulary_are_refused(env, action):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="vocabulary|integer"):
        env.step(action)


def test_numpy_integer_actions_are_accepted(env):
    env.reset(seed=0)
    env.step(np.int64(42))
    env.step(np.array(43))


def test_stepping_a_finished_or_unstarted_episode_is_refused(env, tokenizer):
    with pytest.raises(InvalidActionError, match="reset"):
        env.step(5)
    env.reset(seed=0)
    env.step(tokenizer.eos_token_id)
    with pytest.raises(InvalidActionError, match="reset"):
        env.step(5)


def test_a_prompt_longer_than_the_env_names_the_fix(env):
    with pytest.raises(PromptTooLongError, match="max_prompt_tokens="):
        env.reset(options={"prompt": "word " * 40})


def test_max_prompt_tokens_widens_the_observation(tokenizer):
    env = TextGenEnv("sentiment", model=tokenizer, max_prompt_tokens=64, max_new_tokens=4)
    obs, _ = env.reset(options={"prompt": "word " * 40})
    assert obs["input_ids"].shape == (68,)


def test_get_and_set_state_rewind(env, tokenizer):
    env.reset(seed=0, options={"prompt": "The film is"})
    env.step(token(tokenizer, " very"))
    state = env.unwrapped.get_state()
    first = env.step(token(tokenizer, " good"))
    env.step(token(tokenizer, " and"))
    restored = env.unwrapped.set_state(state)
    assert restored["attention_mask"].sum() == 4
    again = env.step(token(tokenizer, " good"))
    np.testing.assert_array_equal(first[0]["input_ids"], again[0]["input_ids"])
    assert first[4] == again[4]
    # rewinding to a finished state and stepping is refused like any finished episode
    env.step(tokenizer.eos_token_id)
    done_state = env.unwrapped.get_state()
    env.unwrapped.set_state(done_state)
    with pytest.raises(InvalidActionError):
        env.step(5)
    with pytest.raises(ConfigError):
        env.unwrapped.set_state("not a state")


def test_render_ansi(env, tokenizer):
    env.reset(seed=0, options={"prompt": "The film is"})
    env.step(token(tokenizer, " fun"))
    assert env.render() == "The film is⟦ fun"
    env.step(tokenizer.eos_token_id)
    assert env.render() == "The film is⟦ fun⟧"


def test_prompts_come_from_the_task_and_the_seed(tokenizer):
    env = TextGenEnv("sentiment", model=tokenizer)
    a = [env.reset(seed=s)[1]["prompt"] for s in range(5)]
    b = [env.reset(seed=s)[1]["prompt"] for s in range(5)]
    assert a == b and len(set(a)) == 5


def test_bad_constructor_arguments(tokenizer):
    with pytest.raises(ConfigError, match="Unknown task"):
        TextGenEnv("poetry", model=tokenizer)
    with pytest.raises(ConfigError, match="split"):
        TextGenEnv("sentiment", model=tokenizer, split="validation")
    with pytest.warns(UserWarning, match="ansi"):  # accepted (stable-baselines3 asks for rgb_array), renders nothing
        env = TextGenEnv("sentiment", model=tokenizer, render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.warns(UserWarning):
        assert env.render() is None
    with pytest.raises(ConfigError, match="tokenizer"):
        TextGenEnv("sentiment", model=42)


def test_a_smaller_max_prompt_tokens_draws_only_prompts_that_fit(tokenizer):
    """Prompts come from the task filtered by the env's own limit, so every drawn prompt fits the observation."""
    env = TextGenEnv("sentiment", model=tokenizer, max_prompt_tokens=5, max_new_tokens=2)
    for seed in range(200):
        obs, info = env.reset(seed=seed)
        n = int(obs["attention_mask"].sum())
        assert 4 <= n <= 5  # the task cuts 4 to 10 tokens; 6 to 10 do not fit
        env.step(300)
        _, _, _, truncated, _ = env.step(300)
        assert truncated
    vec = TextGenVectorEnv(64, "sentiment", model=tokenizer, max_prompt_tokens=5, max_new_tokens=1)
    obs, _ = vec.reset(seed=0)
    assert obs["attention_mask"].sum(1).max() <= 5
    with pytest.raises(ConfigError, match="max_prompt_tokens to at least 4"):
        TextGenEnv("sentiment", model=tokenizer, max_prompt_tokens=3)


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
@pytest.mark.parametrize("name", ["max_new_tokens", "max_prompt_tokens"])
def test_explicit_sizes_must_be_positive_integers(tokenizer, name, size):
    with pytest.raises(ConfigError, match=f"{name} must be a positive integer"):
        TextGenEnv("sentiment", model=tokenizer, **{name: size})


@pytest.mark.parametrize("action", [np.array([1, 2]), np.array([[3]]), []])
def test_an_action_that_is_not_one_token_is_refused(env, action):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="one token id"):
        env.step(action)
