"""stable-baselines3 on criticgym envs: a causal-LM policy and the callback that delivers hindsight rewards.

    >>> import gymnasium as gym
    >>> from stable_baselines3 import PPO
    >>> from criticgym.algos.sb3 import HindsightRewards, LMPolicy
    >>> env = gym.make("criticgym/Words-v0", model="tiny")
    >>> agent = PPO(LMPolicy, env, n_steps=16, batch_size=16, n_epochs=1, policy_kwargs={"model": "tiny"})
    >>> agent = agent.learn(total_timesteps=16, callback=HindsightRewards())

SB3 steps one token at a time and re-reads the whole observation each step (no KV cache): use it for
compatibility and small models; the built-in agents (:mod:`criticgym.algos.ppo`) are much faster.

:class:`HindsightRewards` does two things in ``on_step``, which SB3 runs after ``env.step`` and before it stores
the step and, later, computes advantages:

- when an episode ends with ``info["token_rewards"]`` (a dense wrapper's hindsight vector), it writes the vector
  onto that episode's steps in the rollout buffer (steps already flushed with an earlier rollout cannot be
  rewritten: their share is added to the last step, so the episode return is unchanged);
- it marks the token budget as a real end, not a time limit, so that SB3 does not bootstrap a value past the
  last token of a completion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from torch import nn
from torch.distributions import Categorical

from criticgym.algos.base import ValueHead
from criticgym.errors import ConfigError
from criticgym.rewards import TOKEN_REWARDS


def check_token_ids(obs: dict[str, torch.Tensor]) -> None:
    """Refuse observations that are not token ids and a 0/1 mask (normalized ones, from ``VecNormalize``)."""
    ids, mask = obs["input_ids"], obs["attention_mask"]
    if torch.equal(ids, ids.round()) and bool((ids >= 0).all()) and bool(((mask == 0) | (mask == 1)).all()):
        return
    raise ConfigError(
        "LMPolicy got observations that are not token ids (non-integer or negative input_ids, or a mask other than "
        "0/1): normalized ones? Wrap the env with VecNormalize(venv, norm_obs=False) (norm_reward may stay on): "
        "token ids must reach the policy as they are."
    )


class LMPolicy(BasePolicy):
    """An actor-critic SB3 policy made of a transformers causal LM and a linear value head.

    Args:
        observation_space: a criticgym observation space (``input_ids`` and ``attention_mask``).
        action_space: ``Discrete(vocab_size)``.
        lr_schedule: SB3's learning-rate schedule.
        use_sde: must be False.
        model: a name for :func:`~criticgym.rollout.load_policy` or a ``(model, tokenizer)`` pair.
        temperature: softmax temperature of the policy.
        lora: keywords of :func:`~criticgym.algos.lora.add_lora` (``{"r": 8}``) to train a LoRA adapter only.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        use_sde: bool = False,
        model: Any = "tiny",
        temperature: float = 1.0,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        lora: dict[str, Any] | None = None,
    ) -> None:
        from criticgym.algos.lora import add_lora
        from criticgym.rollout import load_policy

        if use_sde:
            raise ConfigError("LMPolicy has a discrete action space; use_sde must be False.")
        if not isinstance(observation_space, spaces.Dict) or "input_ids" not in observation_space.spaces:
            raise ConfigError("LMPolicy needs a criticgym env (observations with input_ids and attention_mask).")
        super().__init__(
            observation_space, action_space, optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs
        )
        self.lm, _ = load_policy(model) if isinstance(model, str) else model
        if lora:
            self.lm = add_lora(self.lm, **lora)
        self.value_head = ValueHead(self.lm.config.hidden_size)
        self.temperature = temperature
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def backbone(self) -> nn.Module:
        """The transformer under the output layer (under a LoRA wrapper too: its layers carry the adapter)."""
        from criticgym.algos.lora import is_lora

        return (self.lm.get_base_model() if is_lora(self.lm) else self.lm).base_model

    def _distribution_and_values(self, obs: dict[str, torch.Tensor]) -> tuple[Categorical, torch.Tensor]:
        check_token_ids(obs)
        ids = obs["input_ids"].long()  # SB3's buffer stores observations as float32: ids are exact below 2**24
        mask = obs["attention_mask"].long()
        last = (mask.sum(1) - 1).clamp(min=0)  # (B,) the position whose logits give the next token
        # the backbone alone, then the output layer at that one position per row: (B, V), not (B, W, V)
        hidden = self.backbone(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).last_hidden_state
        hidden = hidden[torch.arange(ids.size(0), device=ids.device), last]  # (B, H)
        logits = self.lm.get_output_embeddings()(hidden)[:, : self.action_space.n].float() / self.temperature
        return Categorical(logits=logits), self.value_head(hidden.float()).squeeze(-1)

    def forward(self, obs, deterministic: bool = False):
        """Actions, values and log-probs for SB3's rollout collection."""
        distribution, values = self._distribution_and_values(obs)
        actions = distribution.probs.argmax(-1) if deterministic else distribution.sample()
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs, actions: torch.Tensor):
        """Values, log-probs and entropy of stored actions, for SB3's update."""
        distribution, values = self._distribution_and_values(obs)
        actions = actions.long().flatten()
        return values, distribution.log_prob(actions), distribution.entropy()

    def predict_values(self, obs) -> torch.Tensor:
        """Values, shape (B, 1)."""
        return self._distribution_and_values(obs)[1].unsqueeze(-1)

    def _predict(self, observation, deterministic: bool = False) -> torch.Tensor:
        return self.forward(observation, deterministic)[0]


class HindsightRewards(BaseCallback):
    """Writes dense hindsight token rewards into SB3's rollout buffer before advantages are computed."""

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._positions: list[list[int]] = []

    def _on_training_start(self) -> None:
        self._positions = [[] for _ in range(self.training_env.num_envs)]

    def _on_rollout_start(self) -> None:
        # positions of the previous rollout no longer exist in the (reset) buffer
        self._flushed = [len(p) for p in self._positions]
        self._positions = [[] for _ in self._positions]

    def _on_step(self) -> bool:
        buffer = self.model.rollout_buffer
        rewards, dones, infos = self.locals["rewards"], self.locals["dones"], self.locals["infos"]
        for env, (done, info) in enumerate(zip(dones, infos, strict=True)):
            self._positions[env].append(buffer.pos)  # this step is stored at buffer.pos after the callback
            if not done:
                continue
            info["TimeLimit.truncated"] = False  # the token budget ends a completion: no bootstrap past it
            vector = info.get(TOKEN_REWARDS)
            if vector is not None:
                vector = np.asarray(vector, dtype=np.float32)
                here = self._positions[env][-len(vector) :]
                lost = len(vector) - len(here)  # steps stored with an earlier rollout
                for position, value in zip(here[:-1], vector[lost:-1], strict=True):
                    buffer.rewards[position, env] = value
                rewards[env] = vector[-1] + vector[:lost].sum()
            self._positions[env] = []
        return True
