r"""Label-word judges (verbalizers): a question a small model can answer, read from its next-token probabilities.

The model sees a completion-style prompt that ends where a label word comes next, e.g.
``Review: <text>\nSentiment (positive or negative):``, and the score is the log-probability gap of the good label
over the bad one (``" positive"`` over ``" negative"``; several words per class are pooled by log-sum-exp). This is
RLAIF's soft label (read the judge's next-token probabilities) asked in a form a 135M model can answer, where a
chat-style "which is better, 1 or 2?" question is at chance (``benchmarks/results/judges_cpu.md``).

Calibration (the raw gap has a bias of its own):

- ``"none"``: the raw gap;
- ``"content-free"``: minus the gap of a content-free text such as ``"N/A"`` (Zhao et al. 2021);
- ``"centre"``: minus the median gap over unlabeled texts you pass.

:class:`LabelWordScorer` is a scorer (higher is better), so it plugs in wherever a scorer does: the sparse reward,
``ScorerJudge`` for pairwise preferences without position bias (``P(a > b) = sigmoid((gap_a - gap_b) / T)``), and
its ``rate`` (``tanh(gap / 2)``, i.e. ``2 P(good) - 1`` over the two labels) is a direct judge: direct RLAIF's reward
and RAIN's value. :class:`LabelWordCritic` asks the
same question of each clause of a completion, a span critic for RELC (``critic="label"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from string import Template
from typing import Any

import numpy as np

from criticgym.errors import ConfigError
from criticgym.rewards import DEFAULT_MODEL
from criticgym.specs import OpenAIServer

CALIBRATIONS = ("none", "content-free", "centre")


class LabelWordScorer:
    """The log-probability gap of good over bad label words after a task's completion-style prompt.

    Args:
        backend: an LLM backend, a model name, or a ``(model, tokenizer)`` pair (a local backend without a chat
            template: the prompt is plain text).
        words: an object with ``template`` (with ``$text``), ``good`` and ``bad`` (label words, each one token of
            the judge's tokenizer, with their leading space) and ``content_free`` (e.g. a task's
            :class:`~criticgym.envs.tasks.LabelWords`).
        calibration: ``"none"``, ``"content-free"`` or ``"centre"``.
        unlabeled: texts for ``"centre"`` calibration.
        include_prompt: judge the prompt and completion together (the whole text).
        name: a name for reports.
    """

    def __init__(
        self,
        backend: Any = DEFAULT_MODEL,
        words: Any = None,
        calibration: str = "none",
        unlabeled: Sequence[str] = (),
        include_prompt: bool = True,
        name: str | None = None,
    ) -> None:
        from criticgym.critics.backends import make_backend

        if words is None:
            raise ConfigError("A label-word judge needs label words (a task's label_words).")
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"Unknown calibration {calibration!r}; use one of {CALIBRATIONS}.")
        if calibration == "centre" and not unlabeled:
            raise ConfigError("calibration='centre' needs unlabeled texts (unlabeled=[...]) to centre the gap on.")
        if not words.good or not words.bad:
            raise ConfigError("Label words need at least one good and one bad word.")
        self.template = Template(words.template)
        if "text" not in self.template.get_identifiers():
            raise ConfigError(f"The label-word template must contain $text, got {words.template!r}.")
        label = str(backend) if isinstance(backend, str | OpenAIServer) else getattr(backend, "name", None)
        backend = make_backend(backend, chat=False)
        self.backend, self.words, self.calibration = backend, words, calibration
        self.include_prompt = include_prompt
        self.name = name or f"label-words({label or type(backend).__name__}, {calibration})"
        tokenizer = getattr(backend, "tokenizer", None)
        if tokenizer is not None:  # a local backend: check that every label word is one token
            for word in (*words.good, *words.bad):
                ids = tokenizer(word, add_special_tokens=False)["input_ids"]
                if len(ids) != 1:
                    raise ConfigError(
                        f"The label word {word!r} is {len(ids)} tokens for this tokenizer; a label-word judge reads "
                        "one next-token probability per word. Pick single-token words (with their leading space)."
                    )
        self._unlabeled = list(unlabeled)
        self._offset: float | None = None if calibration != "none" else 0.0

    def raw_gaps(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated gaps, ``log P(good) - log P(bad)``, (N,)."""
        prompts = [self.template.safe_substitute(text=t.strip()) for t in texts]
        words = [*self.words.good, *self.words.bad]
        logprobs = np.asarray(self.backend.next_token_logprobs(prompts, words), dtype=np.float64)
        g = len(self.words.good)
        good = np.logaddexp.reduce(logprobs[:, :g], axis=1)
        bad = np.logaddexp.reduce(logprobs[:, g:], axis=1)
        if not (np.isfinite(good) & np.isfinite(bad)).all():
            raise ConfigError(
                "The judge gave no probability to a label word (a server that returns only its top alternatives "
                "may leave them out); use a local backend or ask the server for more top log-probs."
            )
        return good - bad

    @property
    def offset(self) -> float:
        """The calibration offset subtracted from every raw gap (computed once)."""
        if self._offset is None:
            if self.calibration == "content-free":
                self._offset = float(self.raw_gaps([self.words.content_free])[0])
            else:
                self._offset = float(np.median(self.raw_gaps(self._unlabeled)))
        return self._offset

    def score(self, prompts, completions, references=None) -> list[float]:
        """Calibrated gaps (higher is better)."""
        texts = [p + c for p, c in zip(prompts, completions, strict=True)] if self.include_prompt else completions
        return (self.raw_gaps(list(texts)) - self.offset).tolist()

    def rate(self, prompts, completions) -> list[float]:
        """The gap on [-1, 1]: ``tanh(gap / 2) = 2 P(good) - 1`` over the two labels (a direct judge's reward)."""
        return np.tanh(np.asarray(self.score(prompts, completions)) / 2).tolist()


