"""GRPO for causal language models: group-relative advantages, PPO's clipped loss, a KL term in the loss.

One iteration (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, section 4.1):

1. The engine samples ``k`` completions of each of ``num_envs / k`` prompts (a group); the reference model
   re-scores the batch in one forward pass (when ``beta > 0``).
2. Advantages from the env's token rewards alone (no KL penalty in the reward, no value head). The *steps* of a
   completion are its last token and every token with a reward: a sparse reward has one step, the outcome, and a
   dense one (RELC's spans) more. Each step's reward is normalized by the mean and the standard deviation of
   every step reward in its group, ``(r - mean) / (std + eps)``; a token's advantage is the sum of the normalized
   rewards from it on. With one step per completion this is outcome supervision, ``(R_i - mean(R)) / (std(R) +
   eps)`` on every token (TRL's ``GRPOTrainer``, whose unbiased std this uses); with more it is DeepSeekMath's
   process supervision.
3. ``epochs`` passes of minibatches: PPO's clipped surrogate on the ratio to the sampling policy, plus
   ``beta`` times the k3 estimate of KL(policy || reference) per token, ``exp(ref - logp) - (ref - logp) - 1``
   (Schulman's unbiased, positive estimator, as TRL defines the term), averaged over the completion tokens.

Every random draw is derived from ``(seed, iteration)``, so a resumed run continues as an uninterrupted one would.

    criticgym train --agent grpo --grpo.k 4 --env criticgym/SentimentControl-v0 sparse
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from criticgym.algos.base import (
    ActorSettings,
    LMAgent,
    as_rollout_source,
    importance_weights,
    masked_mean,
    policy_logprobs,
)
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutBatch, SamplingParams


@dataclass
class GRPOConfig:
    """GRPO hyper-parameters (defaults: TRL's GRPOTrainer where it has one, scaled to a CPU)."""

    lr: float = 1e-5
    """Adam learning rate."""
    k: int = 4
    """Completions per prompt, a group (num_envs must be a multiple)."""
    beta: float = 0.04
    """Weight of the KL term to the reference model in the loss (0: no reference model)."""
    eps: float = 1e-4
    """Added to the group's standard deviation before dividing by it."""
    epochs: int = 1
    """Passes over each batch (with 1, the ratio is 1 and the clip never acts)."""
    minibatch_size: int = 8
    """Completions per gradient step."""
    clip: float = 0.2
    """Policy ratio clip."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    tis_cap: float = 0.0
    """With another sampler (--engine vllm): weight each token's policy loss by min(pi_learner / pi_sampler, tis_cap),
    truncated importance sampling (0: off)."""

    @property
    def sampling(self) -> SamplingParams:
        """How the rollouts draw their tokens, and the update re-scores them."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p)


def group_advantages(scores: torch.Tensor, mask: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """GRPO's advantages of ``B = groups * k`` completions, (B, T): group-normalized step rewards, summed from t on.

    A step is a completion's last token or any token with a reward; each group's mean and (unbiased) standard
    deviation are those of all its steps' rewards.
    """
    rows, length = scores.shape
    lengths = mask.sum(1).long()
    last = torch.zeros_like(mask, dtype=torch.bool)
    last[torch.arange(rows), (lengths - 1).clamp(min=0)] = lengths > 0
    steps = ((scores != 0) | last) & mask.bool()
    grouped, counted = scores.reshape(rows // k, k * length), steps.reshape(rows // k, k * length).float()
    n = counted.sum(1, keepdim=True)
    mean = (grouped * counted).sum(1, keepdim=True) / n.clamp(min=1)
    var = (((grouped - mean) * counted) ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)
    normalized = ((grouped - mean) / (var.sqrt() + eps) * counted).reshape(rows, length)
    return normalized.flip(1).cumsum(1).flip(1) * mask


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate ``exp(ref - logp) - (ref - logp) - 1`` (0 where they agree)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


class GRPO(LMAgent):
    """GRPO: k completions of each prompt, advantages relative to the group, a clipped loss with a KL term.

    Args:
        model: the policy; trained in place.
        tokenizer: its tokenizer.
        envs: a criticgym vector env made with ``autoreset_mode="disabled"`` (or a rollout source).
        config: hyper-parameters.
        seed: the run's seed.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (:class:`~criticgym.algos.base.LMAgent`).
    """

    def __init__(
        self, model, tokenizer, envs, config: GRPOConfig | None = None, seed: int = 0, precision: str = "auto"
    ) -> None:
        self.config = cfg = config or GRPOConfig()
        num_envs = as_rollout_source(envs).num_envs
        if cfg.k < 2 or num_envs % cfg.k:
            raise ConfigError(
                f"GRPO needs k >= 2 completions per prompt and num_envs a multiple of k; got k={cfg.k}, "
                f"num_envs={num_envs}."
            )
        actor = self.actor_settings(cfg)
        super().__init__(model, tokenizer, envs, cfg.lr, actor.kl_coef, seed, value_head=False, precision=precision)

    @classmethod
    def actor_settings(cls, config: GRPOConfig) -> ActorSettings:
        """No value head; a reference model when ``beta > 0`` (GRPO puts the KL in its loss, not in the rewards)."""
        return ActorSettings(config.beta, value_head=False)

    def rollout(self) -> RolloutBatch:
        """Sample k completions of each of num_envs / k prompts."""
        self.model.eval()
        cfg = self.config
        return self.play(cfg.sampling, {"group_size": cfg.k})

    def iterate(self) -> dict[str, float]:
        """Roll out, compute the group-relative advantages, update; returns this iteration's metrics."""
        cfg = self.config
        collected = self.collect()
        batch, mask = collected.batch, collected.mask
        advantages = group_advantages(collected.scores, mask, cfg.k, cfg.eps)
        start = time.perf_counter()
        stats = self._update(batch, advantages, mask)
        update_s = time.perf_counter() - start
        self.iteration += 1
        return {**self.charts(collected), **stats, "perf/update_s": update_s}

    def _update(self, batch: RolloutBatch, advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        generator = torch.Generator().manual_seed(self.iteration_seed)
        totals: dict[str, list[float]] = {k: [] for k in ("policy_loss", "kl", "clipfrac", "entropy")}
        weights = importance_weights(batch, cfg.tis_cap)
        n = batch.completion_ids.size(0)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, cfg.minibatch_size):
                rows = order[start : start + cfg.minibatch_size].to(mask.device)
                mb = RolloutBatch(*(v[rows] if isinstance(v, torch.Tensor) else None for v in batch))
                m, adv = mask[rows], advantages[rows]
                with self.autocast():
                    logprobs = policy_logprobs(self.model, mb, cfg.sampling)
                ratio = ((logprobs - mb.logprobs) * m).exp()
                token_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip))
                if weights is not None:
                    token_loss = token_loss * weights[rows]
                kl = k3_kl(logprobs, mb.ref_logprobs) if mb.ref_logprobs is not None else torch.zeros_like(logprobs)
                policy_loss = masked_mean(token_loss, m)
                loss = policy_loss + cfg.beta * masked_mean(kl, m)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.clip_gradients(cfg.max_grad_norm)
                self.optimizer.step()
                totals["policy_loss"].append(float(policy_loss.detach()))
                totals["kl"].append(float(masked_mean(kl.detach(), m)))
                totals["clipfrac"].append(float(masked_mean(((ratio.detach() - 1).abs() > cfg.clip).float(), m)))
                totals["entropy"].append(float(-masked_mean(logprobs.detach(), m)))
        self.model.eval()
        return {f"losses/{k}": float(np.mean(v)) for k, v in totals.items()}
