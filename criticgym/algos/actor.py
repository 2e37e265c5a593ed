"""The actor: what plays and scores a batch (the policy, its frozen reference, the value head, their engine).

It holds no optimizer. A learner (:class:`~criticgym.algos.base.LMAgent`) adds one to its actor and trains it; a
rollout worker (:mod:`criticgym.sources.workers`) builds an actor alone from the run's config and loads the
learner's trainable weights into its engine before each batch.
What an algorithm's actor holds follows from its config alone (``actor_settings`` of each agent class), so both
processes build the same one.

Example:
    >>> from criticgym.rollout import load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> actor = Actor(model, tokenizer, ActorSettings(kl_coef=0.1, value_head=True))
    >>> actor.ref_model is not None, actor.value_head is not None
    (True, True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from criticgym import flops
from criticgym.errors import ConfigError
from criticgym.rollout import RolloutEngine
from criticgym.utils.training import autocast, freeze_lower_layers, mixed_precision


@dataclass(frozen=True)
class ActorSettings:
    """What an actor holds, decided by an algorithm's config.

    Attributes:
        kl_coef: the initial weight of the KL penalty; above 0 the actor holds a frozen reference model (a copy of
            the initial policy, or with LoRA the base with the adapter off) and the engine scores the reference's
            log-probs of every sampled token.
        value_head: hold a value head (PPO, REINFORCE with a value baseline) whose values the engine records.
        freeze_layers: freeze the embeddings and this many lower transformer layers of the policy.
    """

    kl_coef: float = 0.0
    value_head: bool = False
    freeze_layers: int = 0


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


class Actor:
    """The policy with what plays and scores its batches, and nothing that trains them.

    Args:
        model: the policy (a transformers causal LM, or a LoRA policy from :func:`~criticgym.algos.lora.add_lora`).
        tokenizer: its tokenizer.
        settings: reference model, value head and frozen layers (:class:`ActorSettings`).
        precision: ``"auto"`` (bfloat16 autocast on a CUDA device that supports it, float32 elsewhere), ``"bf16"``
            or ``"fp32"``: the forward passes' precision; weights stay as loaded.
    """

    def __init__(self, model, tokenizer, settings: ActorSettings | None = None, precision: str = "auto") -> None:
        from criticgym.algos.lora import BaseModel, is_lora

        settings = settings or ActorSettings()
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.lora = is_lora(model)
        flops.track(model.get_base_model() if self.lora else model)  # peft calls its base model: count it once
        self.device = next(model.parameters()).device
        self.precision, self.mixed_precision = precision, mixed_precision(precision, self.device)
        if self.lora and settings.freeze_layers:
            raise ConfigError("freeze_layers does nothing with LoRA (the base weights are frozen); set it to 0.")
        if settings.kl_coef <= 0:
            self.ref_model = None
        elif self.lora:
            self.ref_model = BaseModel(model)  # the same weights with the adapter off: no copy
        else:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.value_head = ValueHead(model.config.hidden_size).to(self.device) if settings.value_head else None
        freeze_lower_layers(model, settings.freeze_layers)
        self.engine = RolloutEngine(model, tokenizer, ref_model=self.ref_model, value_head=self.value_head)

    def policy_parameters(self) -> list[nn.Parameter]:
        """The policy's parameters that train (with LoRA the adapter's; frozen layers excluded)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def value_parameters(self) -> list[nn.Parameter]:
        """The value head's parameters (none without one)."""
        return list(self.value_head.parameters()) if self.value_head is not None else []

    def autocast(self) -> torch.autocast:
        """The context of every forward pass: bfloat16 autocast under mixed precision, else a no-op."""
        return autocast(self.precision, self.device)
