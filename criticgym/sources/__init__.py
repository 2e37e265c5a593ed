"""Rollout sources: where a learner's batches are played, one room for every way of playing them.

- :func:`play` / :func:`play_rows` and :class:`EnvRollouts` (``env.py``): a criticgym vector env stepped by our
  engine in this process, every row or a shard of them;
- :func:`replay` and :class:`VLLMRollouts` (``vllm.py``): another engine's tokens (vLLM's) stepped through the env;
- :class:`RolloutWorkers` (``workers.py``): shards of the batch played by Ray actors (``criticgym[ray]``).

All of them meet the :class:`RolloutSource` protocol (``base.py``), which an agent takes in place of an env.
"""

from criticgym.sources.base import RolloutSource, row_seed
from criticgym.sources.env import EnvRollouts, play, play_rows
from criticgym.sources.vllm import VLLMRollouts, replay
from criticgym.sources.workers import RolloutWorkers

__all__ = ["EnvRollouts", "RolloutSource", "RolloutWorkers", "VLLMRollouts", "play", "play_rows", "replay", "row_seed"]
