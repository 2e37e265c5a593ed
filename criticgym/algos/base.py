"""What every criticgym agent shares: its actor (:mod:`criticgym.algos.actor`), the optimizer, one collect step.

The actor holds the policy, the reference model (only where the KL penalty needs one, ``kl_coef > 0``) and the
value head (only where the algorithm uses one); an algorithm says which in ``actor_settings``, so a rollout worker
builds the same actor without the learner. :meth:`LMAgent.collect` is the part of an iteration that
every algorithm does the same way: roll out, write the hindsight token rewards onto the steps, subtract the
per-token KL penalty. Each algorithm file keeps only what differs: its advantages and its update. Also here:
masked statistics and one-pass re-scoring of whole sequences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from criticgym.algos.actor import Actor, ActorSettings, ValueHead
from criticgym.errors import ConfigError
from criticgym.rewards import EXTRINSIC_REWARD, TOKEN_REWARDS
from criticgym.rollout import RolloutBatch, SamplingParams, score_completions
from criticgym.sources import EnvRollouts, RolloutSource
from criticgym.utils.training import adam, warn_half_precision

__all__ = ["Actor", "ActorSettings", "Collected", "LMAgent", "ValueHead"]


def token_rewards(batch: RolloutBatch) -> torch.Tensor:
    """(B, T) rewards per completion token: the hindsight vectors where the env gave them, else step rewards."""
    rewards = batch.rewards.clone().float() if batch.rewards is not None else torch.zeros_like(batch.logprobs)
    for row, info in enumerate(batch.infos or []):
        vector = info.get(TOKEN_REWARDS)
        if vector is not None:
            rewards[row] = 0.0
            rewards[row, : len(vector)] = torch.as_tensor(np.asarray(vector, dtype=np.float32))
    return rewards * batch.completion_mask


def mean_info(batch: RolloutBatch, key: str) -> float:
    """Mean of a per-episode info value (e.g. ``extrinsic_reward``) over the rows that report it (nan if none)."""
    values = [float(info[key]) for info in batch.infos or [] if key in info]
    return float(np.mean(values)) if values else float("nan")


def importance_weights(batch: RolloutBatch, cap: float) -> torch.Tensor | None:
    """Truncated importance weights ``min(pi_learner / pi_sampler, cap)`` per token, (B, T); None when off.

    They correct a policy gradient for tokens that another engine (vLLM) sampled with slightly different numbers
    than the learner computes (Yao et al. 2025, "truncated importance sampling"). None when ``cap`` is 0 or the
    learner sampled the batch itself.
    """
    if cap <= 0 or batch.sampler_logprobs is None:
        return None
    log_ratio = (batch.logprobs - batch.sampler_logprobs).float()
    return log_ratio.exp().clamp(max=cap) * batch.completion_mask


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries."""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def policy_logprobs(model, batch: RolloutBatch, sampling: SamplingParams) -> torch.Tensor:
    """Log-probs of the completion tokens under ``model``, (B, T), in one forward pass over whole sequences.

    Those of the distribution the rollout drew from (``sampling``: tempered, filtered), so that they compare with
    the batch's stored ``logprobs``.
    """
    return forward_logprobs(model, batch, sampling)[0]


def forward_logprobs(model, batch: RolloutBatch, sampling: SamplingParams, hidden: bool = False):
    """:func:`~criticgym.rollout.score_completions` of a batch under ``sampling``: log-probs, last hidden states."""
    return score_completions(
        model,
        batch.prompt_ids,
        batch.prompt_mask,
        batch.completion_ids,
        batch.completion_mask,
        sampling,
        return_hidden=hidden,
    )


def forward_logprobs_values(model, value_head, batch: RolloutBatch, sampling: SamplingParams):
    """Log-probs (as :func:`policy_logprobs`) and values of the completion tokens in one forward pass, (B, T) each."""
    logprobs, hidden = forward_logprobs(model, batch, sampling, hidden=True)
    values = value_head(hidden.to(value_head.linear.weight.dtype)).squeeze(-1).float()
    return logprobs, values


