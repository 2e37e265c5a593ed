"""What every rollout source shares: the protocol, the env's reset and the step hook that records what the env says.

A rollout source is where a learner's batches are played (:class:`RolloutSource`): in this process on a vector env
(:class:`~criticgym.sources.env.EnvRollouts`), with another engine's tokens replayed through it
(:class:`~criticgym.sources.vllm.VLLMRollouts`), or on Ray actors (:class:`~criticgym.sources.workers.RolloutWorkers`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from criticgym import flops
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, RolloutEngine, SamplingParams


@runtime_checkable
class RolloutSource(Protocol):
    """Where a learner's batches are played: it is given one, and never knows how the rows are played.

    ``num_envs`` is the number of completions in a batch; ``play`` samples a batch with ``engine`` (the learner's
    policy, reference model and value head), seeded by ``seed``, drawn as ``sampling`` says, with the reset's
    ``options`` (``group_size``: k completions of each prompt); ``perf`` holds the timings of the source's own
    stages in the last batch (``perf/*`` chart names: vLLM's weight sync and sampling; empty where it has none).
    """

    num_envs: int
    perf: dict[str, float]

    def play(
        self,
        engine: RolloutEngine,
        seed: int,
        sampling: SamplingParams = SamplingParams(),
        options: dict[str, Any] | None = None,
    ) -> RolloutBatch:
        """One batch, played with ``engine``."""
        ...


def reset_prompts(envs: Any, seed: int | None, options: dict[str, Any] | None) -> list[list[int]]:
    """Reset ``envs`` and return each sub-env's prompt as a token-id list (its observation without the padding)."""
    obs, _ = envs.reset(seed=seed, options=options)
    ids, lengths = obs["input_ids"], obs["attention_mask"].sum(axis=1)
    return [ids[row, : lengths[row]].tolist() for row in range(len(ids))]


def check_no_autoreset(envs: Any) -> None:
    """Raise unless ``envs`` was made with ``autoreset_mode="disabled"`` (one completion per sub-env and batch)."""
    from gymnasium.vector import AutoresetMode

    if envs.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ConfigError(
            "A batch is exactly one completion per sub-env and needs a vector env that does not "
            "autoreset. Make it with gym.make_vec(env_id, num_envs=N, autoreset_mode='disabled')."
        )


def row_seed(seed: int, row: int) -> int:
    """The seed of row ``row``'s random stream in a batch seeded by ``seed``."""
    return int(np.random.SeedSequence([seed, row]).generate_state(1)[0])


class Recorder:
    """The engine's step hook: steps the env with each column and keeps what it says."""

    def __init__(self, envs: Any, batch_size: int, max_new_tokens: int) -> None:
        self.envs = envs
        self.rewards = np.zeros((batch_size, max_new_tokens), dtype=np.float32)
        self.infos: list[dict[str, Any]] = [{} for _ in range(batch_size)]
        self.lengths = np.zeros(batch_size, dtype=np.int64)
        self.seconds = 0.0

    def step(self, t: int, tokens: torch.Tensor, active: torch.Tensor) -> np.ndarray:
        """Step the env with column ``t`` of the batch's tokens; which rows ended (the engine's ``on_step``)."""
        running = active.cpu().numpy()
        start = time.perf_counter()
        with flops.phase("reward"):
            _, reward, terminated, truncated, info = self.envs.step(tokens.cpu().numpy())
        self.seconds += time.perf_counter() - start
        reward = np.asarray(reward)
        self.lengths += running
        self.rewards[running, t] = reward[running]
        late = np.flatnonzero(~running & (reward != 0))
        self.rewards[late, self.lengths[late] - 1] += reward[late]
        ended = np.logical_or(terminated, truncated)
        reported = _reported_rows(info, len(running))
        for row in np.flatnonzero(ended | (~running & reported)):
            self.infos[row].update(_row_info(info, row))
        return ended


def _reported_rows(info: dict[str, Any], n: int) -> np.ndarray:
    """Rows for which a Gymnasium vector info dict holds at least one entry (its ``_key`` masks)."""
    rows = np.zeros(n, dtype=bool)
    for key, value in info.items():
        if key.startswith("_") and isinstance(value, np.ndarray) and value.dtype == bool:
            rows |= value
    return rows


def _row_info(info: dict[str, Any], row: int) -> dict[str, Any]:
    """One sub-env's entries of a Gymnasium vector info dict (keys with a ``_key`` mask set for that row)."""
    out = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        present = info.get(f"_{key}")
        if present is None or present[row]:
            out[key] = _row_info(value, row) if isinstance(value, dict) else value[row]
    return out
