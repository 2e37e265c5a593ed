from __future__ import annotations

import numpy as np
import pytest

from criticgym.critics.scorers import ExactAnswer
from criticgym.data.arithmetic import (
    LEVELS,
    Step,
    load_arithmetic,
    make_problem,
    parse_answer,
    parse_steps,
    problem_of,
)
from criticgym.errors import ConfigError


def test_problems_are_exact_chains_within_range_at_every_level():
    rng = np.random.default_rng(0)
    for level in LEVELS:
        for _ in range(200):
            problem = make_problem(rng, level)
            assert len(problem.steps) == level and problem.question.startswith(f"Start with {problem.steps[0].left}")
            for before, step in zip(problem.steps[:-1], problem.steps[1:], strict=True):
                assert step.left == before.result  # a chain
            for step in problem.steps:
                assert step.result == step.true_result and 0 <= step.result <= 999
                assert step.op != "/" or step.left % step.right == 0
    with pytest.raises(ConfigError, match="level"):
        make_problem(rng, 5)


def test_splits_are_fixed_disjoint_and_parse_back():
    train, test = load_arithmetic("train"), load_arithmetic("test")
    assert (len(train), len(test)) == (4000, 400)
    assert not {e.text for e in train} & {e.text for e in test}
    assert [e.label for e in test[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    for example in test[:50]:
        problem = problem_of(example)
        assert problem.solution == example.reference and parse_answer(example.reference) == problem.answer
    assert load_arithmetic("test")[0] == test[0]  # the same problems on every call and machine
    with pytest.raises(ConfigError, match="split"):
        load_arithmetic("validation")


def test_parsing_reads_steps_and_the_last_answer():
    text = "3 x 4 = 12\n12 - 2 = 10\nThe answer is 10. Answer: 11"
    assert parse_steps(text) == [Step(3, "*", 4, 12), Step(12, "-", 2, 10)]
    assert parse_answer(text) == 11 and parse_answer("no number here") is None
    scores = ExactAnswer().score(["", "", ""], ["Answer: 10", "10", "answer: 10"], ["Answer: 10"] * 3)
    assert scores == [1.0, 0.0, 1.0]


def test_the_arithmetic_env_passes_the_checkers_and_scores_the_gold_answer():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    env = gym.make("criticgym/Arithmetic-v0", model="tiny")
    check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=0)
    assert info["prompt"].startswith("Problem: Start with ") and info["prompt"].endswith("\nSolution:\n")
    tokenizer = env.unwrapped.tokenizer
    gold = env.unwrapped.episodes.prompt[0].reference
    reward = 0.0
    for token in tokenizer(gold, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]:
        _, reward, terminated, truncated, _ = env.step(token)
    assert terminated and reward == 1.0
