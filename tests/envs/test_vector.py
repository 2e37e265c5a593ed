from __future__ import annotations

import numpy as np
import pytest

from criticgym.envs import TextGenEnv, TextGenVectorEnv
from criticgym.errors import ConfigError, InvalidActionError


def make(tokenizer, n=3, mode="next_step", **kw):
    return TextGenVectorEnv(n, "sentiment", model=tokenizer, max_new_tokens=3, autoreset_mode=mode, **kw)


def test_next_step_autoreset(tokenizer):
    envs = make(tokenizer)
    eos, word = tokenizer.eos_token_id, 300
    obs, _ = envs.reset(seed=0)
    first_prompts = obs["input_ids"].copy()
    # env 0 ends now (EOS); the others keep going
    obs, rewards, terminated, truncated, info = envs.step(np.array([eos, word, word]))
    assert terminated.tolist() == [True, False, False]
    assert info["_completion"].tolist() == [True, False, False]
    assert info["completion"][0] == ""
    np.testing.assert_array_equal(obs["input_ids"][0][: len(first_prompts[0])], first_prompts[0])
    # the next step resets env 0: its action is ignored, reward 0, not done, a new prompt
    obs, rewards, terminated, truncated, info = envs.step(np.array([word, word, word]))
    assert not terminated[0] and not truncated[0] and rewards[0] == 0
    assert info["n_tokens"].tolist() == [0, 2, 2]
    obs, rewards, terminated, truncated, info = envs.step(np.array([word, word, word]))
    assert truncated.tolist() == [False, True, True]  # the 3-token budget
    assert info["_completion"].tolist() == [False, True, True]
    assert info["n_tokens"].tolist() == [1, 3, 3]  # env 0 is one token into its new episode


def test_disabled_mode_freezes_finished_envs(tokenizer):
    envs = make(tokenizer, mode="disabled")
    eos, word = tokenizer.eos_token_id, 300
    envs.reset(seed=0)
    envs.step(np.array([eos, word, word]))
    frozen = envs.episodes.get_state(0)
    obs, rewards, terminated, truncated, info = envs.step(np.array([word, word, word]))
    assert not terminated[0] and not truncated[0] and rewards[0] == 0
    assert "completion" not in info  # nobody ended on this step; env 0 does not report its end again
    np.testing.assert_array_equal(frozen.ids, envs.episodes.get_state(0).ids)
    assert info["n_tokens"].tolist() == [1, 2, 2]  # env 0 still holds just its EOS
    # a partial reset restarts only the masked envs
    envs.reset(options={"reset_mask": np.array([True, False, False])})
    assert envs.episodes.done.tolist() == [False, False, False]
    assert (envs.episodes.length - envs.episodes.prompt_len).tolist() == [0, 2, 2]


def test_vector_equals_single_env(tokenizer):
    prompt, actions = "It was a", [300, 301, 302]
    single = TextGenEnv("sentiment", model=tokenizer, max_new_tokens=3)
    envs = make(tokenizer, n=2)
    s_obs, _ = single.reset(options={"prompt": prompt})
    v_obs, _ = envs.reset(options={"prompt": prompt})
    for a in actions:
        s_obs, _, s_term, s_trunc, s_info = single.step(a)
        v_obs, _, v_term, v_trunc, v_info = envs.step(np.array([a, a]))
        for key in s_obs:
            np.testing.assert_array_equal(v_obs[key][1], s_obs[key])
        assert (v_term[1], v_trunc[1]) == (s_term, s_trunc)
    assert v_info["completion"][1] == s_info["completion"]


def test_one_prompt_per_env(tokenizer):
    envs = make(tokenizer, n=2)
    obs, _ = envs.reset(options={"prompt": ["Good", "Bad movie"]})
    assert obs["attention_mask"].sum(axis=1).tolist() == [1, 2]
    with pytest.raises(ConfigError, match="one per environment"):
        envs.reset(options={"prompt": ["only one"]})


def test_seeded_reset_is_reproducible(tokenizer):
    a, _ = make(tokenizer, n=4).reset(seed=3)
    b, _ = make(tokenizer, n=4).reset(seed=3)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_bad_actions_and_arguments(tokenizer):
    envs = make(tokenizer)
    envs.reset(seed=0)
    with pytest.raises(InvalidActionError, match="vocabulary"):
        envs.step(np.array([1, 2, 10**6]))
    with pytest.raises(InvalidActionError, match="3 integer token ids"):
        envs.step(np.array([1, 2]))
    with pytest.raises(ConfigError, match="autoreset_mode"):
        make(tokenizer, mode="same_step")
    with pytest.raises(ConfigError, match="num_envs"):
        TextGenVectorEnv(0, "sentiment", model=tokenizer)


def test_render(tokenizer):
    envs = make(tokenizer, n=2, render_mode="ansi")
    envs.reset(options={"prompt": ["Good", "Bad"]})
    assert envs.render() == ("Good⟦", "Bad⟦")


def test_vector_snapshots_rewind_rows_and_branch_into_others(tokenizer):
    envs = make(tokenizer, 3, "disabled")
    envs.reset(seed=0)
    envs.step(np.array([300, 301, 302]))
    snapshot = envs.get_state([1])
    envs.step(np.array([303, 304, 305]))
    obs = envs.set_state(snapshot * 2, rows=[0, 1])  # row 1 rewound, and branched into row 0
    np.testing.assert_array_equal(obs["input_ids"][0], obs["input_ids"][1])
    _, _, _, truncated, info = envs.step(np.array([306, 307, 308]))
    _, _, _, truncated, info = envs.step(np.array([309, 310, 311]))
    assert truncated[:2].all() and info["completion_ids"][0].tolist() == [301, 306, 309]
    assert info["completion_ids"][1].tolist() == [301, 307, 310]
    with pytest.raises(ConfigError, match="one per row"):
        envs.set_state(snapshot, rows=[0, 1])
