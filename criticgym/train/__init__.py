"""Training runs: settings, what they build, the driver, held-out evaluation, the files a run writes.

- :mod:`~criticgym.train.config`: :class:`TrainConfig` (every ``criticgym train`` option) and how two runs differ;
- :mod:`~criticgym.train.build`: the policy, the agent and its rollout source, judges, critic pools, the evaluator;
- :mod:`~criticgym.train.driver`: :func:`train` (resumable) and the command line's parser;
- :mod:`~criticgym.train.evaluate`: held-out evaluation; :mod:`~criticgym.train.report`: CSV, samples, curves.
"""

from criticgym.train.build import build_agent, build_evaluator, build_policy, check_model
from criticgym.train.config import TrainConfig, config_changes, env_kwargs, relevant
from criticgym.train.driver import config_from_args, resume_state, train

__all__ = [
    "TrainConfig",
    "build_agent",
    "build_evaluator",
    "build_policy",
    "check_model",
    "config_changes",
    "config_from_args",
    "env_kwargs",
    "relevant",
    "resume_state",
    "train",
]
