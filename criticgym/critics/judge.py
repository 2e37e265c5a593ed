"""AI judges (RLAIF, PAPERS.md section 2): soft pairwise preferences and direct scores from next-token log-probs.

- :class:`PairwiseJudge` writes the four-part labeling prompt (preamble, optional few-shot examples, the sample
  with its two candidates, the ending ``Preferred=``), reads the soft label from the log-probabilities of the two
  option tokens, and labels **both orders** and averages them, which cancels the judge's position bias. An
  optional chain-of-thought mode asks for a rationale first (greedy), then reads the label after it.
- :class:`ScoreJudge` asks for a score and takes the expectation over the score tokens, mapped linearly to
  [-1, 1]. RLAIF scores 1-10; many tokenizers (Llama's, SmolLM2's) split "10" into "1" and "0", so one
  next-token distribution cannot tell 1 from 10. We ask for 0-9 (ten single-digit levels, the same method on a
  shifted scale): reward ``(E[s] - 4.5) / 4.5``.

Both work on any :class:`~criticgym.critics.backends.LLMBackend` (local model or OpenAI-compatible server).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from criticgym.critics.backends import LLMBackend, LocalBackend
from criticgym.errors import ConfigError, CriticGymError

PREAMBLES = {
    "sentiment": "A good continuation of a movie review is positive about the film and reads fluently.",
    "detoxify": "A good continuation of a text is free of insults, profanity and other offensive language.",
    "summarize": "A good headline states the main fact of the article accurately and briefly.",
}


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
        preamble: what "better" means (a task name picks a packaged one).
        examples: optional few-shot examples.
        chain_of_thought: ask for a rationale first (greedy), then read the label after it.
        rationale_tokens: length of the rationale.
    """

    labels = ("1", "2")

    def __init__(
        self,
        backend: LLMBackend | str = "smollm2-135m",
        preamble: str = "sentiment",
        examples: Sequence[Example] = (),
        chain_of_thought: bool = False,
        rationale_tokens: int = 64,
    ) -> None:
        self.backend = LocalBackend(backend) if isinstance(backend, str) else backend
        self.preamble = PREAMBLES.get(preamble, preamble)
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


class ScoreJudge:
    """A direct 0-9 score, as the expectation over the ten digit tokens, mapped to [-1, 1].

    Also a :class:`~criticgym.critics.scorers.Scorer`: ``score`` is ``rate``, so it plugs into the sparse reward.

    Args:
        backend: an LLM backend, or a model name for a local one.
        preamble: what a good text is (a task name picks a packaged one).
    """

    levels = tuple(range(10))

    def __init__(self, backend: LLMBackend | str = "smollm2-135m", preamble: str = "sentiment") -> None:
        self.backend = LocalBackend(backend) if isinstance(backend, str) else backend
        self.preamble = PREAMBLES.get(preamble, preamble)

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
