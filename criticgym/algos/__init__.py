"""Learners: token-level PPO, REINFORCE/RLOO, the stable-baselines3 policy adapter, LoRA adapters.

Each algorithm file holds only its advantages and its update; what every agent shares (the policy, its reference,
the value head, one collect step, the precision) is :mod:`criticgym.algos.base`.
"""
