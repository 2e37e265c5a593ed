"""Offline span critics: word valences (VADER) and offensive language (alt-profanity-check)."""

from __future__ import annotations

import re
from functools import lru_cache

from criticgym.critics.base import Critique, Span
from criticgym.errors import require

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_CLAUSE = re.compile(r"[^,.;:!?\n]+")


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, float], frozenset[str]]:
    """VADER's word valences and negation words (loaded once)."""
    vader = require("vaderSentiment.vaderSentiment", "vaderSentiment==3.3.2", "The lexicon critic")
    return vader.SentimentIntensityAnalyzer().lexicon, frozenset(vader.NEGATE)


class LexiconCritic:
    """Marks words with a strong VADER valence: positive words as good spans, negative words as bad ones.

    A word right after a negation ("not", "never", "didn't", ...) flips its sign. Deterministic and fast
    (about 20 us per completion): the offline stand-in for an LLM critic on sentiment tasks.

    Args:
        min_valence: smallest absolute VADER valence (the lexicon spans -4..4) that makes a span.

    Example:
        >>> (c,) = LexiconCritic().critique([""], ["a wonderful cast, not good, awful plot"])
        >>> [(s.label, "a wonderful cast, not good, awful plot"[s.start:s.end]) for s in c.spans]
        [('positive', 'wonderful'), ('negative', 'good'), ('negative', 'awful')]
    """

    def __init__(self, min_valence: float = 1.0) -> None:
        self.min_valence = float(min_valence)

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        """Word-level spans for each completion."""
        lexicon, negations = _lexicon()
        out = []
        for completion in completions:
            spans, previous = [], ""
            for match in _WORD.finditer(completion):
                word = match.group().lower()
                valence = lexicon.get(word, 0.0)
                if abs(valence) >= self.min_valence:
                    if previous in negations or previous.endswith("n't"):
                        valence = -valence
                    label = "positive" if valence > 0 else "negative"
                    spans.append(Span(match.start(), match.end(), valence / 4.0, label))
                previous = word
            out.append(Critique(tuple(spans)))
        return out


class ToxicityCritic:
    """Marks offensive words, and offensive clauses with no offensive word, as bad spans.

    Every word and every clause of the batch is scored in one ``alt-profanity-check`` call.

    Args:
        threshold: offensive-language probability from which a word or clause is marked.

    Example:
        >>> (c,) = ToxicityCritic().critique([""], ["what a stupid idea, honestly"])
        >>> ["what a stupid idea, honestly"[s.start:s.end] for s in c.spans]
        ['stupid']
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)

    def critique(self, prompts, completions, extrinsic=None) -> list[Critique]:
        """Offensive spans for each completion."""
        module = require("profanity_check", "alt-profanity-check==1.9.1", "The toxicity critic")
        words = [[m.span() for m in _WORD.finditer(c)] for c in completions]
        clauses = [[m.span() for m in _CLAUSE.finditer(c) if m.group().strip()] for c in completions]
        texts = [c[a:b] for c, spans in zip(completions, words, strict=True) for a, b in spans]
        texts += [c[a:b] for c, spans in zip(completions, clauses, strict=True) for a, b in spans]
        probs = iter(module.predict_prob(texts) if texts else [])
        word_probs = [[next(probs) for _ in spans] for spans in words]
        clause_probs = [[next(probs) for _ in spans] for spans in clauses]
        out = []
        for w_spans, w_probs, c_spans, c_probs in zip(words, word_probs, clauses, clause_probs, strict=True):
            marked = [
                Span(a, b, -float(p), "toxic")
                for (a, b), p in zip(w_spans, w_probs, strict=True)
                if p >= self.threshold
            ]
            for (a, b), p in zip(c_spans, c_probs, strict=True):
                if p >= self.threshold and not any(a <= s.start and s.end <= b for s in marked):
                    marked.append(Span(a, b, -float(p), "toxic"))
            out.append(Critique(tuple(sorted(marked, key=lambda s: s.start))))
        return out


__all__ = ["LexiconCritic", "ToxicityCritic"]
