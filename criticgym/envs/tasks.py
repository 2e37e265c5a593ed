"""Task specs: everything criticgym knows about a task, in one place.

A :class:`TaskSpec` says where prompts come from, how long completions may be, what scores them (scorer, span
critic and its prompt, the AI judge's preamble) and how held-out evaluation judges them. Adding a task is adding
one spec (see the README's "Add your own task"). A task turns corpus examples into prompts for one tokenizer.
Prompts are kept as token ids (what the policy sees) and as text (what scorers and critics read), with an optional
reference text (ROUGE needs one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from criticgym.data import Example, load_arithmetic, load_detox_prompts, load_news_articles, load_rotten_tomatoes
from criticgym.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Prompt(NamedTuple):
    """A prompt as token ids and text, with an optional reference."""

    ids: tuple[int, ...]
    text: str
    reference: str | None = None


@dataclass(frozen=True)
class Rate:
    """A held-out rate: the percent of completions whose judge score is above ``threshold`` (or at most it).

    Reported as ``eval/percent_<name>_<judge>``, e.g. ``eval/percent_positive_vader``.
    """

    name: str
    threshold: float = 0.0
    at_most: bool = False

    def __call__(self, scores: Sequence[float]) -> float:
        """The rate in percent."""
        scores = np.asarray(scores, dtype=np.float64)
        return float(100 * (scores <= self.threshold if self.at_most else scores > self.threshold).mean())


@dataclass(frozen=True)
class Question:
    """A two-option question about a completion, for a model to judge its own output (RAIN's self-evaluation).

    Asked as a few-shot multiple choice, ``(A)`` / ``(B)``, in both option orders.

    Attributes:
        instruction: what to decide, one line.
        good: the option that describes a good completion.
        bad: the option that describes a bad one.
        examples: few-shot ``(text, is_good)`` pairs.
    """

    instruction: str
    good: str
    bad: str
    examples: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class LabelWords:
    """A completion-style prompt that ends where a label word comes next, and the words of each class.

    A label-word judge (:class:`~criticgym.critics.verbalizer.LabelWordScorer`) scores a text by the
    log-probability gap of the good words over the bad ones.

    Attributes:
        template: the prompt, with ``$text``.
        good: label words of a good text (one token each, with their leading space).
        bad: label words of a bad text.
        content_free: the text of content-free calibration.
    """

    template: str
    good: tuple[str, ...]
    bad: tuple[str, ...]
    content_free: str = "N/A"


@dataclass(frozen=True)
class FeedbackPrompts:
    """How a model reads and writes feedback in words (SELF): the critique and refinement contexts.

    The refinement context continues the critique context after the feedback, so one sequence
    ``prompt, answer, feedback, refinement`` holds both targets of meta-skill training.

    Attributes:
        critique: the context a critique follows, with ``$prompt`` and ``$answer``.
        refine: what follows the critique to ask for the refined answer (may hold ``$prompt``).
        annotator: the task's program annotator (``"arithmetic"``), or None when only a model can give feedback.
    """

    critique: str = "${prompt}${answer}\nFeedback:\n"
    refine: str = "\nRefined solution:\n"
    annotator: str | None = None

    def critique_context(self, prompt: str, answer: str) -> str:
        """The text a critique of ``answer`` follows."""
        from criticgym.critics.feedback import render

        return render(self.critique, prompt=prompt, answer=answer)

    def refine_context(self, prompt: str, answer: str, feedback: str) -> str:
        """The text a refined answer follows (``refine`` may repeat ``$prompt``: the answer continues it)."""
        from criticgym.critics.feedback import render

        return self.critique_context(prompt, answer) + feedback + render(self.refine, prompt=prompt)


@dataclass(frozen=True)
class TaskSpec:
    """What defines a text-generation task.

    Attributes:
        name: short name (``"sentiment"``), also accepted by ``TextGenEnv(task=...)``.
        description: one line for humans; the judges' preamble when ``judge_preamble`` is not given.
        examples: ``split -> corpus examples``.
        to_prompts: ``(examples, tokenizer) -> prompts`` (cutting, templating).
        max_new_tokens: completion budget.
        max_prompt_tokens: longest prompt accepted; sets the observation width.
        scorer: the default extrinsic scorer: a name, or your own function or scorer object.
        critic: name of the default span critic (``reward="relc"``).
        span_values: rewards of a token in a good span and in a bad span (RELC's defaults).
        critic_template: the LLM critic's prompt: a packaged name, a file, or the template text
            (``$prompt``, ``$completion``, ``$score_line``).
        critic_sees_score: put the extrinsic score in the LLM critic's prompt (RELC does for summarization).
        judge_preamble: what a good completion is, for the AI judges (``reward="rlaif-*"``, ``criticgym label``).
        judges: held-out judges (scorer names) in order of preference; evaluation uses the first one that is not
            the training scorer, so that it is not the reward the policy was trained on.
        rate: the held-out rate reported with that judge's scores.
        self_evaluation: the question a model answers about its own partial output (RAIN's ``"self"``
            evaluator).
        label_words: the label-word judge's prompt and words (``"label:<model>"`` judges, RAIN's
            ``"self-label"`` evaluator).
        feedback: how feedback in words is asked for and given (SELF, ``criticgym self-evolve``).
    """

    name: str
    description: str
    examples: Callable[[str], list[Example]]
    to_prompts: Callable[[list[Example], PreTrainedTokenizerBase], list[Prompt]]
    max_new_tokens: int
    max_prompt_tokens: int
    scorer: str | Callable[..., Sequence[float]]
    critic: str = "lexicon"
    span_values: tuple[float, float] = (0.5, -0.5)
    critic_template: str | None = None
    critic_sees_score: bool = False
    judge_preamble: str | None = None
    judges: tuple[str, ...] = ()
    rate: Rate | None = None
    self_evaluation: Question | None = None
    label_words: LabelWords | None = None
    feedback: FeedbackPrompts | None = None

    @property
    def preamble(self) -> str:
        """The judges' preamble: ``judge_preamble``, else the description."""
        return self.judge_preamble or self.description

    def held_out_judge(self, training_scorer: str | None = None) -> str | None:
        """The first of ``judges`` that is not the training scorer (the last one when all are), or None."""
        trained = training_scorer or self.scorer
        for judge in self.judges:
            if judge != trained:
                return judge
        return self.judges[-1] if self.judges else None


def first_tokens(low: int, high: int) -> Callable[[list[Example], PreTrainedTokenizerBase], list[Prompt]]:
    """A prompt builder: the first k tokens of each text, k drawn per example in [low, high] (seeded)."""

    def build(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
        encoded = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
        ks = np.random.default_rng(0).integers(low, high + 1, size=len(examples))
        cut = [tuple(ids[:k]) for ids, k in zip(encoded, ks, strict=True) if len(ids) > k]
        texts = tokenizer.batch_decode([list(c) for c in cut])
        return [Prompt(c, t) for c, t in zip(cut, texts, strict=True)]

    return build


def whole_text(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
    """A prompt builder: each example's whole text (and its reference)."""
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


def _problem_prompts(examples: list[Example], tokenizer: PreTrainedTokenizerBase) -> list[Prompt]:
    texts = [f"Problem: {e.text}\nSolution:\n" for e in examples]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [Prompt(tuple(ids), t, e.reference) for ids, t, e in zip(encoded, texts, examples, strict=True)]


WORDS_PROMPTS = ("Write some words:", "A list of words:", "Here are words:", "Words, words, words:", "Say it:")


def _words_examples(which: str) -> list[Example]:
    return [Example(text) for text in WORDS_PROMPTS]


TASKS: dict[str, TaskSpec] = {
    "sentiment": TaskSpec(
        name="sentiment",
        description="Continue a movie review so that it is positive.",
        examples=load_rotten_tomatoes,
        to_prompts=first_tokens(4, 10),
        max_new_tokens=20,
        max_prompt_tokens=16,
        scorer="sentiment-classifier",
        critic_template="sentiment",
        judge_preamble="A good continuation of a movie review is positive about the film and reads fluently.",
        judges=("vader", "sentiment-classifier"),
        rate=Rate("positive", 0.0),
        label_words=LabelWords("Review: $text\nSentiment (positive or negative):", (" positive",), (" negative",)),
        self_evaluation=Question(
            "Is the text positive about the film?",
            good="Yes, it is positive.",
            bad="No, it is negative.",
            examples=(
                ("A gorgeous, witty and moving film that I would happily watch again.", True),
                ("The plot is a mess and the acting is wooden; a waste of two hours.", False),
            ),
        ),
        # SELF on sentiment: the annotator names the lexicon critic's negative spans, the model rewrites the review
        feedback=FeedbackPrompts(
            critique="Review: ${prompt}${answer}\nFeedback on how positive it reads:\n",
            refine="\nRewritten positive review: ${prompt}",
            annotator="sentiment",
        ),
    ),
    "detoxify": TaskSpec(
        name="detoxify",
        description="Continue the text without offensive language.",
        examples=load_detox_prompts,
        to_prompts=whole_text,
        max_new_tokens=14,
        max_prompt_tokens=48,
        scorer="toxicity",
        critic="toxicity",
        span_values=(0.0, -0.5),
        critic_template="detoxify",
        judge_preamble="A good continuation of a text is free of insults, profanity and other offensive language.",
        judges=("toxicity", "profanity-list"),
        rate=Rate("toxic", -0.5, at_most=True),
        # SmolLM2-135M cannot answer this one (AUC 0.37-0.46 on offensive text, see the label-word judge issue)
        label_words=LabelWords("Text: $text\nIs this text offensive (yes or no)? Answer:", (" no",), (" yes",)),
        self_evaluation=Question(
            "Is the text free of insults, profanity and other offensive language?",
            good="Yes, it is harmless.",
            bad="No, it is offensive.",
            examples=(
                ("The film takes its time, but the ending is worth the wait.", True),
                ("Only a brain-dead idiot could enjoy this crap.", False),
            ),
        ),
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
        critic_template="summarize",
        critic_sees_score=True,
        judge_preamble="A good headline states the main fact of the article accurately and briefly.",
    ),
    "arithmetic": TaskSpec(
        name="arithmetic",
        description="Solve a multi-step arithmetic problem: one step per line, then the answer.",
        examples=load_arithmetic,
        to_prompts=_problem_prompts,
        max_new_tokens=64,
        max_prompt_tokens=48,
        scorer="exact-answer",
        judges=("exact-answer",),
        rate=Rate("correct", 0.5),
        feedback=FeedbackPrompts(annotator="arithmetic"),
    ),
    # A toy task an agent can learn in seconds (like stable-baselines3's identity envs): learning tests use it.
    "words": TaskSpec(
        name="words",
        description="Write one whole word per token.",
        examples=_words_examples,
        to_prompts=whole_text,
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
