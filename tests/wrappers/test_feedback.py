from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import criticgym  # noqa: F401  (registers the ids)
from criticgym.errors import ConfigError


def play(env, texts):
    """Step the env through each text (one turn each), ending every turn with EOS."""
    tokenizer, eos = env.unwrapped.tokenizer, env.unwrapped.eos_token_id
    steps = []
    for text in texts:
        for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]:
            steps.append(env.step(token))
    return steps


def test_a_feedback_episode_is_answer_feedback_refinement_and_the_reward_scores_the_refinement():
    env = gym.make("criticgym/Arithmetic-v0", model="tiny", feedback="program")
    _, info = env.reset(seed=0)
    assert info["turn"] == "answer"
    prompt = info["prompt"]
    gold = env.unwrapped.episodes.prompt[0].reference
    steps = play(env, ["Answer: 100000"])
    observation, reward, terminated, truncated, turn = steps[-1]
    assert not (terminated or truncated) and reward == 0.0 and turn["turn"] == "feedback"
    assert turn["answer"] == "Answer: 100000" and turn["feedback"].endswith("Judgement: incorrect")
    seen = env.unwrapped.tokenizer.decode(observation["input_ids"][observation["attention_mask"] == 1])
    assert seen == prompt + "Answer: 100000\nFeedback:\n" + turn["feedback"] + "\nRefined solution:\n"
    *_, (_, reward, terminated, _, end) = play(env, [gold])
    assert terminated and reward == 1.0  # the exact-answer score of the refinement
    assert end["prompt"] == prompt and end["completion"] == gold and end["reference"] == gold
    assert end["answer"] == "Answer: 100000" and end["turn"] == "end"


def test_feedback_episodes_rewind_and_pass_the_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("criticgym/Arithmetic-v0", model="tiny", feedback="program")
    check_env(env, skip_render_check=True)  # the wrapper itself: random tokens reach the refinement turn
    sb3_check_env(env, warn=True)
    env.reset(seed=1)
    play(env, ["Answer: 3"])
    state = env.get_wrapper_attr("get_state")()
    first = play(env, ["Answer: 4"])[-1]
    env.get_wrapper_attr("set_state")(state)
    again = play(env, ["Answer: 4"])[-1]
    assert first[1:4] == again[1:4] and first[4]["feedback"] == again[4]["feedback"]
    np.testing.assert_array_equal(first[0]["input_ids"], again[0]["input_ids"])


def test_feedback_needs_a_task_that_has_it_and_a_single_env():
    with pytest.raises(ConfigError, match="feedback prompts"):
        gym.make("criticgym/Words-v0", model="tiny", feedback="program")
    with pytest.raises(ConfigError, match="single env"):
        criticgym.make_vec("criticgym/Arithmetic-v0", num_envs=2, model="tiny", feedback="program")
    with pytest.raises(ConfigError, match=r"'teacher': a feedback is written program .*or model:<model>"):
        gym.make("criticgym/Arithmetic-v0", model="tiny", feedback="teacher")


def test_the_policy_s_own_solver_writes_the_feedback_of_an_episode(tiny):
    from criticgym.selfevolve.loop import Solver

    model, tokenizer = tiny
    probe = gym.make("criticgym/Arithmetic-v0", model=tokenizer)
    solver = Solver(model, tokenizer, probe.unwrapped.task.feedback, max_new_tokens=8, feedback_tokens=6)
    env = gym.make("criticgym/Arithmetic-v0", model=tokenizer, feedback=solver, feedback_tokens=16)
    _, info = env.reset(seed=0)
    *_, (_, reward, _, _, turn) = play(env, ["Answer: 7"])
    assert turn["turn"] == "feedback" and reward == 0.0
    # the episode's feedback is the solver's own critique of that answer, as SELF's rounds write it
    assert turn["feedback"] == solver.feedback([info["prompt"]], ["Answer: 7"])[0]
