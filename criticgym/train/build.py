"""What a :class:`~criticgym.train.config.TrainConfig` builds.

The policy, the agent and its rollout source, the initial policy (what label:self judges with), the critic pool,
the held-out evaluator.
Rollout workers build their part here too, in their own process (:func:`worker_setup`), from the run's config.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

import criticgym
from criticgym.algos import ALGORITHMS
from criticgym.algos.lora import BaseModel, add_lora, is_lora
from criticgym.train.config import TrainConfig, env_kwargs
from criticgym.train.evaluate import Evaluator


def check_model(cfg: TrainConfig) -> None:
    """What a config asks of its model that its config can refuse: ``freeze_layers`` (before folder or weights)."""
    from criticgym.rollout.models import check_freeze_layers

    frozen = getattr(cfg.agent_config, "freeze_layers", 0)
    check_freeze_layers(cfg.model, frozen, f"--{ALGORITHMS[cfg.agent].options}.freeze-layers")


def build_policy(cfg: TrainConfig):
    """The policy a config starts from, and its tokenizer: the model, with a fresh LoRA adapter when asked.

    Weights the optimizer updates are float32 on every device (on CUDA the default would be bfloat16, in which most
    updates round away); with LoRA the frozen base keeps the device's default and the adapter is float32.
    """
    from criticgym.rollout import load_policy

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=None if cfg.lora_r else torch.float32)
    if cfg.lora_r:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    return model, tokenizer


def critic_pool(cfg: TrainConfig):
    """RELC's span critic served by ``cfg.critic_actors`` Ray actors (None when ``critic_actors`` is 0)."""
    if not cfg.critic_actors:
        return None
    from functools import partial

    from criticgym.distributed.pool import CriticPool

    return CriticPool(partial(_critic_of, cfg.to_dict()), actors=cfg.critic_actors, address=cfg.ray_address)


def _critic_of(config: dict[str, Any]):
    """The span critic a config names, built where it is called (inside a pool's actor)."""
    from criticgym.envs import get_task
    from criticgym.envs.core import resolve_tokenizer
    from criticgym.registration import ENV_IDS, make_critic

    cfg = TrainConfig.from_dict(config)
    task, spec = ENV_IDS.get(cfg.env, cfg.env), env_kwargs(cfg)["reward"]
    name = spec.critic or get_task(task).critic
    return make_critic(name, task, resolve_tokenizer(cfg.model), spec.critic_model, spec.critic_seed)


def build_agent(cfg: TrainConfig, model, tokenizer, envs):
    """The agent a config names (:data:`criticgym.algos.ALGORITHMS`)."""
    from criticgym.algos import ALGORITHMS

    agent = ALGORITHMS[cfg.agent].agent_class()
    return agent(model, tokenizer, envs, cfg.agent_config, seed=cfg.seed, precision=cfg.precision)


def build_evaluator(cfg: TrainConfig, tokenizer, ref_model, policy=None, critic=None) -> Evaluator:
    """Held-out evaluation for a config: its env and reward set-up on the test split.

    ``policy``: what ``label:self`` judges with (:func:`initial_policy`; None: the config's model by name);
    ``critic``: a critic pool.
    """
    options = {**env_kwargs(cfg), **({"policy": policy} if policy is not None else {})}
    if critic is not None:
        options["critic"] = critic
    return Evaluator(cfg.env, tokenizer, ref_model, cfg.eval_prompts, cfg.scorer, **options)


def initial_policy(model, tokenizer):
    """What ``label:self`` judges with: a function returning the initial policy, frozen, and its tokenizer.

    The copy is made on the first call (when an env builds a self-rewarding judge, before training starts), once.
    """
    made: list[tuple[Any, Any]] = []

    def frozen():
        if not made:
            made.append((frozen_copy(model), tokenizer))
        return made[0]

    return frozen


def frozen_copy(model):
    """The initial policy, frozen: a copy, or for a LoRA policy its base with the adapter off (no copy)."""
    import copy

    if is_lora(model):
        return BaseModel(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


def rollout_source(cfg: TrainConfig, env_options: dict[str, Any]):
    """Where the run's batches are played: a vector env in this process, or ``cfg.workers`` Ray workers."""
    if cfg.engine == "vllm":
        return vllm_rollouts(cfg, env_options)
    if not cfg.workers:
        return criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **env_kwargs(cfg), **env_options)
    # label:self judges with a frozen copy of the policy: each worker makes its own (worker_setup); none travels
    return rollout_workers(cfg, {k: v for k, v in env_options.items() if k != "policy"})


def vllm_rollouts(cfg: TrainConfig, env_options: dict[str, Any]):
    """The run's vector env with vLLM sampling its tokens (:class:`~criticgym.sources.VLLMRollouts`)."""
    from criticgym.rollout.vllm import VLLMSampler
    from criticgym.sources import VLLMRollouts

    envs = criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **env_kwargs(cfg), **env_options)
    return VLLMRollouts(envs, VLLMSampler(cfg.model, lora_rank=cfg.lora_r, seed=cfg.seed))


def rollout_workers(cfg: TrainConfig, env_options: dict[str, Any] | None = None):
    """``cfg.workers`` Ray rollout workers, each building its engine and its rows' env from ``cfg``."""
    from criticgym.sources.workers import RolloutWorkers

    gpus = cfg.worker_gpus
    if gpus is None:  # the workers share the one GPU of a local run
        on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        gpus = 1 / cfg.workers if on_gpu else 0.0
    make = partial(worker_setup, cfg.to_dict(), env_options or {})
    return RolloutWorkers(make, cfg.num_envs, cfg.workers, gpus=gpus, address=cfg.ray_address)


def build_actor(cfg: TrainConfig, model, tokenizer):
    """The actor of the config's algorithm (what it samples and scores with), without a learner or an optimizer."""
    from criticgym.algos.actor import Actor

    settings = ALGORITHMS[cfg.agent].agent_class().actor_settings(cfg.agent_config)
    return Actor(model, tokenizer, settings, cfg.precision)


def worker_setup(config: dict[str, Any], env_options: dict[str, Any], rows: range, batch_size: int):
    """A rollout worker's engine, its rows' rollout source and precision, built from the run's config.

    The engine is that of the actor the learner holds (:func:`build_actor`: the same reference model and value
    head); a worker builds no optimizer.
    """
    from criticgym.sources import EnvRollouts

    cfg = TrainConfig.from_dict(config)
    model, tokenizer = build_policy(cfg)
    options = {**env_kwargs(cfg), **env_options, "policy": initial_policy(model, tokenizer)}
    rollouts = EnvRollouts(criticgym.make_vec(cfg.env, num_envs=len(rows), **options), rows, batch_size)
    return build_actor(cfg, model, tokenizer).engine, rollouts, cfg.precision
