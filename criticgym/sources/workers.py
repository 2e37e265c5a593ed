"""Rollout workers as Ray actors: ``criticgym train --workers N`` (``pip install criticgym[ray]``).

:class:`RolloutWorkers` is a rollout source (:class:`~criticgym.sources.RolloutSource`) that a learner is given; the
learner keeps the only optimizer and the checkpoints and never knows its batch is played elsewhere. Each of the N
workers holds what ``make(rows, batch_size)`` builds in its process: an engine (the engine of an
:class:`~criticgym.algos.actor.Actor` built from the run's config: a policy copy, with the reference model and the
value head where the learner has them, and no optimizer), a rollout source for its rows of the batch (an
:class:`~criticgym.sources.EnvRollouts` shard) and the precision of its forward passes. Per batch:

1. the learner's trainable weights go into Ray's object store once: the parameters that train (the adapter only,
   with LoRA; frozen layers never travel) and the value head;
2. every worker loads them and plays its rows (:func:`~criticgym.sources.play_rows`): the batch's prompts are drawn
   whole and each row samples from its own random stream, so a row comes out the same whichever worker plays it;
3. the shards are joined in row order (:func:`~criticgym.rollout.join_batches`), the FLOPs the workers counted are
   added here, and the learner updates as usual.

So N workers give, for the same seed, the batch that one process playing ``play_rows`` over all rows gives (the
test compares them). A worker that dies is rebuilt by the same ``make`` and plays the same rows again with the
same weights and seed (:class:`~criticgym.distributed.actors.Actors`); the learner holds all the state, so no
completed iteration is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from criticgym import flops
from criticgym.distributed.actors import Actors, init_ray
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, RolloutEngine, SamplingParams, join_batches
from criticgym.utils.training import autocast

Make = Callable[[range, int], tuple[RolloutEngine, Any, str]]
"""``make(rows, batch_size) -> (engine, rollout source of those rows, precision)``, called in the worker's process."""


def trainable_state(engine: RolloutEngine) -> dict[str, Any]:
    """What a worker needs to sample as the learner does: the policy's trainable parameters and the value head (CPU)."""
    policy = {name: p.detach().cpu() for name, p in engine.model.named_parameters() if p.requires_grad}
    head = engine.value_head.state_dict() if engine.value_head is not None else None
    return {"policy": policy, "value_head": head}


def load_trainable_state(engine: RolloutEngine, state: dict[str, Any]) -> None:
    """Load :func:`trainable_state` into an engine built the same way."""
    result = engine.model.load_state_dict(state["policy"], strict=False)
    if result.unexpected_keys:
        raise ConfigError(
            f"The learner's weights do not fit this worker's model: {result.unexpected_keys[:3]} ... Build both from "
            "the same run config."
        )
    if engine.value_head is not None:
        engine.value_head.load_state_dict(state["value_head"])


class RolloutWorker:
    """One worker (the body of a Ray actor): plays rows ``rows`` of every batch of ``batch_size``.

    Args:
        make: builds the worker's engine, rollout source and precision (see :data:`Make`).
        rows: this worker's rows.
        batch_size: the whole batch.
    """

    def __init__(self, make: Make, rows: range, batch_size: int) -> None:
        self.engine, self.rollouts, self.precision = make(rows, batch_size)

    def play(
        self, state: dict[str, Any], seed: int, sampling: SamplingParams, options: dict[str, Any] | None = None
    ) -> tuple[RolloutBatch, dict]:
        """Load the learner's weights and play this worker's rows of the batch seeded ``seed``; the batch, its FLOPs."""
        load_trainable_state(self.engine, state)
        flops.take()
        with flops.phase("policy"), autocast(self.precision, self.engine.device):
            batch = self.rollouts.play(self.engine, seed, sampling, options)
        return batch.to("cpu"), flops.take()


class RolloutWorkers:
    """N rollout workers that play a learner's batches of ``batch_size`` (a :class:`~criticgym.sources.RolloutSource`).

    Args:
        make: builds each worker's engine and rollout source in its process (picklable; see :data:`Make`).
        batch_size: completions per batch, a multiple of ``workers`` (with RLOO or pairwise judges, each worker's
            share a multiple of the group size).
        workers: how many.
        gpus: GPUs per worker (a fraction shares one).
        address: the Ray cluster to join (None: the running one, else a new local one).
        restarts: how many dead workers may be replaced in all.
    """

    def __init__(
        self,
        make: Make,
        batch_size: int,
        workers: int,
        gpus: float = 0.0,
        address: str | None = None,
        restarts: int = 3,
    ) -> None:
        ray = init_ray(address)
        if workers < 1 or batch_size % workers:
            raise ConfigError(f"num_envs ({batch_size}) must be a positive multiple of workers ({workers}).")
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < workers:
            raise ConfigError(f"{workers} workers need {workers} CPUs; the Ray cluster has {cpus:g}. Lower --workers.")
        have = ray.cluster_resources().get("GPU", 0)
        if gpus * workers > have + 1e-9:
            raise ConfigError(
                f"{workers} workers with {gpus:g} GPU each need {gpus * workers:g} GPUs; the Ray cluster has "
                f"{have:g}. Lower --workers or --worker-gpus."
            )
        size = batch_size // workers
        args = [(make, range(i * size, (i + 1) * size), batch_size) for i in range(workers)]
        self.num_envs = batch_size
        self.perf: dict[str, float] = {}
        self.actors = Actors(RolloutWorker, args, restarts=restarts, num_cpus=1, num_gpus=gpus)

    def play(
        self,
        engine: RolloutEngine,
        seed: int,
        sampling: SamplingParams = SamplingParams(),
        options: dict[str, Any] | None = None,
    ) -> RolloutBatch:
        """The batch seeded ``seed``, played by the workers with ``engine``'s current weights."""
        state = self.actors.ray.put(trainable_state(engine))
        shards = self.actors.map(lambda handle, _: handle.play.remote(state, seed, sampling, options))
        for _, counted in shards:
            flops.add(counted)
        return join_batches([batch for batch, _ in shards], engine.pad_id).to(engine.device)

    @property
    def replaced(self) -> int:
        """How many workers have been replaced after dying."""
        return self.actors.replaced

    def close(self) -> None:
        """Stop the workers."""
        self.actors.close()
