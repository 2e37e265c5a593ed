"""Token-level PPO for causal language models, on the rollout engine and a criticgym vector env.

One iteration (RELC's recipe, Cao et al. 2024, arXiv 2401.07382):

1. The engine samples one completion per sub-env (B prompts), with the sampled tokens' log-probs and the value
   head's values; the reference model re-scores the batch in one forward pass.
2. Rewards per token: the env's hindsight ``token_rewards`` when a dense wrapper wrote them (else the step
   rewards), minus ``kl_coef * (logp - logp_ref)`` on every token.
3. GAE (gamma, lambda) over completion tokens only; advantages whitened over the batch.
4. ``epochs`` passes of minibatches: one forward pass over whole sequences re-scores log-probs and values;
   clipped policy loss, clipped value loss, gradient clipping.
5. The adaptive KL controller (Ziegler et al. 2019) moves ``kl_coef`` toward ``kl_target``, once the KL has first
   reached the target. Ziegler's controller lowers ``kl_coef`` whenever the KL is below target, which in the first
   iterations (the KL ramping up from 0) would shrink it by up to 20% per horizon exactly when the policy is about
   to drift; on a budget of a few hundred completions that leaves no penalty when it is needed.

Every random draw is derived from ``(seed, iteration)``, so a run resumed from a checkpoint continues exactly as
an uninterrupted one would.

    criticgym train --agent ppo --env criticgym/SentimentControl-v0 --model smollm2-135m --reward relc
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from criticgym.algos.base import (
    ActorSettings,
    LMAgent,
    ValueHead,
    forward_logprobs_values,
    importance_weights,
    masked_mean,
    masked_whiten,
    token_rewards,
)
from criticgym.rollout import RolloutBatch, SamplingParams

__all__ = ["PPO", "PPOConfig", "ValueHead", "gae", "masked_mean", "masked_whiten", "token_rewards"]


@dataclass
class PPOConfig:
    """PPO hyper-parameters (defaults: RELC's sentiment set-up, scaled to a CPU)."""

    lr: float = 1.41e-5
    """Adam learning rate."""
    epochs: int = 4
    """Passes over each batch."""
    minibatch_size: int = 8
    """Completions per gradient step."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    clip: float = 0.2
    """Policy ratio clip."""
    value_clip: float = 0.2
    """Value prediction clip around the old value."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    kl_coef: float = 0.2
    """Initial weight of the per-token KL penalty to the reference model."""
    adaptive_kl: bool = True
    """Move kl_coef toward kl_target once the KL has reached it (else keep it fixed)."""
    kl_target: float = 6.0
    """Target KL per completion for the adaptive controller."""
    kl_horizon: int = 10_000
    """Horizon (in completions) of the adaptive controller: kl_coef moves by at most 20% per horizon."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    tis_cap: float = 0.0
    """With another sampler (--engine vllm): weight each token's policy loss by min(pi_learner / pi_sampler, tis_cap),
    truncated importance sampling (0: off)."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many lower transformer layers (speed and memory on a CPU)."""

    @property
    def sampling(self) -> SamplingParams:
        """How the rollouts draw their tokens, and the update re-scores them."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over right-padded completions. Returns (advantages, returns), (B, T)."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.size(0), device=rewards.device)
    length = rewards.size(1)
    for t in reversed(range(length)):
        # the value of the next state, 0 after the last token (terminal)
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        next_value = values[:, t + 1] * next_mask if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * next_mask * last
        advantages[:, t] = last * mask[:, t]
    return advantages, (advantages + values) * mask


class PPO(LMAgent):
    """Token-level PPO with a value head, a frozen reference model and a per-token KL penalty.

    Args:
        model: the policy (a transformers causal LM); trained in place.
        tokenizer: its tokenizer.
        envs: a criticgym vector env made with ``autoreset_mode="disabled"``.
        config: hyper-parameters.
        seed: the run's seed.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``: whether forward passes run under bfloat16 autocast
            (:class:`~criticgym.algos.base.LMAgent`).

    Example:
        >>> import criticgym
        >>> from criticgym.rollout import load_policy
        >>> model, tokenizer = load_policy("tiny")
        >>> envs = criticgym.make_vec("criticgym/Words-v0", num_envs=4, autoreset_mode="disabled")
        >>> agent = PPO(model, tokenizer, envs, PPOConfig(lr=1e-3))
        >>> metrics = agent.iterate()
        >>> sorted(k for k in metrics if k.startswith("losses/"))
        ['losses/approx_kl', 'losses/clipfrac', 'losses/entropy', 'losses/policy_loss', 'losses/value_loss']
    """

    def __init__(
        self, model, tokenizer, envs, config: PPOConfig | None = None, seed: int = 0, precision: str = "auto"
    ) -> None:
        self.config = cfg = config or PPOConfig()
        actor = self.actor_settings(cfg)
        super().__init__(model, tokenizer, envs, cfg.lr, actor.kl_coef, seed, actor.freeze_layers, precision=precision)
        self.kl_reached = False  # the adaptive controller starts once the KL has first reached its target

    @classmethod
    def actor_settings(cls, config: PPOConfig) -> ActorSettings:
        """A value head always; a reference model when ``kl_coef > 0``; ``freeze_layers`` frozen."""
        return ActorSettings(config.kl_coef, value_head=True, freeze_layers=config.freeze_layers)

    def state_dict(self):
        """The agent's state and the KL controller's."""
        return {**super().state_dict(), "kl_reached": self.kl_reached}

    def load_state_dict(self, state) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        self.kl_reached = state["kl_reached"]

    # -- one iteration -----------------------------------------------------------------------------------

    def rollout(self) -> RolloutBatch:
        """Sample a batch with the current policy (seeded by the iteration)."""
        self.model.eval()
        return self.play(self.config.sampling)

    def iterate(self) -> dict[str, float]:
        """Roll out, compute advantages, update; returns this iteration's metrics."""
        cfg = self.config
        collected = self.collect()
        batch, mask = collected.batch, collected.mask
        advantages, returns = gae(collected.rewards, batch.values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)

        start = time.perf_counter()
        stats = self._update(batch, advantages, returns, mask)
        update_s = time.perf_counter() - start
        completion_kl = float(collected.kl.sum(1).mean()) if collected.kl is not None else 0.0
        self.kl_reached = self.kl_reached or completion_kl >= cfg.kl_target
        # Ziegler et al.: proportional control of the KL per completion
        if cfg.adaptive_kl and self.kl_reached and self.ref_model is not None:
            error = np.clip(completion_kl / cfg.kl_target - 1, -0.2, 0.2)
            self.kl_coef = float(self.kl_coef * (1 + error * len(mask) / cfg.kl_horizon))
        self.iteration += 1
        n_seq = batch.prompt_mask.sum() + mask.sum()
        return {
            **self.charts(collected),
            **stats,
            "perf/update_tokens_per_s": float(n_seq) * cfg.epochs / update_s,
            "perf/update_s": update_s,
        }

    def _update(self, batch: RolloutBatch, advantages, returns, mask) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        generator = torch.Generator().manual_seed(self.iteration_seed)
        totals: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy")
        }
        n = batch.completion_ids.size(0)
        weights = importance_weights(batch, cfg.tis_cap)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, cfg.minibatch_size):
                rows = order[start : start + cfg.minibatch_size].to(mask.device)
                mb = RolloutBatch(*(v[rows] if isinstance(v, torch.Tensor) else None for v in batch))
                m = mask[rows]
                with self.autocast():
                    logprobs, values = forward_logprobs_values(self.model, self.value_head, mb, cfg.sampling)
                log_ratio = (logprobs - mb.logprobs) * m
                ratio = log_ratio.exp()
                adv = advantages[rows]
                token_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip))
                policy_loss = masked_mean(token_loss * (weights[rows] if weights is not None else 1.0), m)
                clipped = mb.values + (values - mb.values).clamp(-cfg.value_clip, cfg.value_clip)
                value_loss = 0.5 * masked_mean(
                    torch.max((values - returns[rows]) ** 2, (clipped - returns[rows]) ** 2), m
                )
                loss = policy_loss + cfg.vf_coef * value_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.clip_gradients(cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    totals["policy_loss"].append(float(policy_loss))
                    totals["value_loss"].append(float(value_loss))
                    totals["approx_kl"].append(float(masked_mean((ratio - 1) - log_ratio, m)))
                    totals["clipfrac"].append(float(masked_mean(((ratio - 1).abs() > cfg.clip).float(), m)))
                    totals["entropy"].append(float(-masked_mean(logprobs, m)))
        self.model.eval()
        return {f"losses/{k}": float(np.mean(v)) for k, v in totals.items()}
