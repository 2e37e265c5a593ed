"""AI judges (RLAIF, Lee et al. 2023): soft pairwise preferences and direct scores from next-token log-probs.

- :class:`PairwiseJudge` writes the four-part labeling prompt (preamble, optional few-shot examples, the sample
  with its two candidates, the ending ``Preferred=``), reads the soft label from the log-probabilities of the two
  option tokens, and labels **both orders** and averages them, which cancels the judge's position bias. An
  optional chain-of-thought mode asks for a rationale first (greedy), then reads the label after it.
- :class:`DigitJudge` asks for a score and takes the expectation over the score tokens, mapped linearly to
  [-1, 1]. RLAIF scores 1-10; many tokenizers (Llama's, SmolLM2's) split "10" into "1" and "0", so one
  next-token distribution cannot tell 1 from 10. We ask for 0-9 (ten single-digit levels, the same method on a
  shifted scale): reward ``(E[s] - 4.5) / 4.5``.

Both work on any :class:`~criticgym.critics.backends.LLMBackend` (local model or OpenAI-compatible server).
:class:`ScorerJudge` turns a scorer into a pairwise judge (the baseline an LLM judge should beat), and
:func:`evaluate_judge` measures a judge on pairs with known labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from criticgym.critics.backends import make_backend
from criticgym.critics.protocols import LLMBackend
from criticgym.critics.verbalizer import LabelWordScorer
from criticgym.errors import ConfigError, CriticGymError
from criticgym.rewards import DEFAULT_MODEL
from criticgym.specs import LabelJudge, OpenAIServer, Policy, ScorerPreference, parse_judge

GENERIC_PREAMBLE = "A good continuation of a text is fluent, relevant and well written."
"""The judges' default; a task's own preamble lives in its TaskSpec (``judge_preamble``)."""


@dataclass(frozen=True)
class Example:
    """A few-shot example for the pairwise prompt: a context, two candidates and the preferred one (1 or 2)."""

    context: str
    first: str
    second: str
    preferred: int


def soft_label(logprob_first: np.ndarray, logprob_second: np.ndarray) -> np.ndarray:
    """P(option 1) = softmax over the two option tokens' log-probabilities."""
    high = np.maximum(logprob_first, logprob_second)
    a, b = np.exp(logprob_first - high), np.exp(logprob_second - high)
    return a / (a + b)


def swap_average(p_first_ab: np.ndarray, p_first_ba: np.ndarray) -> np.ndarray:
    """P(a better than b) from both orders: ``(P(1 | a, b) + (1 - P(1 | b, a))) / 2``."""
    return (np.asarray(p_first_ab) + 1.0 - np.asarray(p_first_ba)) / 2.0


def both_orders(judge, prompts, completions_a, completions_b) -> tuple[np.ndarray, np.ndarray]:
    """A preference judge's P(first is better) with a first and with b first, for position-bias statistics.

    A judge that labels both orders at once (``prefer_both_orders``, the label-word judges) is asked once; any other
    :class:`~criticgym.critics.protocols.PreferenceJudge` is asked ``prefer`` in each order.

        >>> class Longer:  # prefers the longer completion, whatever the order
        ...     def prefer(self, prompts, a, b):
        ...         return [float(len(x) > len(y)) for x, y in zip(a, b)]
        >>> [p.tolist() for p in both_orders(Longer(), ["p"], ["long one"], ["short"])]
        [[1.0], [0.0]]
    """
    if hasattr(judge, "prefer_both_orders"):
        p_ab, p_ba = judge.prefer_both_orders(prompts, completions_a, completions_b)
    else:
        p_ab = judge.prefer(prompts, completions_a, completions_b)
        p_ba = judge.prefer(prompts, completions_b, completions_a)
    return np.asarray(p_ab, dtype=np.float64), np.asarray(p_ba, dtype=np.float64)


