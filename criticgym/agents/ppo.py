"""Token-level PPO for causal language models, on the rollout engine and a criticgym vector env.

One iteration (RELC's recipe, PAPERS.md section 1):

1. The engine samples one completion per sub-env (B prompts), with the sampled tokens' log-probs and the value
   head's values; the reference model re-scores the batch in one forward pass.
2. Rewards per token: the env's hindsight ``token_rewards`` when a dense wrapper wrote them (else the step
   rewards), minus ``kl_coef * (logp - logp_ref)`` on every token.
3. GAE (gamma, lambda) over completion tokens only; advantages whitened over the batch.
4. ``epochs`` passes of minibatches: one forward pass over whole sequences re-scores log-probs and values;
   clipped policy loss, clipped value loss, gradient clipping.
5. The adaptive KL controller (Ziegler et al. 2019) moves ``kl_coef`` toward ``kl_target``.

Every random draw is derived from ``(seed, iteration)``, so a run resumed from a checkpoint continues exactly as
an uninterrupted one would.

    criticgym train --agent ppo --env criticgym/SentimentControl-v0 --reward relc --model smollm2-135m
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from criticgym.rollout import RolloutBatch, RolloutEngine


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
    """Move kl_coef toward kl_target (else keep it fixed)."""
    kl_target: float = 6.0
    """Target KL per completion for the adaptive controller."""
    kl_horizon: int = 10_000
    """Horizon (in completions) of the adaptive controller."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    freeze_layers: int = 0
    """Freeze the embeddings and this many lower transformer layers (speed and memory on a CPU)."""


class ValueHead(nn.Module):
    """A linear value head on the last hidden state, initialized to predict 0."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., 1)."""
        return self.linear(hidden)


