"""Rollout workers as Ray actors: ``criticgym train --workers N`` (``pip install criticgym[ray]``).

The learner keeps the only optimizer and the checkpoints. Each of the N workers holds a policy copy, its engine
(with the reference model and the value head where the agent has them) and a vector env of its rows of the batch;
a worker is built from the run's :class:`~criticgym.agents.train.TrainConfig` exactly as the learner builds itself.
Per iteration:

1. the learner puts the trainable weights in Ray's object store once: the parameters that train (the adapter
   only, with LoRA; frozen layers never travel) and the value head;
2. every worker loads them and plays its rows (:func:`~criticgym.envs.play_rows`): the batch's prompts are drawn
   whole and each row samples from its own random stream, so a row comes out the same whichever worker plays it;
3. the learner joins the shards in row order (:func:`~criticgym.rollout.join_batches`), adds the FLOPs the workers
   counted, and updates as usual.

So N workers give, for the same seed, the batch that one process playing ``play_rows`` over all rows gives (the
test compares them). A worker that dies is rebuilt from its config and plays the same rows again with the same
weights and seed (:class:`~criticgym.distributed.Actors`); the learner holds all the state, so no completed
iteration is lost, and the run goes on as if nothing happened.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from criticgym import flops
from criticgym.distributed import Actors, init_ray
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, join_batches


def trainable_state(agent) -> dict[str, Any]:
    """What a worker needs to sample as the learner's policy does: trainable parameters and the value head (CPU)."""
    policy = {name: p.detach().cpu() for name, p in agent.model.named_parameters() if p.requires_grad}
    head = agent.value_head.state_dict() if agent.value_head is not None else None
    return {"policy": policy, "value_head": head}


def load_trainable_state(agent, state: dict[str, Any]) -> None:
    """Load :func:`trainable_state` into an agent built from the same config."""
    result = agent.model.load_state_dict(state["policy"], strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"The learner's weights do not fit this worker's model: {result.unexpected_keys[:3]} ...")
    if agent.value_head is not None:
        agent.value_head.load_state_dict(state["value_head"])


class RolloutWorker:
    """One worker (the body of a Ray actor): plays rows ``rows`` of every batch of ``batch_size``.

    Args:
        config: the run's :class:`~criticgym.agents.train.TrainConfig` as a dict.
        rows: this worker's rows.
        batch_size: the whole batch.
        env_options: more env options (e.g. ``critic``: a :class:`~criticgym.critics.pool.CriticPool`).
    """

    def __init__(self, config: dict[str, Any], rows: range, batch_size: int, env_options: dict[str, Any]) -> None:
        import criticgym
        from criticgym.agents.train import TrainConfig, build_agent, build_policy, env_kwargs, self_judge

        cfg = TrainConfig(**config)
        model, tokenizer = build_policy(cfg)
        judge = self_judge(cfg, model, tokenizer)
        options = {**env_kwargs(cfg), **env_options, **({"judge": judge} if judge is not None else {})}
        envs = criticgym.make_vec(cfg.env, num_envs=len(rows), **options)
        self.agent = build_agent(cfg, model, tokenizer, envs)
        self.agent.shard = (rows, batch_size)

    def play(self, state: dict[str, Any], iteration: int, sampling: dict[str, Any]) -> tuple[RolloutBatch, dict]:
        """Load the learner's weights, play this worker's rows of iteration ``iteration``; the batch and its FLOPs."""
        load_trainable_state(self.agent, state)
        self.agent.iteration = iteration
        flops.take()
        with flops.phase("policy"):
            batch = self.agent.play(**sampling)
        return batch.to("cpu"), flops.take()


class RolloutWorkers:
    """N rollout workers that play an agent's batches (set as ``agent.workers``).

    Args:
        cfg: the run's config (``num_envs`` must be a multiple of ``workers``; with RLOO or pairwise judges, each
            worker's share a multiple of the group size).
        workers: how many.
        env_options: more env options for every worker's env (a critic pool, say).
        restarts: how many dead workers may be replaced in all.
    """

    def __init__(self, cfg, workers: int, env_options: dict[str, Any] | None = None, restarts: int = 3) -> None:
        ray = init_ray(cfg.ray_address)
        if workers < 1 or cfg.num_envs % workers:
            raise ConfigError(f"num_envs ({cfg.num_envs}) must be a positive multiple of workers ({workers}).")
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < workers:
            raise ConfigError(f"{workers} workers need {workers} CPUs; the Ray cluster has {cpus:g}. Lower --workers.")
        size = cfg.num_envs // workers
        config = asdict(cfg)
        shards = [range(i * size, (i + 1) * size) for i in range(workers)]
        args = [(config, rows, cfg.num_envs, env_options or {}) for rows in shards]
        gpus = cfg.worker_gpus
        if gpus is None:  # the workers share the one GPU of a local run
            on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
            gpus = 1 / workers if on_gpu else 0
        have = ray.cluster_resources().get("GPU", 0)
        if gpus * workers > have + 1e-9:
            raise ConfigError(
                f"{workers} workers with {gpus:g} GPU each need {gpus * workers:g} GPUs; the Ray cluster has "
                f"{have:g}. Lower --workers or --worker-gpus."
            )
        self.actors = Actors(RolloutWorker, args, restarts=restarts, num_cpus=1, num_gpus=gpus)

    def play(self, agent, **sampling: Any) -> RolloutBatch:
        """The agent's batch of this iteration, played by the workers with the agent's current weights."""
        state = self.actors.ray.put(trainable_state(agent))
        iteration = agent.iteration
        shards = self.actors.map(lambda handle, _: handle.play.remote(state, iteration, sampling))
        for _, counted in shards:
            flops.add(counted)
        device = next(agent.model.parameters()).device
        return join_batches([batch for batch, _ in shards], agent.engine.pad_id).to(device)

    @property
    def replaced(self) -> int:
        """How many workers have been replaced after dying."""
        return self.actors.replaced

    def close(self) -> None:
        """Stop the workers."""
        self.actors.close()
