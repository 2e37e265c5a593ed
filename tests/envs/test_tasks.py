from __future__ import annotations

from dataclasses import replace

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


def test_a_task_spec_is_the_one_place_a_new_task_lives(tokenizer):
    import criticgym
    from criticgym.critics import Critique
    from criticgym.data import Example
    from criticgym.envs import Rate, TaskSpec, get_task
    from criticgym.envs.tasks import whole_text
    from criticgym.errors import ConfigError
    from criticgym.registration import ENV_IDS, make_critic

    questions = {"train": ["Name a colour:", "Name a fruit:"], "test": ["Name an animal:"]}
    spec = TaskSpec(
        name="short-answers",
        description="Answer in a word.",
        examples=lambda split: [Example(q) for q in questions[split]],
        to_prompts=whole_text,
        max_new_tokens=4,
        max_prompt_tokens=8,
        scorer=lambda prompts, completions: [-float(len(c.split())) for c in completions],
        critic_template="Text: $prompt$completion\nIdentified Negative Text Span:",
        judge_preamble="A good answer is one word.",
        judges=("word-count",),
        rate=Rate("short", -1.5),
    )
    try:
        env_id = criticgym.register_task(spec)
        assert env_id == "criticgym/ShortAnswers-v0" and criticgym.register_task(spec) == env_id  # idempotent
        env = criticgym.make(env_id, model=tokenizer, split="test")
        obs, info = env.reset(seed=0)
        assert info["prompt"] == "Name an animal:"
        for _ in range(4):
            _, reward, terminated, truncated, info = env.step(tokenizer.encode(" cat")[0])
        assert truncated and reward == pytest.approx(-4.0)  # the task's own scorer: four words
        # the LLM critic reads the task's template text (and ends by asking for negative spans)
        critic = make_critic("llm", "short-answers", tokenizer, critic_model="tiny")
        assert critic.build_prompt("Q:", " A").endswith("Text: Q: A\nIdentified Negative Text Span:")
        assert critic.default_sign == -1 and isinstance(critic.read("None", " A"), Critique)
        assert spec.preamble == "A good answer is one word." and spec.held_out_judge() == "word-count"
        assert spec.rate([-1.0, -2.0]) == 50.0
        with pytest.raises(ConfigError, match="already registered"):
            criticgym.register_task(replace(spec, description="another"))
    finally:
        TASKS.pop("short-answers", None)
        ENV_IDS.pop("criticgym/ShortAnswers-v0", None)
    assert get_task("sentiment").held_out_judge() == "vader"
    assert get_task("sentiment").held_out_judge("vader") == "sentiment-classifier"  # never the training scorer
    assert get_task("detoxify").held_out_judge() == "profanity-list"  # a word list, not the training model
