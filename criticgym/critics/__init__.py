"""Everything that judges text: scorers (one number per text), span critics, AI judges, LLM backends.

The role each plays is a protocol in :mod:`criticgym.critics.protocols`.
"""

from criticgym.critics.backends import BackendError, LocalBackend, OpenAIBackend, make_backend
from criticgym.critics.base import Critique, FunctionCritic, Span, as_critic
from criticgym.critics.judge import DigitJudge, PairwiseJudge, ScorerJudge, evaluate_judge, make_judge
from criticgym.critics.lexicon import LexiconCritic, ToxicityCritic
from criticgym.critics.llm import LLMCritic, load_template
from criticgym.critics.protocols import (
    Critic,
    DirectJudge,
    FeedbackWriter,
    LLMBackend,
    PreferenceJudge,
    Scorer,
    TokenScorer,
)
from criticgym.critics.random import RandomCritic
from criticgym.critics.reward_model import RewardModel, RewardModelScorer, soft_label_loss
from criticgym.critics.scorers import (
    FunctionScorer,
    RougeScorer,
    SentimentClassifier,
    ToxicityScorer,
    VaderSentiment,
    as_scorer,
    make_scorer,
)

__all__ = [
    "BackendError",
    "Critic",
    "Critique",
    "DigitJudge",
    "DirectJudge",
    "FeedbackWriter",
    "FunctionCritic",
    "FunctionScorer",
    "LLMBackend",
    "LLMCritic",
    "LexiconCritic",
    "LocalBackend",
    "OpenAIBackend",
    "PairwiseJudge",
    "PreferenceJudge",
    "RandomCritic",
    "RewardModel",
    "RewardModelScorer",
    "RougeScorer",
    "Scorer",
    "ScorerJudge",
    "SentimentClassifier",
    "Span",
    "ToxicityCritic",
    "TokenScorer",
    "ToxicityScorer",
    "VaderSentiment",
    "as_critic",
    "as_scorer",
    "evaluate_judge",
    "load_template",
    "make_backend",
    "make_judge",
    "make_scorer",
    "soft_label_loss",
]


def __getattr__(name: str) -> object:
    """``ValueFunction`` (now :class:`DirectJudge`), with the warning of :mod:`criticgym.critics.protocols`."""
    if name == "ValueFunction":
        from criticgym.critics import protocols

        return protocols.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
