"""criticgym: text generation as Gymnasium environments, trained with AI feedback.

``import criticgym`` registers the environment ids and stays light: torch and transformers are imported
only where they are used.
"""

from __future__ import annotations

from typing import Any

from criticgym.errors import (
    ConfigError,
    CriticGymError,
    InvalidActionError,
    MissingDependencyError,
    PromptTooLongError,
    UnknownEnvError,
    UnknownModelError,
)
from criticgym.registration import ENV_IDS, make, make_vec, register_envs, register_task

__version__ = "0.1.0"

register_envs()

_LAZY = {
    "RolloutEngine": "criticgym.rollout.engine",
    "RolloutBatch": "criticgym.rollout.engine",
    "load_policy": "criticgym.rollout.models",
    "load_tokenizer": "criticgym.rollout.models",
    "TextGenEnv": "criticgym.envs",
    "TextGenVectorEnv": "criticgym.envs",
    "TaskSpec": "criticgym.envs",
    "Rate": "criticgym.envs",
    "Prompt": "criticgym.envs",
    "play": "criticgym.envs",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'criticgym' has no attribute {name!r}")


__all__ = [
    "ENV_IDS",
    "ConfigError",
    "CriticGymError",
    "InvalidActionError",
    "MissingDependencyError",
    "Prompt",
    "PromptTooLongError",
    "Rate",
    "RolloutBatch",
    "RolloutEngine",
    "TaskSpec",
    "TextGenEnv",
    "TextGenVectorEnv",
    "UnknownEnvError",
    "UnknownModelError",
    "load_policy",
    "load_tokenizer",
    "make",
    "make_vec",
    "play",
    "register_envs",
    "register_task",
]
