"""What a :class:`~criticgym.train.config.TrainConfig` builds.

The policy, the agent and its rollout source, the judge of a self-rewarding run, the critic pool, the held-out
evaluator.
Rollout workers build their part here too, in their own process (:func:`worker_setup`), from the run's config.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

import torch

import criticgym
from criticgym.algos.lora import BaseModel, add_lora, is_lora
from criticgym.errors import ConfigError
from criticgym.rewards import RlaifDirect, RlaifPairwise
from criticgym.train.config import TrainConfig, env_kwargs
from criticgym.train.evaluate import Evaluator


def build_policy(cfg: TrainConfig):
    """The policy a config starts from, and its tokenizer: the model, with a fresh LoRA adapter when asked.

    Weights the optimizer updates are float32 on every device (on CUDA the default would be bfloat16, in which most
    updates round away); with LoRA the frozen base keeps the device's default and the adapter is float32.
    """
    from criticgym.rollout import load_policy
    from criticgym.rollout.models import layer_count

    frozen = getattr(cfg.agent_config, "freeze_layers", 0)
    layers = layer_count(cfg.model) if frozen else None  # from its config.json, before the weights load
    if layers is not None and frozen > layers:
        raise ConfigError(f"--ppo.freeze-layers {frozen}: {cfg.model} has {layers} layers; freeze at most {layers}.")
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

    return CriticPool(partial(_critic_of, asdict(cfg)), actors=cfg.critic_actors, address=cfg.ray_address)


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
    """The agent a config names."""
    from criticgym.algos.ppo import PPO
    from criticgym.algos.reinforce import Reinforce

    agent = PPO if cfg.agent == "ppo" else Reinforce
    return agent(model, tokenizer, envs, cfg.agent_config, seed=cfg.seed, precision=cfg.precision)


def build_evaluator(cfg: TrainConfig, tokenizer, ref_model, judge=None, critic=None) -> Evaluator:
    """Held-out evaluation for a config: its env and reward set-up on the test split (``critic``: a pool)."""
    options = {**env_kwargs(cfg), **({"judge": judge} if judge is not None else {})}
    if critic is not None:
        options["critic"] = critic
    return Evaluator(cfg.env, tokenizer, ref_model, cfg.eval_prompts, cfg.scorer, **options)


def self_judge(cfg: TrainConfig, model, tokenizer):
    """The self-rewarding judge of ``judge_model="label:self"`` (None for any other judge).

    A frozen copy of the initial policy asks the task's label-word question.
    """
    from criticgym.critics.judge import label_word_judge, parse_label_judge
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS

    if not isinstance(cfg.reward, RlaifDirect | RlaifPairwise):
        return None
    parsed = parse_label_judge(cfg.reward.judge_model)
    if parsed is None or parsed[1] != "self":
        return None
    words = get_task(ENV_IDS.get(cfg.env, cfg.env)).label_words
    backend = (frozen_copy(model), tokenizer)
    pairwise = isinstance(cfg.reward, RlaifPairwise)
    return label_word_judge(cfg.reward.judge_model, words, pairwise=pairwise, backend=backend)


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
    # a self-rewarding judge is a frozen copy of the policy: each worker builds its own (worker_setup); none travels
    return rollout_workers(cfg, {k: v for k, v in env_options.items() if k != "judge"})


def vllm_rollouts(cfg: TrainConfig, env_options: dict[str, Any]):
    """The run's vector env with vLLM sampling its tokens (:class:`~criticgym.envs.VLLMRollouts`)."""
    from criticgym.envs import VLLMRollouts
    from criticgym.rollout.vllm import VLLMSampler

    envs = criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **env_kwargs(cfg), **env_options)
    return VLLMRollouts(envs, VLLMSampler(cfg.model, lora_rank=cfg.lora_r, seed=cfg.seed))


def rollout_workers(cfg: TrainConfig, env_options: dict[str, Any] | None = None):
    """``cfg.workers`` Ray rollout workers, each building its engine and its rows' env from ``cfg``."""
    from criticgym.distributed.workers import RolloutWorkers

    gpus = cfg.worker_gpus
    if gpus is None:  # the workers share the one GPU of a local run
        on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        gpus = 1 / cfg.workers if on_gpu else 0.0
    make = partial(worker_setup, asdict(cfg), env_options or {})
    return RolloutWorkers(make, cfg.num_envs, cfg.workers, gpus=gpus, address=cfg.ray_address)


def worker_setup(config: dict[str, Any], env_options: dict[str, Any], rows: range, batch_size: int):
    """A rollout worker's engine, its rows' rollout source and precision, built from the run's config.

    The worker's agent is built exactly as the learner builds itself (so its engine has the same reference model and
    value head); only its engine and rollout source are used.
    """
    from criticgym.envs import EnvRollouts

    cfg = TrainConfig.from_dict(config)
    model, tokenizer = build_policy(cfg)
    judge = self_judge(cfg, model, tokenizer)
    options = {**env_kwargs(cfg), **env_options, **({"judge": judge} if judge is not None else {})}
    rollouts = EnvRollouts(criticgym.make_vec(cfg.env, num_envs=len(rows), **options), rows, batch_size)
    agent = build_agent(cfg, model, tokenizer, rollouts)
    return agent.engine, rollouts, cfg.precision
