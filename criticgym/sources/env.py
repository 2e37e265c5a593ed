"""Play one episode per sub-env of a criticgym vector env with a rollout engine, in this process.

The engine samples one token column per step; the env appends it, decides which episodes end (EOS or the budget)
and pays its rewards. This is the only place where the two meet: the engine's per-step hook steps the env, and
what the env says (step rewards, the info of each episode's last step) is added to the engine's batch.

Example:
    >>> import criticgym
    >>> from criticgym.sources import play
    >>> from criticgym.rollout import RolloutEngine, load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> envs = criticgym.make_vec("criticgym/Words-v0", num_envs=2, model="tiny", autoreset_mode="disabled")
    >>> batch = play(RolloutEngine(model, tokenizer), envs, seed=0)
    >>> sorted(batch.infos[0])[:3]
    ['completion', 'completion_ids', 'extrinsic_reward']
"""

from __future__ import annotations

from typing import Any

import torch

from criticgym.envs.core import draw_prompts
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, RolloutEngine, SamplingParams, left_pad
from criticgym.sources.base import Recorder, check_no_autoreset, reset_prompts, row_seed


def play(
    engine: RolloutEngine,
    envs: Any,
    *,
    sampling: SamplingParams = SamplingParams(),
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    row_seeds: list[int] | None = None,
) -> RolloutBatch:
    """Reset ``envs`` and generate one completion per sub-env, one vector step per token.

    ``sampling``: how tokens are drawn (:class:`~criticgym.rollout.SamplingParams`); ``seed`` also seeds the reset
    (prompt choice) and ``options`` goes to it; ``row_seeds`` (one per sub-env) gives each row a random stream of
    its own instead of one for the batch (:func:`play_rows`). The env decides when each episode ends, with its own
    EOS tokens and budget. The batch carries the step rewards (a reward paid to a row after it ended, as a pairwise
    judge does once the sibling ends, counts as its last token's) and, per row, the info of its last step, updated
    by any info the env reports for that row later (hindsight rewards of a pair).

    The env must be made with ``autoreset_mode="disabled"``, so that a finished sub-env waits for the next reset
    instead of starting a new episode.
    """
    check_no_autoreset(envs)
    encoded = reset_prompts(envs, seed, options)
    prompt_ids, prompt_mask = left_pad(encoded, engine.pad_id, engine.device)
    recorder = Recorder(envs, len(encoded), envs.unwrapped.max_new_tokens)
    batch = engine.run(
        prompt_ids,
        prompt_mask,
        envs.unwrapped.max_new_tokens,
        sampling=sampling,
        seed=seed if row_seeds is None else row_seeds,
        eos_ids=envs.unwrapped.eos_token_ids,
        on_step=recorder.step,
    )
    steps = batch.completion_ids.shape[1]
    rewards = torch.as_tensor(recorder.rewards[:, :steps])
    return batch._replace(rewards=rewards, infos=recorder.infos, env_seconds=recorder.seconds)


def play_rows(
    engine: RolloutEngine,
    envs: Any,
    rows: range,
    batch_size: int,
    *,
    seed: int,
    sampling: SamplingParams = SamplingParams(),
    options: dict[str, Any] | None = None,
) -> RolloutBatch:
    """Play the rows ``rows`` of a batch of ``batch_size`` episodes, one per sub-env of ``envs``.

    Whichever way a batch is split into rows (one process, or shards on several workers), each row comes out the
    same: the batch's prompts are drawn whole, as the env's reset draws them (:func:`~criticgym.envs.draw_prompts`,
    with ``options["group_size"]``), and each row samples from a random stream of its own, seeded by ``seed``
    and the row's number (:func:`~criticgym.sources.row_seed`). ``sampling`` as in :func:`play`.
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
        sampling=sampling,
    )


class EnvRollouts:
    """A :class:`~criticgym.sources.RolloutSource` on a criticgym vector env in this process.

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
        self.perf: dict[str, float] = {}  # nothing timed beyond the batch's own env_seconds

    @property
    def num_envs(self) -> int:
        """Completions per batch (the whole batch, for a shard)."""
        return self.batch_size if self.batch_size is not None else self.envs.num_envs

    def play(
        self,
        engine: RolloutEngine,
        seed: int,
        sampling: SamplingParams = SamplingParams(),
        options: dict[str, Any] | None = None,
    ) -> RolloutBatch:
        """Play one batch (or this shard's rows of it)."""
        if self.rows is None:
            return play(engine, self.envs, seed=seed, sampling=sampling, options=options)
        return play_rows(engine, self.envs, self.rows, self.batch_size, seed=seed, sampling=sampling, options=options)

    def close(self) -> None:
        """Close the env (its reward wrappers stop their threads)."""
        self.envs.close()
