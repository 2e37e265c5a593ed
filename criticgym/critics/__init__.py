"""Everything that judges text: scorers now; span critics, judges and LLM backends as they land."""

from criticgym.critics.scorers import (
    FunctionScorer,
    RougeScorer,
    Scorer,
    SentimentClassifier,
    ToxicityScorer,
    VaderSentiment,
    as_scorer,
    make_scorer,
)

__all__ = [
    "FunctionScorer",
    "RougeScorer",
    "Scorer",
    "SentimentClassifier",
    "ToxicityScorer",
    "VaderSentiment",
    "as_scorer",
    "make_scorer",
]
