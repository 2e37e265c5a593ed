"""The Gymnasium ids criticgym registers, and the factories behind them.

``gym.make(id, reward=..., scorer=...)`` chooses the reward set-up:

- ``reward="sparse"`` (default): the task's scorer (or ``scorer=``) paid at the last token.
- ``reward=None``: no reward at all (every step pays 0), for users who add their own wrappers.

Any other keyword goes to :class:`~criticgym.envs.TextGenEnv` (``model``, ``split``, ``max_new_tokens``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from criticgym.errors import ConfigError, UnknownEnvError

ENV_IDS = {
    "criticgym/SentimentControl-v0": "sentiment",
    "criticgym/Detoxify-v0": "detoxify",
    "criticgym/Summarize-v0": "summarize",
}
REWARDS = ("sparse", None)

ScorerLike = str | Callable[..., Sequence[float]] | Any


def _check_reward(reward: str | None) -> None:
    if reward not in REWARDS:
        raise ConfigError(f"Unknown reward set-up {reward!r}; use one of {list(REWARDS)}.")


def make_env(task: str, reward: str | None = "sparse", scorer: ScorerLike = None, **kwargs: Any) -> gym.Env:
    """Build a single env with its reward wrappers (the entry point of every registered id)."""
    from criticgym.envs import TextGenEnv, get_task
    from criticgym.wrappers import SparseExtrinsicReward

    _check_reward(reward)
    env: gym.Env = TextGenEnv(task, **kwargs)
    if reward == "sparse":
        env = SparseExtrinsicReward(env, scorer if scorer is not None else get_task(task).scorer)
    return env


def make_vector_env(
    task: str, num_envs: int = 1, reward: str | None = "sparse", scorer: ScorerLike = None, **kwargs: Any
) -> gym.vector.VectorEnv:
    """Build the native vector env with its reward wrappers (the vector entry point of every registered id)."""
    from criticgym.envs import TextGenVectorEnv, get_task
    from criticgym.wrappers import SparseExtrinsicRewardVector

    _check_reward(reward)
    envs: gym.vector.VectorEnv = TextGenVectorEnv(num_envs, task, **kwargs)
    if reward == "sparse":
        envs = SparseExtrinsicRewardVector(envs, scorer if scorer is not None else get_task(task).scorer)
    return envs


def register_envs() -> None:
    """Register every criticgym id with Gymnasium (idempotent)."""
    for env_id, task in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="criticgym.registration:make_env",
            vector_entry_point="criticgym.registration:make_vector_env",
            kwargs={"task": task},
            disable_env_checker=False,
        )


def _check_id(env_id: str) -> None:
    if env_id not in ENV_IDS:
        raise UnknownEnvError(f"Unknown environment id {env_id!r}; criticgym registers {sorted(ENV_IDS)}.")


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` for criticgym ids, with an error that lists the valid ids."""
    _check_id(env_id)
    return gym.make(env_id, **kwargs)


def make_vec(env_id: str, num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv:
    """``gym.make_vec`` for criticgym ids (always the native vector env), with an error that lists the valid ids."""
    _check_id(env_id)
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)
