"""Values: a rating in [-1, 1] of a (partial) completion, as inference-time search needs (RAIN, best-of-N).

A search's value is a :class:`~criticgym.critics.protocols.DirectJudge`: ``rate(prompts, completions)``, so any
direct judge (a ``DigitJudge``, a label-word scorer) is one as it is. (Held-out evaluation is
:class:`criticgym.train.evaluate.Evaluator`; the command line names a search's value ``--evaluator``.)


- :class:`ScorerValue`: any scorer (toxicity, VADER, the sentiment classifier, a reward model, a function),
  its score mapped linearly from its range onto [-1, 1].
- :class:`SelfValue`: the policy model judges its own text. A few-shot two-option question (a task's
  ``self_evaluation``) is asked in both option orders, and the answer is read from the next-token probabilities
  of the option letters. ``soft=False`` is RAIN's rule: each order votes for the option it finds more likely, and
  v = +1 (both say good), 0 (they disagree) or -1. ``soft=True`` averages the probability of the good option over
  the two orders: ``v = 2 p - 1``. The question's few-shot prefix is run once and its KV cache reused, and both
  orders go through the model as one batch of two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from criticgym.critics.protocols import DirectJudge, Scorer
from criticgym.errors import ConfigError
from criticgym.specs import FORMS, LabelJudge, Policy, SelfQuestion, parse_value


class ScorerValue:
    """A scorer's score mapped from ``score_range`` onto [-1, 1] (clipped).

    Args:
        scorer: a scorer name, a :class:`~criticgym.critics.scorers.Scorer` or a function.
        score_range: the scorer's range (a built-in scorer's by default, else (-1, 1)).
    """

    def __init__(self, scorer: Any, score_range: tuple[float, float] | None = None) -> None:
        from criticgym.critics.scorers import SCORE_RANGES, as_scorer

        self.name = scorer if isinstance(scorer, str) else getattr(scorer, "__name__", type(scorer).__name__)
        self.scorer = as_scorer(scorer)
        low, high = score_range or SCORE_RANGES.get(scorer if isinstance(scorer, str) else "", (-1.0, 1.0))
        if not high > low:
            raise ConfigError(f"score_range must be (low, high) with high > low, got {(low, high)}.")
        self.low, self.high = float(low), float(high)

    def rate(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Values in [-1, 1]."""
        from criticgym.critics.scorers import score_texts

        scores = np.asarray(score_texts(self.scorer, list(prompts), list(completions)), dtype=np.float64)
        return np.clip(2 * (scores - self.low) / (self.high - self.low) - 1, -1, 1).tolist()


