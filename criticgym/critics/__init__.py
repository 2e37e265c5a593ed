"""Everything that judges text: scorers (one number per text), span critics, AI judges, LLM backends."""

from criticgym.critics.backends import BackendError, LLMBackend, LocalBackend, OpenAIBackend, make_backend
from criticgym.critics.base import Critic, Critique, FunctionCritic, Span, as_critic
from criticgym.critics.judge import PairwiseJudge, ScoreJudge, ScorerJudge, evaluate_judge, make_judge
from criticgym.critics.lexicon import LexiconCritic, ToxicityCritic
from criticgym.critics.llm import LLMCritic, load_template
from criticgym.critics.random import RandomCritic
from criticgym.critics.reward_model import RewardModel, RewardModelScorer, soft_label_loss
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
    "BackendError",
    "Critic",
    "Critique",
    "FunctionCritic",
    "FunctionScorer",
    "LLMBackend",
    "LLMCritic",
    "LexiconCritic",
    "LocalBackend",
    "OpenAIBackend",
    "PairwiseJudge",
    "RandomCritic",
    "RewardModel",
    "RewardModelScorer",
    "RougeScorer",
    "ScoreJudge",
    "ScorerJudge",
    "Scorer",
    "SentimentClassifier",
    "Span",
    "ToxicityCritic",
    "ToxicityScorer",
    "VaderSentiment",
    "as_critic",
    "as_scorer",
    "evaluate_judge",
    "load_template",
    "make_judge",
    "make_backend",
    "make_scorer",
    "soft_label_loss",
]
