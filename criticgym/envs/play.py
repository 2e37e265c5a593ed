"""Play one episode per sub-env of a criticgym vector env with a rollout engine.

The engine samples one token column per step; the env appends it, decides which episodes end (EOS or the budget)
and pays its rewards. This is the only place where the two meet: the engine's per-step hook steps the env, and
what the env says (step rewards, the info of each episode's last step) is added to the engine's batch.

Example:
    >>> import criticgym
    >>> from criticgym.envs import play
    >>> from criticgym.rollout import RolloutEngine, load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> envs = criticgym.make_vec("criticgym/Words-v0", num_envs=2, model="tiny", autoreset_mode="disabled")
    >>> batch = play(RolloutEngine(model, tokenizer), envs, seed=0)
    >>> sorted(batch.infos[0])[:3]
    ['completion', 'completion_ids', 'extrinsic_reward']
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from criticgym import flops
from criticgym.envs.core import draw_prompts
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, RolloutEngine, left_pad


def play(
    engine: RolloutEngine,
    envs: Any,
    *,
    min_new_tokens: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    row_seeds: list[int] | None = None,
) -> RolloutBatch:
    """Reset ``envs`` and generate one completion per sub-env, one vector step per token.

    Sampling options as in :meth:`RolloutEngine.generate`; ``seed`` also seeds the reset (prompt choice) and
    ``options`` goes to it; ``row_seeds`` (one per sub-env) gives each row a random stream of its own instead of
    one for the batch (:func:`play_rows`). The env decides when each episode ends, with its own EOS tokens and
    budget. The batch carries the step rewards (a reward paid to a row after it ended, as a pairwise judge does
    once the sibling ends, counts as its last token's) and, per row, the info of its last step, updated by any info
    the env reports for that row later (hindsight rewards of a pair).

    The env must be made with ``autoreset_mode="disabled"``, so that a finished sub-env waits for the next reset
    instead of starting a new episode.
    """
    check_no_autoreset(envs)
    encoded = reset_prompts(envs, seed, options)
    prompt_ids, prompt_mask = left_pad(encoded, engine.pad_id, engine.device)
    recorder = _Recorder(envs, len(encoded), envs.unwrapped.max_new_tokens)
    batch = engine.run(
        prompt_ids,
        prompt_mask,
        envs.unwrapped.max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        seed=seed if row_seeds is None else row_seeds,
        eos_ids=envs.unwrapped.eos_token_ids,
        on_step=recorder.step,
    )
    steps = batch.completion_ids.shape[1]
    rewards = torch.as_tensor(recorder.rewards[:, :steps])
    return batch._replace(rewards=rewards, infos=recorder.infos, env_seconds=recorder.seconds)


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


def play_rows(
    engine: RolloutEngine,
    envs: Any,
    rows: range,
    batch_size: int,
    *,
    seed: int,
    options: dict[str, Any] | None = None,
    **sampling: Any,
) -> RolloutBatch:
    """Play the rows ``rows`` of a batch of ``batch_size`` episodes, one per sub-env of ``envs``.

    Whichever way a batch is split into rows (one process, or shards on several workers), each row comes out the
    same: the batch's prompts are drawn whole, as the env's reset draws them (:func:`~criticgym.envs.draw_prompts`,
    with ``options["group_size"]``), and each row samples from a random stream of its own, seeded by ``seed``
    and the row's number (:func:`row_seed`). Sampling options as in :func:`play`.
    """
    from gymnasium.utils.seeding import np_random

    group = (options or {}).get("group_size", 1)
    if len(rows) != envs.num_envs or rows.start < 0 or rows.stop > batch_size:
        raise ConfigError(f"Rows {rows} of a batch of {batch_size} need a vector env of {len(rows)} sub-envs.")
    if rows.start % group or len(rows) % group:
        raise ConfigError(f"Rows {rows} split a group of {group} completions of one prompt; shard by whole groups.")
    rng, _ = np_random(seed)
    indices = draw_prompts(rng, len(envs.unwrapped.episodes.prompts), batch_size, group)[rows.start : rows.stop]
    other = {key: value for key, value in (options or {}).items() if key != "group_size"}
    return play(
        engine,
        envs,
        seed=seed,
        options={**other, "prompt_index": indices},
        row_seeds=[row_seed(seed, row) for row in rows],
        **sampling,
    )


@runtime_checkable
class RolloutSource(Protocol):
    """Where a learner's batches are played: it is given one, and never knows how the rows are played.

    ``num_envs`` is the number of completions in a batch; ``play`` samples a batch with ``engine`` (the learner's
    policy, reference model and value head), seeded by ``seed``, with the sampling options of :func:`play`.
    :class:`EnvRollouts` plays on a vector env in this process (all rows, or a shard of them);
    :class:`~criticgym.distributed.workers.RolloutWorkers` on Ray actors.
    """

    num_envs: int

    def play(self, engine: RolloutEngine, seed: int, **sampling: Any) -> RolloutBatch:
        """One batch, played with ``engine``."""
        ...


class EnvRollouts:
    """A :class:`RolloutSource` on a criticgym vector env in this process.

    Args:
        envs: a vector env made with ``autoreset_mode="disabled"``.
        rows: play only these rows of each batch (a shard, :func:`play_rows`), with ``batch_size`` the whole batch;
            None plays every row with one random stream for the batch (:func:`play`).
        batch_size: the whole batch, with ``rows``.
    """

    def __init__(self, envs: Any, rows: range | None = None, batch_size: int | None = None) -> None:
        if (rows is None) != (batch_size is None):
            raise ConfigError("A shard of a batch needs both rows and batch_size.")
        self.envs, self.rows, self.batch_size = envs, rows, batch_size

    @property
    def num_envs(self) -> int:
        """Completions per batch (the whole batch, for a shard)."""
        return self.batch_size if self.batch_size is not None else self.envs.num_envs

    def play(self, engine: RolloutEngine, seed: int, **sampling: Any) -> RolloutBatch:
        """Play one batch (or this shard's rows of it)."""
        if self.rows is None:
            return play(engine, self.envs, seed=seed, **sampling)
        return play_rows(engine, self.envs, self.rows, self.batch_size, seed=seed, **sampling)

    def close(self) -> None:
        """Close the env (its reward wrappers stop their threads)."""
        self.envs.close()


def row_seed(seed: int, row: int) -> int:
    """The seed of row ``row``'s random stream in a batch seeded by ``seed``."""
    return int(np.random.SeedSequence([seed, row]).generate_state(1)[0])


class _Recorder:
    """The engine's step hook: steps the env with each column and keeps what it says."""

    def __init__(self, envs: Any, batch_size: int, max_new_tokens: int) -> None:
        self.envs = envs
        self.rewards = np.zeros((batch_size, max_new_tokens), dtype=np.float32)
        self.infos: list[dict[str, Any]] = [{} for _ in range(batch_size)]
        self.lengths = np.zeros(batch_size, dtype=np.int64)
        self.seconds = 0.0

    def step(self, t: int, tokens: torch.Tensor, active: torch.Tensor) -> np.ndarray:
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