class FunctionValue:
    """A function ``(prompts, completions) -> values`` (called positionally) as a search's value, clipped to [-1, 1]."""

    def __init__(self, function: Callable[[list[str], list[str]], Sequence[float]]) -> None:
        self.function, self.name = function, getattr(function, "__name__", type(function).__name__)

    def rate(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The function's values, clipped to [-1, 1]."""
        return np.clip(np.asarray(self.function(list(prompts), list(completions)), dtype=np.float64), -1, 1).tolist()


class SelfValue:
    """The model answers a two-option question about its own text, in both option orders.

    Args:
        model: the policy (or any causal LM).
        tokenizer: its tokenizer.
        question: an object with ``instruction``, ``good``, ``bad`` and ``examples`` (``(text, is_good)`` pairs),
            e.g. a task's :class:`~criticgym.envs.tasks.Question`.
        soft: average the good option's probability (else RAIN's majority of the two orders' votes).
        include_prompt: show the prompt with the completion (the text is judged as a whole).
    """

    letters = (" A", " B")

    def __init__(self, model, tokenizer, question: Any, soft: bool = False, include_prompt: bool = True) -> None:
        from criticgym.rollout import Decoder

        self.tokenizer, self.question, self.soft, self.include_prompt = tokenizer, question, soft, include_prompt
        self.option_ids = []
        for letter in self.letters:
            ids = tokenizer(letter, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ConfigError(
                    f"The option {letter!r} is {len(ids)} tokens for this tokenizer; self-evaluation reads one "
                    "next-token probability per option. Use a tokenizer where ' A' and ' B' are single tokens."
                )
            self.option_ids.append(ids[0])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.decoder = Decoder(model, pad)
        prefix = tokenizer(self.prefix(), add_special_tokens=False)["input_ids"]
        self.prefix_state = self.decoder.prefill([prefix]).repeat(2)  # the two orders share it, rewound after use
        self.forward_tokens = len(prefix)

    def prefix(self) -> str:
        """The instruction and the few-shot examples, whose answers alternate A, B, A, ... (no letter is favoured)."""
        q = self.question
        parts = [q.instruction, ""]
        for i, (text, is_good) in enumerate(q.examples):
            answer_a = i % 2 == 0
            good_first = is_good == answer_a  # the right option sits at A for even examples, at B for odd ones
            parts += [self._block(text, good_first), f"Answer: {'A' if answer_a else 'B'}", ""]
        return "\n".join(parts) + "\n"

    def _block(self, text: str, good_first: bool) -> str:
        q = self.question
        first, second = (q.good, q.bad) if good_first else (q.bad, q.good)
        return f"Text: {text.strip()}\nOptions:\n(A) {first}\n(B) {second}"

    def probabilities(self, text: str) -> tuple[float, float]:
        """P(good) from the question with the good option first, and with it second (each over the two letters)."""
        suffixes = [self._block(text, good_first) + "\nAnswer:" for good_first in (True, False)]
        encoded = [self.tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes]
        width = max(len(e) for e in encoded)
        chunk = torch.full((2, width), self.decoder.pad_id, dtype=torch.long)
        real = torch.zeros((2, width), dtype=torch.long)
        for row, ids in enumerate(encoded):  # padding at the start of each chunk: the last position is real
            chunk[row, width - len(ids) :] = torch.as_tensor(ids)
            real[row, width - len(ids) :] = 1
        with torch.no_grad():
            logits = self.decoder.extend(self.prefix_state, chunk, real).logits
        self.prefix_state.rewind()
        self.forward_tokens += int(real.sum())
        pair = torch.log_softmax(logits[:, self.option_ids].float(), dim=-1).exp()  # (2, [A, B])
        return float(pair[0, 0]), float(pair[1, 1])

    def rate(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Values in [-1, 1]: {-1, 0, 1} by the two orders' votes, or ``2 p - 1`` with ``soft``."""
        values = []
        for prompt, completion in zip(prompts, completions, strict=True):
            p_first, p_second = self.probabilities(prompt + completion if self.include_prompt else completion)
            if self.soft:
                values.append(p_first + p_second - 1.0)
            else:
                values.append(float((p_first > 0.5) + (p_second > 0.5) - 1))
        return values


def make_value(
    name: str | Callable | Any, model=None, tokenizer=None, question: Any = None, label_words: Any = None
) -> DirectJudge:
    """A search's value (a :class:`~criticgym.critics.protocols.DirectJudge`) from a name, a typed value or an object.

    The name is read by :func:`criticgym.specs.parse_value`. :class:`~criticgym.specs.SelfQuestion` (``"self"`` /
    ``"self-soft"``) needs the model, its tokenizer and a question; a :class:`~criticgym.specs.LabelJudge`
    (``"self-label"``: the policy's label-word gap, content-free calibrated; ``"label:<model>"``) the task's label
    words, and the model and its tokenizer when it is the policy's (its value is the scorer's ``rate``,
    ``tanh(gap / 2)``); any other name is a scorer's. A direct judge is used as it is; a scorer is mapped onto
    [-1, 1] (:class:`ScorerValue`), a function ``(prompts, completions) -> values`` clipped to it
    (:class:`FunctionValue`).
    """
    spec = parse_value(name)
    if isinstance(spec, SelfQuestion):
        if model is None or tokenizer is None or question is None:
            raise ConfigError(f"The {str(spec)!r} value needs the model, its tokenizer and the task's question.")
        return SelfValue(model, tokenizer, question, soft=spec.soft)
    if isinstance(spec, LabelJudge):
        from criticgym.critics.verbalizer import LabelWordScorer

        policy = isinstance(spec.model, Policy)
        if label_words is None or (policy and (model is None or tokenizer is None)):
            needs = "the model, its tokenizer and " if policy else ""
            raise ConfigError(f"The {str(name)!r} value needs {needs}the task's label words.")
        backend = (model, tokenizer) if policy else spec.model
        return LabelWordScorer(backend, label_words, calibration=spec.calibration, name=str(name))
    if isinstance(spec, DirectJudge):
        return spec
    if isinstance(spec, str | Scorer):
        return ScorerValue(spec)
    if callable(spec):
        return FunctionValue(spec)
    raise ConfigError(
        f"A search's value is a name ({FORMS['search value']}), a direct judge (rate), a scorer (score) or a function "
        f"(prompts, completions) -> values; got {type(spec).__name__}."
    )


_RENAMED = {"make_evaluator": "make_value", "ScorerEvaluator": "ScorerValue", "SelfEvaluator": "SelfValue"}


def __getattr__(name: str) -> Any:
    """The names from before #35, kept working with a warning.

    "Evaluator" is held-out evaluation (:class:`criticgym.train.evaluate.Evaluator`); what a search optimizes is a
    value.
    """
    if name in _RENAMED:
        import warnings

        warnings.warn(
            f"criticgym.search.values.{name} is now {_RENAMED[name]}; the old name goes in 1.0.",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
