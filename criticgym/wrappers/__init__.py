"""Reward wrappers, one behaviour each, in single-env and vector versions."""

from criticgym.wrappers.critic_span import (
    CriticSpanReward,
    CriticSpanRewardVector,
    RewardMix,
    RewardMixVector,
    SpanRewarder,
)
from criticgym.wrappers.preference import AIPreferenceReward, AIPreferenceRewardVector, PairwisePreferenceReward
from criticgym.wrappers.sparse import SparseExtrinsicReward, SparseExtrinsicRewardVector

__all__ = [
    "AIPreferenceReward",
    "AIPreferenceRewardVector",
    "CriticSpanReward",
    "CriticSpanRewardVector",
    "RewardMix",
    "RewardMixVector",
    "PairwisePreferenceReward",
    "SpanRewarder",
    "SparseExtrinsicReward",
    "SparseExtrinsicRewardVector",
]
