"""Reward wrappers, one behaviour each, in single-env and vector versions that share one core per reward.

The sparse score (and the direct judge's rating, a scorer too) is :func:`~criticgym.wrappers.sparse.score_episodes`;
RELC's span rewards are :class:`~criticgym.wrappers.critic_span.SpanRewarder`; pairwise preferences compare sibling
episodes, so they exist on the vector env only. Which wrapper a reward spec needs is decided in one place,
:func:`criticgym.registration.with_reward`.
"""

from criticgym.wrappers.critic_span import (
    CriticSpanReward,
    CriticSpanRewardVector,
    RewardMix,
    RewardMixVector,
    SpanRewarder,
)
from criticgym.wrappers.preference import DirectJudgeReward, DirectJudgeRewardVector, PairwisePreferenceReward
from criticgym.wrappers.sparse import SparseExtrinsicReward, SparseExtrinsicRewardVector

__all__ = [
    "CriticSpanReward",
    "CriticSpanRewardVector",
    "DirectJudgeReward",
    "DirectJudgeRewardVector",
    "PairwisePreferenceReward",
    "RewardMix",
    "RewardMixVector",
    "SpanRewarder",
    "SparseExtrinsicReward",
    "SparseExtrinsicRewardVector",
]