@dataclass
class Collected:
    """One iteration's experience, ready for an algorithm's advantages: every tensor (B, T)."""

    batch: RolloutBatch
    mask: torch.Tensor  # float, 1 on completion tokens
    scores: torch.Tensor  # the env's reward of each token (hindsight vectors written back)
    kl: torch.Tensor | None  # per-token KL estimate to the reference, logp - logp_ref (None without one)
    rewards: torch.Tensor  # scores - kl_coef * kl
    rollout_s: float  # wall time of the rollout


class LMAgent:
    """The state an agent trains and checkpoints: its :class:`~criticgym.algos.actor.Actor` and an Adam optimizer.

    Args:
        model: the policy (a transformers causal LM); trained in place.
        tokenizer: its tokenizer.
        envs: where batches are played: a criticgym vector env made with ``autoreset_mode="disabled"``, or a
            :class:`~criticgym.sources.RolloutSource` (a shard of rows, Ray workers).
        lr: Adam learning rate.
        kl_coef: initial weight of the per-token KL penalty to the reference model.
        seed: the run's seed; every random draw comes from ``(seed, iteration)``.
        freeze_layers: freeze the embeddings and this many lower transformer layers.
        value_head: build a value head (PPO, REINFORCE with a value baseline); RLOO needs none.
        precision: ``"auto"`` (bfloat16 autocast on a CUDA device that supports it, float32 elsewhere), ``"bf16"``
            (bfloat16 autocast on any device) or ``"fp32"``. Autocast computes the forward passes of the rollout
            and the update in bfloat16 while the weights, their gradients and Adam's state stay float32.

    The reference model (a frozen copy of the initial policy) exists only when ``kl_coef > 0``; without it the
    KL is not measured (``charts/kl`` is nan). A LoRA policy (:func:`~criticgym.algos.lora.add_lora`) trains its
    adapter only; its reference model is the same weights with the adapter off, and checkpoints hold the adapter.

    An algorithm registered for training runs (:func:`~criticgym.algos.register_algorithm`) also says, in the
    class method :meth:`actor_settings`, which of these its config asks for: a rollout worker builds the actor from
    it alone.
    """

    def __init__(
        self,
        model,
        tokenizer,
        envs,
        lr: float,
        kl_coef: float,
        seed: int = 0,
        freeze_layers: int = 0,
        value_head: bool = True,
        precision: str = "auto",
    ):
        self.rollouts = as_rollout_source(envs)  # a wrong argument is refused before the reference is copied
        self.actor = Actor(model, tokenizer, ActorSettings(kl_coef, value_head, freeze_layers), precision)
        self.model, self.tokenizer, self.seed = model, tokenizer, seed
        self.ref_model, self.value_head, self.engine = self.actor.ref_model, self.actor.value_head, self.actor.engine
        self.lora, self.precision, self.mixed_precision = self.actor.lora, precision, self.actor.mixed_precision
        params = self.actor.policy_parameters()
        warn_half_precision(params)
        self.optimizer = adam(params + self.actor.value_parameters(), lr=lr)
        self.kl_coef = kl_coef
        self.iteration = 0

    @classmethod
    def actor_settings(cls, config: Any) -> ActorSettings:
        """What this algorithm's actor holds under ``config``: what its ``__init__`` passes on.

        A rollout worker builds its actor from it, so an algorithm that plays on Ray workers defines it.
        """
        raise ConfigError(
            f"{cls.__name__} does not say what its actor holds: define the class method actor_settings(config) -> "
            "ActorSettings (reference model, value head, frozen layers) to play its batches on rollout workers."
        )

    def rollout(self) -> RolloutBatch:
        """Sample this iteration's batch (each algorithm sets its sampling and grouping, then calls :meth:`play`)."""
        raise NotImplementedError

    def play(self, sampling: SamplingParams, options: dict[str, Any] | None = None) -> RolloutBatch:
        """Sample the iteration's batch from the rollout source, drawn as ``sampling`` says, with reset ``options``.

        The agent does not know how its batch is played: in this process (:class:`~criticgym.sources.EnvRollouts`) or
        by Ray workers (:class:`~criticgym.sources.workers.RolloutWorkers`); it hands over its engine and seed.
        """
        with self.autocast():
            return self.rollouts.play(self.engine, self.iteration_seed, sampling, options)

    def autocast(self) -> torch.autocast:
        """The context of every forward pass: bfloat16 autocast under mixed precision, else a no-op.

        Backward passes run outside it (as torch recommends); they follow the forward's dtypes.
        """
        return self.actor.autocast()

    def collect(self) -> Collected:
        """Roll out with the current policy, then per-token rewards: hindsight vectors first, minus the KL penalty."""
        start = time.perf_counter()
        batch = self.rollout()
        rollout_s = time.perf_counter() - start
        mask = batch.completion_mask.float()
        scores = token_rewards(batch)
        if batch.ref_logprobs is None:  # no reference model: no penalty
            return Collected(batch, mask, scores, None, scores, rollout_s)
        kl = (batch.logprobs - batch.ref_logprobs) * mask
        return Collected(batch, mask, scores, kl, scores - self.kl_coef * kl, rollout_s)

    def charts(self, collected: Collected) -> dict[str, float]:
        """The metrics every algorithm reports about its batch and its speed.

        When another engine sampled the batch (vLLM), also the gap between its log-probs and the learner's:
        ``rollout/logprob_gap`` (mean absolute difference per token) and ``rollout/sampler_kl`` (the sampler's
        tokens' mean log-ratio, an estimate of KL(sampler || learner)); and the rollout source's timings.
        """
        batch, mask = collected.batch, collected.mask
        return {
            **self.sampler_charts(batch, mask),
            "charts/episodic_return": float(collected.scores.sum(1).mean()),
            "charts/extrinsic": mean_info(batch, EXTRINSIC_REWARD),
            "charts/kl": float(collected.kl.sum(1).mean()) if collected.kl is not None else float("nan"),
            "charts/kl_coef": self.kl_coef,
            "charts/completion_tokens": float(mask.sum(1).mean()),
            "perf/rollout_tokens_per_s": float(mask.sum()) / collected.rollout_s,
            "perf/rollout_s": collected.rollout_s,
            "perf/env_s": batch.env_seconds,
        }

    def sampler_charts(self, batch: RolloutBatch, mask: torch.Tensor) -> dict[str, float]:
        """The log-prob gap to another sampler and the source's own timings (nothing for the built-in engine)."""
        charts = dict(self.rollouts.perf)  # the source's own stages (vLLM: weight sync and sampling)
        if batch.sampler_logprobs is not None:
            log_ratio = (batch.logprobs - batch.sampler_logprobs) * mask
            charts["rollout/logprob_gap"] = float(masked_mean(log_ratio.abs(), mask))
            charts["rollout/sampler_kl"] = float(masked_mean(-log_ratio, mask))
        return charts

    @property
    def iteration_seed(self) -> int:
        """The seed of this iteration's random draws (rollout sampling, prompt choice, minibatch order)."""
        return self.seed * 1_000_003 + self.iteration

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the gradient norm of everything the optimizer updates."""
        nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], max_norm)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, KL coefficient, iteration."""
        from criticgym.algos.lora import adapter_state

        return {
            "model": adapter_state(self.model) if self.lora else self.model.state_dict(),
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl_coef,
            "iteration": self.iteration,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the reference model stays the initial policy)."""
        if self.lora:
            from criticgym.algos.lora import load_adapter_state

            load_adapter_state(self.model, state["model"])
        else:
            self.model.load_state_dict(state["model"])
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef, self.iteration, self.seed = state["kl_coef"], state["iteration"], state["seed"]


def as_rollout_source(envs: Any) -> RolloutSource:
    """A vector env as an :class:`~criticgym.sources.EnvRollouts`; a rollout source as it is."""
    if isinstance(envs, VectorEnv):
        return EnvRollouts(envs)
    if isinstance(envs, RolloutSource):
        return envs
    raise ConfigError(
        f"An agent plays its batches on a criticgym vector env (gym.make_vec(..., autoreset_mode='disabled')) or a "
        f"rollout source (num_envs, perf and play(engine, seed, ...): criticgym.sources.RolloutSource); got "
        f"{type(envs).__name__}."
    )
