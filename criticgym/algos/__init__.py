"""Learners: token-level PPO, REINFORCE/RLOO, GRPO, the stable-baselines3 policy adapter, LoRA adapters.

Each algorithm file holds only its advantages and its update; what every agent shares (the policy, its reference,
the value head, one collect step, the precision) is :mod:`criticgym.algos.base`. :data:`ALGORITHMS` names the ones
``criticgym train --agent`` runs; :func:`register_algorithm` adds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from criticgym.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    """How a training run builds an agent by name.

    Attributes:
        agent: the agent class, or its import path ``"module:Class"`` (imported when a run builds it), called as
            ``agent(model, tokenizer, envs, config, seed=..., precision=...)``.
        options: the :class:`~criticgym.train.TrainConfig` field that holds its config (``--<options>.*``).
        preset: config fields the name fixes (``rloo``: REINFORCE's options with ``baseline="rloo"``).
    """

    agent: Any
    options: str
    preset: dict[str, Any] = field(default_factory=dict)

    def agent_class(self) -> Any:
        """The agent class (imported from its path)."""
        if not isinstance(self.agent, str):
            return self.agent
        import importlib

        module, _, name = self.agent.partition(":")
        return getattr(importlib.import_module(module), name)


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("criticgym.algos.ppo:PPO", "ppo"),
    "reinforce": Algorithm("criticgym.algos.reinforce:Reinforce", "reinforce"),
    "rloo": Algorithm("criticgym.algos.reinforce:Reinforce", "reinforce", {"baseline": "rloo"}),
    "grpo": Algorithm("criticgym.algos.grpo:GRPO", "grpo"),
}
"""The algorithms ``criticgym train --agent`` names."""


def register_algorithm(name: str, agent: Any, options: str, **preset: Any) -> None:
    """Name an algorithm for training runs (``TrainConfig(agent=name)``, ``criticgym train --agent name``).

    ``agent`` is its class (or ``"module:Class"``), ``options`` the ``TrainConfig`` field whose config it takes, and
    ``preset`` the fields of that config the name fixes.
    """
    algorithm = Algorithm(agent, options, preset)
    if ALGORITHMS.get(name, algorithm) != algorithm:
        raise ConfigError(f"A different algorithm is already registered as {name!r}; choose another name.")
    ALGORITHMS[name] = algorithm