def token_rewards(batch: RolloutBatch) -> torch.Tensor:
    """(B, T) rewards per completion token: the hindsight vectors where the env gave them, else step rewards."""
    rewards = batch.rewards.clone().float() if batch.rewards is not None else torch.zeros_like(batch.logprobs)
    for row, info in enumerate(batch.infos or []):
        vector = info.get("token_rewards")
        if vector is not None:
            rewards[row] = 0.0
            rewards[row, : len(vector)] = torch.as_tensor(np.asarray(vector, dtype=np.float32))
    return rewards * batch.completion_mask


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


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries."""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def forward_logprobs_values(model, value_head, batch: RolloutBatch, temperature: float):
    """Log-probs and values of the completion tokens in one forward pass over whole sequences, (B, T) each."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), output_hidden_states=True
    )
    width = batch.prompt_ids.size(1)
    logits = out.logits[:, width - 1 : -1].float() / temperature  # position i predicts token i + 1
    logprobs = torch.gather(logits.log_softmax(-1), 2, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    hidden = out.hidden_states[-1][:, width - 1 : -1]
    values = value_head(hidden.to(value_head.linear.weight.dtype)).squeeze(-1).float()
    return logprobs, values


class PPO:
    """Token-level PPO with a value head, a frozen reference model and a per-token KL penalty.

    Args:
        model: the policy (a transformers causal LM); trained in place.
        tokenizer: its tokenizer.
        envs: a criticgym vector env made with ``autoreset_mode="disabled"``.
        config: hyper-parameters.
        seed: the run's seed.

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

    def __init__(self, model, tokenizer, envs, config: PPOConfig | None = None, seed: int = 0) -> None:
        self.config = config or PPOConfig()
        self.model, self.tokenizer, self.envs, self.seed = model, tokenizer, envs, seed
        device = next(model.parameters()).device
        self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.value_head = ValueHead(model.config.hidden_size).to(device)
        _freeze_lower_layers(model, self.config.freeze_layers)
        params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.Adam(params, lr=self.config.lr)
        self.engine = RolloutEngine(model, tokenizer, ref_model=self.ref_model, value_head=self.value_head)
        self.kl_coef = self.config.kl_coef
        self.iteration = 0

    # -- one iteration -----------------------------------------------------------------------------------

    def rollout(self) -> RolloutBatch:
        """Sample a batch with the current policy (seeded by the iteration)."""
        self.model.eval()
        return self.engine.rollout(
            self.envs,
            seed=self.seed * 1_000_003 + self.iteration,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
        )

    def iterate(self) -> dict[str, float]:
        """Roll out, compute advantages, update; returns this iteration's metrics."""
        cfg = self.config
        start = time.perf_counter()
        batch = self.rollout()
        rollout_s = time.perf_counter() - start
        mask = batch.completion_mask.float()
        scores = token_rewards(batch)
        kl = (batch.logprobs - batch.ref_logprobs) * mask  # (B, T) per-token KL estimate
        rewards = scores - self.kl_coef * kl
        advantages, returns = gae(rewards, batch.values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)

        start = time.perf_counter()
        stats = self._update(batch, advantages, returns, mask)
        update_s = time.perf_counter() - start
        completion_kl = float(kl.sum(1).mean())
        if cfg.adaptive_kl:  # Ziegler et al.: proportional control of the KL per completion
            error = np.clip(completion_kl / cfg.kl_target - 1, -0.2, 0.2)
            self.kl_coef *= 1 + error * len(mask) / cfg.kl_horizon
        self.iteration += 1
        tokens = float(mask.sum())
        n_seq = batch.prompt_mask.sum() + mask.sum()
        return {
            "charts/episodic_return": float(scores.sum(1).mean()),
            "charts/kl": completion_kl,
            "charts/kl_coef": self.kl_coef,
            "charts/completion_tokens": float(mask.sum(1).mean()),
            **stats,
            "perf/rollout_tokens_per_s": tokens / rollout_s,
            "perf/update_tokens_per_s": float(n_seq) * cfg.epochs / update_s,
            "perf/rollout_s": rollout_s,
            "perf/update_s": update_s,
        }

    def _update(self, batch: RolloutBatch, advantages, returns, mask) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.iteration)
        totals: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy")
        }
        n = batch.completion_ids.size(0)
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, cfg.minibatch_size):
                rows = order[start : start + cfg.minibatch_size].to(mask.device)
                mb = RolloutBatch(*(v[rows] if isinstance(v, torch.Tensor) else None for v in batch))
                m = mask[rows]
                logprobs, values = forward_logprobs_values(self.model, self.value_head, mb, cfg.temperature)
                log_ratio = (logprobs - mb.logprobs) * m
                ratio = log_ratio.exp()
                adv = advantages[rows]
                policy_loss = masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)), m)
                clipped = mb.values + (values - mb.values).clamp(-cfg.value_clip, cfg.value_clip)
                value_loss = 0.5 * masked_mean(
                    torch.max((values - returns[rows]) ** 2, (clipped - returns[rows]) ** 2), m
                )
                loss = policy_loss + cfg.vf_coef * value_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                )
                self.optimizer.step()
                with torch.no_grad():
                    totals["policy_loss"].append(float(policy_loss))
                    totals["value_loss"].append(float(value_loss))
                    totals["approx_kl"].append(float(masked_mean((ratio - 1) - log_ratio, m)))
                    totals["clipfrac"].append(float(masked_mean(((ratio - 1).abs() > cfg.clip).float(), m)))
                    totals["entropy"].append(float(-masked_mean(logprobs, m)))
        self.model.eval()
        return {f"losses/{k}": float(np.mean(v)) for k, v in totals.items()}

    # -- checkpoints -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, KL controller, iteration."""
        return {
            "model": self.model.state_dict(),
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl_coef,
            "iteration": self.iteration,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the reference model stays the initial policy)."""
        self.model.load_state_dict(state["model"])
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef, self.iteration, self.seed = state["kl_coef"], state["iteration"], state["seed"]


def _freeze_lower_layers(model, n: int) -> None:
    if n <= 0:
        return
    model.get_input_embeddings().requires_grad_(False)
    layers = getattr(getattr(model, "model", model), "layers", None)
    if layers is None:
        raise ValueError("freeze_layers needs a model with model.layers (Llama-style).")
    for layer in layers[:n]:
        layer.requires_grad_(False)  # with tied embeddings the output layer is frozen with the input one
