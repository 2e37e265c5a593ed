"""REINFORCE for causal language models: a learned value baseline (as RLAIF used), or RLOO.

- ``baseline="value"``: per-token returns ``G_t`` (gamma 1) of the rewards minus the KL penalty, advantage
  ``G_t - V(s_t)``, and a value head trained on ``G_t`` (Lee et al. 2023, arXiv 2309.00267).
- ``baseline="rloo"``: ``k`` completions per prompt; each completion's advantage is its return minus the mean
  return of the other ``k - 1`` (Ahmadian et al. 2024). No value head is needed.

Both take one gradient step per batch (on-policy), with the same hindsight token rewards and per-token KL to the
frozen reference model as :mod:`criticgym.algos.ppo`.

    criticgym train --agent rloo --env criticgym/SentimentControl-v0 sparse
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from criticgym.algos.base import (
    ActorSettings,
    LMAgent,
    as_rollout_source,
    forward_logprobs_values,
    importance_weights,
    masked_mean,
    policy_logprobs,
)
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, SamplingParams


@dataclass
class ReinforceConfig:
    """REINFORCE hyper-parameters (defaults: RLAIF's)."""

    lr: float = 1e-5
    """Adam learning rate."""
    baseline: str = "value"
    """'value' (a learned baseline) or 'rloo' (leave-one-out over k samples of each prompt)."""
    k: int = 4
    """Completions per prompt with baseline='rloo' (num_envs must be a multiple)."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference model."""
    vf_coef: float = 0.5
    """Weight of the value loss (baseline='value')."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    temperature: float = 0.9
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    tis_cap: float = 0.0
    """With another sampler (--engine vllm): weight each token's gradient by min(pi_learner / pi_sampler, tis_cap),
    truncated importance sampling (0: off)."""

    @property
    def sampling(self) -> SamplingParams:
        """How the rollouts draw their tokens, and the update re-scores them."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p)


class Reinforce(LMAgent):
    """REINFORCE with a value baseline, or RLOO.

    Args:
        model: the policy; trained in place.
        tokenizer: its tokenizer.
        envs: a criticgym vector env made with ``autoreset_mode="disabled"``.
        config: hyper-parameters.
        seed: the run's seed.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``: whether forward passes run under bfloat16 autocast
            (:class:`~criticgym.algos.base.LMAgent`).
    """

    def __init__(
        self, model, tokenizer, envs, config: ReinforceConfig | None = None, seed: int = 0, precision: str = "auto"
    ) -> None:
        self.config = config or ReinforceConfig()
        if self.config.baseline not in ("value", "rloo"):
            raise ConfigError(f"baseline must be 'value' or 'rloo', got {self.config.baseline!r}.")
        num_envs = as_rollout_source(envs).num_envs
        if self.config.baseline == "rloo" and (self.config.k < 2 or num_envs % self.config.k):
            raise ConfigError(
                f"RLOO needs k >= 2 completions per prompt and num_envs a multiple of k; got k={self.config.k}, "
                f"num_envs={num_envs}."
            )
        actor = self.actor_settings(self.config)
        super().__init__(
            model,
            tokenizer,
            envs,
            self.config.lr,
            actor.kl_coef,
            seed,
            value_head=actor.value_head,
            precision=precision,
        )

    @classmethod
    def actor_settings(cls, config: ReinforceConfig) -> ActorSettings:
        """A value head for the value baseline (none for RLOO); a reference model when ``kl_coef > 0``."""
        return ActorSettings(config.kl_coef, value_head=config.baseline == "value")

    def rollout(self) -> RolloutBatch:
        """Sample a batch; with RLOO, k completions of each of num_envs / k prompts."""
        self.model.eval()
        options = {"group_size": self.config.k} if self.config.baseline == "rloo" else None
        return self.play(self.config.sampling, options)

    def iterate(self) -> dict[str, float]:
        """Roll out and take one policy-gradient step; returns this iteration's metrics."""
        cfg = self.config
        collected = self.collect()
        batch, mask = collected.batch, collected.mask
        returns = collected.rewards.flip(1).cumsum(1).flip(1) * mask  # G_t, gamma = 1

        start = time.perf_counter()
        self.model.train()
        if cfg.baseline == "rloo":
            with self.autocast():
                logprobs = policy_logprobs(self.model, batch, cfg.sampling)
            total = returns[:, 0].view(-1, cfg.k)  # (prompts, k): each completion's return
            others = (total.sum(1, keepdim=True) - total) / (cfg.k - 1)
            advantages = (total - others).reshape(-1, 1).expand_as(mask) * mask
            value_loss = torch.zeros(())
        else:
            with self.autocast():
                logprobs, values = forward_logprobs_values(self.model, self.value_head, batch, cfg.sampling)
            advantages = (returns - values.detach()) * mask
            value_loss = 0.5 * masked_mean((values - returns) ** 2, mask)
        weights = importance_weights(batch, cfg.tis_cap)
        if weights is not None:
            advantages = advantages * weights
        policy_loss = -masked_mean(advantages * logprobs, mask)
        loss = policy_loss + (cfg.vf_coef * value_loss if cfg.baseline == "value" else 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clip_gradients(cfg.max_grad_norm)
        self.optimizer.step()
        self.model.eval()
        update_s = time.perf_counter() - start
        self.iteration += 1
        tokens = float(batch.prompt_mask.sum() + mask.sum())
        return {
            **self.charts(collected),
            "losses/policy_loss": policy_loss.item(),
            "losses/value_loss": value_loss.item(),
            "losses/entropy": float(-masked_mean(logprobs.detach(), mask)),
            "perf/update_tokens_per_s": tokens / update_s,
            "perf/update_s": update_s,
        }