def expected_score(logprobs: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """The expected score under the (renormalized) distribution over the score tokens, (N, K) -> (N,)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if not np.isfinite(logprobs).any(axis=1).all():
        raise CriticGymError("The judge gave no probability to any score token; check the template's ending.")
    weights = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ np.asarray(levels, dtype=np.float64)


class PairwiseJudge:
    """Soft preference between two completions of the same prompt, both orders averaged.

    Args:
        backend: an LLM backend, or a model name for a local one.
        preamble: what "better" means (a task's ``TaskSpec.judge_preamble``; a generic one by default).
        examples: optional few-shot examples.
        chain_of_thought: ask for a rationale first (greedy), then read the label after it.
        rationale_tokens: length of the rationale.
    """

    labels = ("1", "2")

    def __init__(
        self,
        backend: LLMBackend | str = DEFAULT_MODEL,
        preamble: str = GENERIC_PREAMBLE,
        examples: Sequence[Example] = (),
        chain_of_thought: bool = False,
        rationale_tokens: int = 64,
    ) -> None:
        self.backend = make_backend(backend)
        self.name = str(backend) if isinstance(backend, str | OpenAIServer) else type(backend).__name__
        self.preamble = preamble
        self.examples = tuple(examples)
        if any(e.preferred not in (1, 2) for e in self.examples):
            raise ConfigError("A few-shot example's preferred option must be 1 or 2.")
        self.chain_of_thought = chain_of_thought
        self.rationale_tokens = rationale_tokens

    def build_prompt(self, context: str, first: str, second: str) -> str:
        """The four-part prompt, up to (not including) the ending."""
        parts = [self.preamble, ""]
        for e in self.examples:
            parts += [
                f"Text: {e.context}",
                f"Option 1: {e.first}",
                f"Option 2: {e.second}",
                f"Preferred={e.preferred}",
                "",
            ]
        parts += [f"Text: {context}", f"Option 1: {first}", f"Option 2: {second}"]
        return "\n".join(parts)

    def p_first(self, contexts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> np.ndarray:
        """P(option 1 is better) for one order, (N,)."""
        prompts = [self.build_prompt(c, a, b) for c, a, b in zip(contexts, firsts, seconds, strict=True)]
        if self.chain_of_thought:
            asks = [p + "\nExplain which option is better, in one or two sentences.\nRationale:" for p in prompts]
            rationales = self.backend.generate(asks, max_new_tokens=self.rationale_tokens)
            prompts = [a + " " + r.strip() for a, r in zip(asks, rationales, strict=True)]
        logprobs = np.asarray(self.backend.next_token_logprobs([p + "\nPreferred=" for p in prompts], self.labels))
        if not np.isfinite(logprobs).any(axis=1).all():
            raise CriticGymError("The judge gave no probability to '1' or '2'; check the preamble and the backend.")
        return soft_label(logprobs[:, 0], logprobs[:, 1])

    def prefer_both_orders(self, prompts, completions_a, completions_b) -> tuple[np.ndarray, np.ndarray]:
        """P(1) with a first, and P(1) with b first (both orders labelled in one backend call)."""
        n = len(prompts)
        both = self.p_first(
            list(prompts) * 2, list(completions_a) + list(completions_b), list(completions_b) + list(completions_a)
        )
        return both[:n], both[n:]

    def prefer(self, prompts, completions_a, completions_b) -> list[float]:
        """Soft probability that a is better than b, both orders averaged."""
        return swap_average(*self.prefer_both_orders(prompts, completions_a, completions_b)).tolist()


class DigitJudge:
    """A direct 0-9 score, as the expectation over the ten digit tokens, mapped to [-1, 1].

    Also a :class:`~criticgym.critics.scorers.Scorer`: ``score`` is ``rate``, so it plugs into the sparse reward.

    Args:
        backend: an LLM backend, or a model name for a local one.
        preamble: what a good text is (a task's ``TaskSpec.judge_preamble``; a generic one by default).
    """

    levels = tuple(range(10))

    def __init__(self, backend: LLMBackend | str = DEFAULT_MODEL, preamble: str = GENERIC_PREAMBLE) -> None:
        self.backend = make_backend(backend)
        self.preamble = preamble

    def build_prompt(self, context: str, completion: str) -> str:
        """The scoring prompt, ending where the digit is read."""
        return (
            f"{self.preamble}\nRate the text from 0 (worst) to 9 (best). Answer with one digit.\n\n"
            f"Text: {context}{completion}\nScore (0-9):"
        )

    def expected(self, prompts, completions) -> np.ndarray:
        """Expected score in [0, 9]."""
        queries = [self.build_prompt(p, c) for p, c in zip(prompts, completions, strict=True)]
        logprobs = self.backend.next_token_logprobs(queries, [str(level) for level in self.levels])
        return expected_score(logprobs, self.levels)

    def rate(self, prompts, completions) -> list[float]:
        """Direct score mapped linearly to [-1, 1]."""
        return ((self.expected(prompts, completions) - 4.5) / 4.5).tolist()

    def score(self, prompts, completions, references=None) -> list[float]:
        """The scorer protocol: :meth:`rate`."""
        return self.rate(prompts, completions)


class ScorerJudge:
    """A pairwise judge made from a scorer: ``P(a better) = sigmoid((score(a) - score(b)) / temperature)``.

    The baseline an LLM judge should beat (e.g. ``ScorerJudge(VaderSentiment())``, the lexicon judge). It is
    symmetric, so it has no position bias by construction.
    """

    def __init__(self, scorer: Any, temperature: float = 0.1, name: str | None = None) -> None:
        from criticgym.critics.scorers import as_scorer

        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}.")
        self.scorer, self.temperature = as_scorer(scorer), float(temperature)
        self.name = name or type(self.scorer).__name__

    def prefer_both_orders(self, prompts, completions_a, completions_b) -> tuple[np.ndarray, np.ndarray]:
        """P(1) with a first, and P(1) with b first."""
        n = len(prompts)
        scores = np.asarray(
            self.scorer.score(list(prompts) * 2, list(completions_a) + list(completions_b)), dtype=np.float64
        )
        p = 1.0 / (1.0 + np.exp(-(scores[:n] - scores[n:]) / self.temperature))
        return p, 1.0 - p

    def prefer(self, prompts, completions_a, completions_b) -> list[float]:
        """Soft probability that a is better than b."""
        return swap_average(*self.prefer_both_orders(prompts, completions_a, completions_b)).tolist()


def make_judge(
    name: str | Any, preamble: str = GENERIC_PREAMBLE, label_words: Any = None, pairwise: bool = True
) -> Any:
    """A judge from its name or typed value (:func:`criticgym.specs.parse_judge`): pairwise or direct.

    A :class:`~criticgym.specs.LabelJudge` (``"label:<model>"``, ``"label-content-free:<model>"``) is a judge on that
    model's label-word gap (a task's ``label_words``, temperature 1); a :class:`~criticgym.specs.ScorerPreference`
    (``"lexicon"``: VADER) or a scorer name a pairwise :class:`ScorerJudge`; any other model a :class:`PairwiseJudge`
    (or, direct, a :class:`DigitJudge`) with ``preamble`` (a task's ``TaskSpec.judge_preamble``). A judge object is
    returned as it is.
    """
    from criticgym.critics.scorers import SCORERS, make_scorer

    spec = parse_judge(name)
    if isinstance(spec, LabelJudge):
        return label_word_judge(spec, label_words, pairwise=pairwise)
    if isinstance(spec, str) and spec in SCORERS:
        spec = ScorerPreference(spec)
    if isinstance(spec, ScorerPreference):
        if not pairwise:
            raise ConfigError(
                f"{str(name)!r} is a scorer, and a scorer's score is already a direct reward: use the sparse reward "
                f"with scorer={spec.scorer!r} (or a model, label:<model> or label:self as the direct judge)."
            )
        return ScorerJudge(make_scorer(spec.scorer), name=str(name))
    if isinstance(spec, str | OpenAIServer | tuple):
        return (PairwiseJudge if pairwise else DigitJudge)(spec, preamble=preamble)
    if isinstance(spec, Policy):
        make_backend(spec)  # the error that says where the policy is known
    return spec


def evaluate_judge(judge: Any, pairs: int = 200, seed: int = 0, context: str = "A short review of a film") -> dict:
    """Judge quality on pairs with a known answer: a fresh and a rotten Rotten Tomatoes review (test split).

    The judge should prefer the fresh (positive) one under the sentiment preamble. Reports, over ``pairs``
    pairs (which review comes first is random):

    - ``agreement``: the swap-averaged verdict prefers the fresh review (ties count one half), with a 95% Wilson
      interval; ``agreement_one_order``: the same from the first order alone.
    - ``position_bias_rate``: the same *position* wins in both orders (``prefers_first`` + ``prefers_second``).
    - ``consistency``: the same *review* wins in both orders (MT-Bench's consistency).
    - ``mean_p_fresh``: the average soft label of the fresh review.
    """
    import time

    from criticgym.utils.stats import wilson

    good, bad, fresh_first = _known_pairs(pairs, seed)
    a = [g if f else b for g, b, f in zip(good, bad, fresh_first, strict=True)]
    b = [b if f else g for g, b, f in zip(good, bad, fresh_first, strict=True)]
    start = time.perf_counter()
    p_ab, p_ba = both_orders(judge, [context] * pairs, a, b)
    seconds = time.perf_counter() - start
    p_fresh = np.where(fresh_first, swap_average(p_ab, p_ba), 1.0 - swap_average(p_ab, p_ba))
    p_fresh_one = np.where(fresh_first, p_ab, 1.0 - p_ab)

    def correct(p: np.ndarray) -> float:  # a tie (within rounding) counts one half
        tie = np.isclose(p, 0.5, rtol=0.0, atol=1e-9)
        return float(np.mean(np.where(tie, 0.5, p > 0.5)))

    agreement = correct(p_fresh)
    low, high = wilson(agreement * pairs, pairs)
    auc = _auc(judge.scorer, context, good, bad) if isinstance(judge, ScorerJudge) else None
    first_wins = (p_ab > 0.5) & (p_ba > 0.5)
    second_wins = (p_ab < 0.5) & (p_ba < 0.5)
    same_review = ((p_ab > 0.5) & (p_ba < 0.5)) | ((p_ab < 0.5) & (p_ba > 0.5))
    return {
        "judge": getattr(judge, "name", None) or type(judge).__name__,
        "pairs": pairs,
        "agreement": agreement,
        "agreement_ci95": [low, high],
        "agreement_one_order": correct(p_fresh_one),
        "position_bias_rate": float(np.mean(first_wins | second_wins)),
        "prefers_first": float(np.mean(first_wins)),
        "prefers_second": float(np.mean(second_wins)),
        "consistency": float(np.mean(same_review)),
        "mean_p_fresh": float(np.mean(p_fresh)),
        "auc": auc,
        "seconds": seconds,
    }


def _known_pairs(pairs: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """``pairs`` fresh and rotten test reviews (seeded), and which pairs show the fresh one first."""
    from criticgym.data import load_rotten_tomatoes

    test = load_rotten_tomatoes("test")
    fresh = [e.text for e in test if e.label == 1]
    rotten = [e.text for e in test if e.label == 0]
    if pairs < 1 or pairs > min(len(fresh), len(rotten)):
        raise ConfigError(f"pairs must be between 1 and {min(len(fresh), len(rotten))}, got {pairs}.")
    rng = np.random.default_rng(seed)
    good = [fresh[i] for i in rng.choice(len(fresh), pairs, replace=False)]
    bad = [rotten[i] for i in rng.choice(len(rotten), pairs, replace=False)]
    return good, bad, rng.random(pairs) < 0.5


def _auc(scorer, context: str, good: list[str], bad: list[str]) -> float:
    """How often a scorer ranks a fresh review above a rotten one (ties half): a scorer judge's single-text skill."""
    s_good = np.asarray(scorer.score([context] * len(good), good), dtype=np.float64)
    s_bad = np.asarray(scorer.score([context] * len(bad), bad), dtype=np.float64)
    return float(np.mean((s_good[:, None] > s_bad[None, :]) + 0.5 * (s_good[:, None] == s_bad[None, :])))


def label_word_judge(judge: LabelJudge | str, words: Any, pairwise: bool, backend: Any = None) -> Any:
    """The judge a :class:`~criticgym.specs.LabelJudge` (or its string form, ``"label...:<model>"``) asks for.

    The scorer (direct rewards use its ``rate``), or with ``pairwise`` a :class:`ScorerJudge` on it. ``backend``
    replaces the judge's model (the policy, for ``label:self``).
    """
    spec = parse_judge(judge)
    if not isinstance(spec, LabelJudge):
        raise ConfigError(f"{judge!r} is not a label-word judge; use label:<model> or label-content-free:<model>.")
    name = str(spec)
    scorer = LabelWordScorer(backend if backend is not None else spec.model, words, spec.calibration, name=name)
    return ScorerJudge(scorer, temperature=1.0, name=name) if pairwise else scorer
