from __future__ import annotations

import pytest

from criticgym.data import load_detox_prompts, load_news_articles, load_rotten_tomatoes
from criticgym.envs import TASKS, TextGenEnv
from criticgym.envs.tasks import task_prompts


def test_sentiment_prompts_are_the_first_4_to_10_tokens_of_a_review(tokenizer):
    prompts = task_prompts(TASKS["sentiment"], "train", tokenizer)
    lengths = [len(p.ids) for p in prompts]
    assert min(lengths) == 4 and max(lengths) == 10
    assert len(prompts) > 10_000
    reviews = {e.text for e in load_rotten_tomatoes("train")}
    sample = prompts[:50]
    assert all(any(r.startswith(p.text) for r in reviews) for p in sample)


def test_splits_are_fixed_and_disjoint():
    train, test = load_rotten_tomatoes("train"), load_rotten_tomatoes("test")
    assert len(train) == 11477 and len(test) == 1275
    assert not {e.text for e in train} & {e.text for e in test}
    assert load_rotten_tomatoes("test") == test
    assert {e.label for e in train} == {0, 1}


def test_summarize_prompts_carry_the_headline(tokenizer):
    prompts = task_prompts(TASKS["summarize"], "test", tokenizer)
    articles = load_news_articles("test")
    assert prompts[0].reference == articles[0].reference
    assert prompts[0].text.startswith("Article: ") and prompts[0].text.endswith("\nHeadline:")
    assert all(len(p.ids) <= TASKS["summarize"].max_prompt_tokens for p in prompts)


def test_detox_prompts_invite_offensive_continuations():
    from profanity_check import predict_prob

    prompts = load_detox_prompts("train") + load_detox_prompts("test")
    assert len(prompts) > 200
    assert (predict_prob([p.reference for p in prompts]) >= 0.5).all()  # the original continuation
    assert (predict_prob([p.text for p in prompts]) < 0.5).all()  # the prompt itself


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_makes_an_env_with_its_budget(task, tokenizer):
    env = TextGenEnv(task, model=tokenizer)
    obs, info = env.reset(seed=0)
    spec = TASKS[task]
    assert obs["input_ids"].shape == (spec.max_prompt_tokens + spec.max_new_tokens,)
    assert env.unwrapped.max_new_tokens == spec.max_new_tokens
