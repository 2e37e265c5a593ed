"""Reward wrappers, one behaviour each, in single-env and vector versions."""

from criticgym.wrappers.sparse import SparseExtrinsicReward, SparseExtrinsicRewardVector

__all__ = ["SparseExtrinsicReward", "SparseExtrinsicRewardVector"]