class LabelWordCritic:
    """A span critic from a label-word judge: each clause of a completion is judged alone.

    A clause (text between ``, . ; : ! ?`` and newlines) whose calibrated gap exceeds ``margin`` is a good span,
    one below ``-margin`` a bad span; every clause of the batch is judged in one batched call.

    Args:
        scorer: the label-word judge (its calibration applies; content-free by default in ``critic="label"``).
        margin: the gap, in nats, a clause must clear. With SmolLM2-135M and content-free calibration, neutral
            clauses ("it stars Tom Hanks") land near +0.5 to +1.6 and clearly worded ones near +-1.7 to +2.7.
    """

    def __init__(self, scorer: LabelWordScorer, margin: float = 1.5) -> None:
        self.scorer, self.margin = scorer, float(margin)

    def critique(self, prompts, completions, extrinsic=None) -> list:
        """Clause-level spans for each completion."""
        from criticgym.critics.base import Critique, Span
        from criticgym.critics.lexicon import _CLAUSE

        clauses = [[m.span() for m in _CLAUSE.finditer(c) if m.group().strip()] for c in completions]
        texts = [c[a:b] for c, spans in zip(completions, clauses, strict=True) for a, b in spans]
        gaps = iter((self.scorer.raw_gaps(texts) - self.scorer.offset).tolist() if texts else [])
        out = []
        for spans in clauses:
            located = []
            for (a, b), gap in zip(spans, [next(gaps) for _ in spans], strict=True):
                if abs(gap) > self.margin:
                    located.append(Span(a, b, float(np.tanh(gap / 2)), "positive" if gap > 0 else "negative"))
            out.append(Critique(tuple(located)))
        return out


def __getattr__(name: str) -> Any:
    """``GapEvaluator``, from before #35, kept working with a warning: a label-word scorer's ``rate`` is the value."""
    if name == "GapEvaluator":
        import warnings

        warnings.warn(
            "GapEvaluator(scorer) is now the scorer itself: a search takes its rate; the old name goes in 1.0.",
            DeprecationWarning,
            stacklevel=2,
        )
        return lambda scorer: scorer.rate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
