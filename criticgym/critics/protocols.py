"""One protocol per role a model or a program plays in judging text. Every wrapper, search and pipeline takes these.

- :class:`Scorer`: text -> one number (sparse rewards, held-out judges). VADER, the classifier, reward models.
  :class:`TokenScorer` also reads the token ids when it says so (``takes_completion_ids``: a TRL-style function).
- :class:`Critic`: text -> good and bad spans (RELC). Lexicon, toxicity, LLM, label-word, random.
- :class:`DirectJudge`: text -> a rating in [-1, 1]: direct RLAIF's reward, and the value an inference-time search
  (RAIN, best-of-N) optimizes on a partial text. ``DigitJudge``, the label-word scorer, ``ScorerValue`` (a scorer
  mapped onto [-1, 1]), ``SelfValue`` (the policy's two-option self-evaluation).
- :class:`PreferenceJudge`: two texts -> P(the first is better) (pairwise RLAIF). ``PairwiseJudge``, label-word
  and scorer judges.
- :class:`FeedbackWriter`: an answer -> feedback in words, and a refined answer (SELF). ``ArithmeticAnnotator``,
  ``ModelFeedback``.
- :class:`LLMBackend`: prompts -> text, or next-token log-probabilities. ``LocalBackend``, ``OpenAIBackend``.

The label-word mechanism (:class:`~criticgym.critics.verbalizer.LabelWordScorer`: the log-probability gap of a
task's two label words) is one scorer, and its ``rate`` a direct judge; the span critic and the pairwise judge are
built on it. The three text -> number roles stay apart for what their numbers mean: a scorer's score is in its own
units (the task's score, a gap in nats), a direct judge's rating in [-1, 1], a preference a probability.

Each protocol is ``runtime_checkable``: a wrapper checks what it is given with ``isinstance`` and says which
method is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from criticgym.errors import ConfigError, name_of

if TYPE_CHECKING:
    import numpy as np

    from criticgym.critics.base import Critique


@runtime_checkable
class Scorer(Protocol):
    """A batched sequence-level reward."""

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str | None] | None = None
    ) -> list[float]:
        """One float per (prompt, completion) pair; higher is better."""
        ...


@runtime_checkable
class TokenScorer(Scorer, Protocol):
    """A scorer that may also read the generated token ids (a TRL-style function asking for ``completion_ids``).

    :func:`~criticgym.critics.scorers.score_texts` hands them over where ``takes_completion_ids`` is true and the
    caller has them (an env, a rollout).
    """

    takes_completion_ids: bool

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[str | None] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """One float per (prompt, completion) pair; ``completion_ids``: each completion's token ids."""
        ...


@runtime_checkable
class Critic(Protocol):
    """A batched span critic."""

    def critique(
        self, prompts: Sequence[str], completions: Sequence[str], extrinsic: Sequence[float] | None = None
    ) -> list[Critique]:
        """One :class:`~criticgym.critics.base.Critique` per completion."""
        ...


@runtime_checkable
class DirectJudge(Protocol):
    """Rates each completion (whole, or a search's partial one) on its own."""

    def rate(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One rating in [-1, 1] per completion; higher is better."""
        ...


@runtime_checkable
class PreferenceJudge(Protocol):
    """Compares two completions of one prompt."""

    def prefer(self, prompts: Sequence[str], completions_a: Sequence[str], completions_b: Sequence[str]) -> list[float]:
        """P(a is better than b) per pair, in [0, 1]."""
        ...


@runtime_checkable
class FeedbackWriter(Protocol):
    """Writes feedback in words on answers, and refines answers after feedback."""

    def feedback(
        self, prompts: Sequence[str], answers: Sequence[str], references: Sequence[str | None] | None = None
    ) -> list[str]:
        """Feedback on each answer, ending in a judgement line (``critique`` is a span critic's method)."""
        ...

    def refine(
        self,
        prompts: Sequence[str],
        answers: Sequence[str],
        feedbacks: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[str]:
        """An improved answer for each (answer, feedback)."""
        ...


@runtime_checkable
class LLMBackend(Protocol):
    """What critics and judges need from a language model."""

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 128) -> list[str]:
        """Greedy completion of each prompt."""
        ...

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """(N, C) log-probabilities of each candidate as the next token (-inf when unavailable)."""
        ...


def check_role(obj: object, role: type, purpose: str) -> None:
    """Raise a :class:`~criticgym.errors.ConfigError` naming the missing methods when ``obj`` cannot play ``role``."""
    if isinstance(obj, role):
        return
    wanted = [n for n in ("score", "critique", "rate", "prefer", "feedback", "refine", "generate") if hasattr(role, n)]
    raise ConfigError(
        f"{purpose} needs a {role.__name__} (with {', '.join(wanted)}); {name_of(obj)} has no such method."
    )


def __getattr__(name: str) -> object:
    """``ValueFunction``, merged into :class:`DirectJudge` in #35, kept importable with a warning until 1.0."""
    if name == "ValueFunction":
        import warnings

        warnings.warn(
            "ValueFunction is now DirectJudge (a search's value is a rating: rate(prompts, completions)); "
            "the old name goes in 1.0.",
            DeprecationWarning,
            stacklevel=2,
        )
        return DirectJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
