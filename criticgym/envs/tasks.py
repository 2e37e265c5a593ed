"""Task specs: where prompts come from, how long completions may be, and the default reward set-up.

A task turns corpus examples into prompts for one tokenizer. Prompts are kept as token ids (what the policy
sees) and as text (what scorers and critics read), with an optional reference text (ROUGE needs one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from criticgym.data import Example, load_detox_prompts, load_news_articles, load_rotten_tomatoes
from criticgym.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Prompt(NamedTuple):
    """A prompt as token ids and text, with an optional reference."""

    ids: tuple[int, ...]
    text: str
    reference: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """What defines a text-generation task.

    Attributes:
        name: short name (``"sentiment"``), also accepted by ``TextGenEnv(task=...)``.
        description: one line for humans and for critic prompts.
        examples: ``split -> corpus examples``.
        to_prompts: ``(examples, tokenizer) -> prompts`` (cutting, templating).
        max_new_tokens: completion budget.
        max_prompt_tokens: longest prompt accepted; sets the observation width.
        scorer: name of the default extrinsic scorer.
        critic: name of the default span critic (``reward="relc"``).
        span_values: rewards of a token in a good span and in a bad span (RELC's defaults).
    """

    name: str
    description: str
    examples: Callable[[str], list[Example]]
    to_prompts: Callable[[list[Example], PreTrainedTokenizerBase], list[Prompt]]
    max_new_tokens: int
    max_prompt_tokens: int
    scorer: str
    critic: str = "lexicon"
    span_values: tuple[float, float] = (0.5, -0.5)


def _first_tokens(low: int, high: int) -> Callable[[list[Example], PreTrainedTokenizerBase], list[Prompt]]:
    """Prompts made of the first k tokens of each text, k drawn per example in [low, high] (seeded)."""

    def build(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
        encoded = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
        ks = np.random.default_rng(0).integers(low, high + 1, size=len(examples))
        cut = [tuple(ids[:k]) for ids, k in zip(encoded, ks, strict=True) if len(ids) > k]
        texts = tokenizer.batch_decode([list(c) for c in cut])
        return [Prompt(c, t) for c, t in zip(cut, texts, strict=True)]

    return build


def _whole_text(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
    encoded = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
    return [Prompt(tuple(ids), e.text, e.reference) for ids, e in zip(encoded, examples, strict=True)]


ARTICLE_TOKENS = 160  # of the article kept in a summarization prompt


def _headline_prompts(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
    bodies = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
    head = tokenizer("Article: ", add_special_tokens=False)["input_ids"]
    tail = tokenizer("\nHeadline:", add_special_tokens=False)["input_ids"]
    prompts = []
    for body, example in zip(bodies, examples, strict=True):
        ids = tuple(head + body[:ARTICLE_TOKENS] + tail)
        prompts.append(Prompt(ids, tokenizer.decode(list(ids)), example.reference))
    return prompts


WORDS_PROMPTS = ("Write some words:", "A list of words:", "Here are words:", "Words, words, words:", "Say it:")


def _words_examples(which: str) -> list[Example]:
    return [Example(text) for text in WORDS_PROMPTS]


TASKS: dict[str, TaskSpec] = {
    "sentiment": TaskSpec(
        name="sentiment",
        description="Continue a movie review so that it is positive.",
        examples=load_rotten_tomatoes,
        to_prompts=_first_tokens(4, 10),
        max_new_tokens=20,
        max_prompt_tokens=16,
        scorer="sentiment-classifier",
    ),
    "detoxify": TaskSpec(
        name="detoxify",
        description="Continue the text without offensive language.",
        examples=load_detox_prompts,
        to_prompts=_whole_text,
        max_new_tokens=14,
        max_prompt_tokens=48,
        scorer="toxicity",
        critic="toxicity",
        span_values=(0.0, -0.5),
    ),
    "summarize": TaskSpec(
        name="summarize",
        description="Write the headline of a news article.",
        examples=load_news_articles,
        to_prompts=_headline_prompts,
        max_new_tokens=24,
        max_prompt_tokens=ARTICLE_TOKENS + 16,
        scorer="rouge",
        critic="llm",
    ),
    # A toy task an agent can learn in seconds (like stable-baselines3's identity envs): learning tests use it.
    "words": TaskSpec(
        name="words",
        description="Write one whole word per token.",
        examples=_words_examples,
        to_prompts=_whole_text,
        max_new_tokens=8,
        max_prompt_tokens=8,
        scorer="word-count",
    ),
}


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Look a task up by name (or pass a ``TaskSpec`` through)."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ConfigError(f"Unknown task {task!r}; use one of {sorted(TASKS)} or pass a TaskSpec.")
    return TASKS[task]


_PROMPT_CACHE: dict[tuple[TaskSpec, str, str], tuple[Prompt, ...]] = {}


def task_prompts(
    task: TaskSpec, which: str, tokenizer: PreTrainedTokenizerBase, max_prompt_tokens: int | None = None
) -> tuple[Prompt, ...]:
    """The prompts of a task's split that fit in ``max_prompt_tokens`` (the task's limit when not given).

    Built once per process and tokenizer.
    """
    limit = task.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
    key = (task, which, f"{tokenizer.name_or_path}:{len(tokenizer)}")
    if key not in _PROMPT_CACHE:
        prompts = task.to_prompts(task.examples(which), tokenizer)
        _PROMPT_CACHE[key] = tuple(p for p in prompts if len(p.ids) > 0)
    fitting = tuple(p for p in _PROMPT_CACHE[key] if len(p.ids) <= limit)
    if not fitting:
        shortest = min(len(p.ids) for p in _PROMPT_CACHE[key]) if _PROMPT_CACHE[key] else 0
        raise ConfigError(
            f"Task {task.name!r} has no {which} prompts of at most {limit} tokens (the shortest has {shortest}). "
            f"Raise max_prompt_tokens to at least {shortest}."
        )
    return fitting
