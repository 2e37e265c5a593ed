"""LoRA adapters (peft): the policy trains an adapter, and the reference model is the same weights without it.

With ``lora_r > 0`` the policy is wrapped by :func:`add_lora` before an agent is built. The agent then trains only
the adapter, and its reference model is :class:`BaseModel`, a view that runs the policy with the adapter disabled:
no second copy of the weights. A checkpoint holds the adapter alone (:func:`adapter_state`).

    criticgym train --lora-r 8 --lora-alpha 16 --ppo.lr 1e-3
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from criticgym.errors import ConfigError, require


def add_lora(model, r: int = 8, alpha: float = 16.0, targets: str = "all-linear", dropout: float = 0.0):
    """Wrap a causal LM with a fresh LoRA adapter on ``targets`` (comma-separated module names, or "all-linear").

    The base weights are frozen; the adapter's B matrices start at zero, so the wrapped model computes exactly what
    the base model did.
    """
    peft = require("peft", "peft", "LoRA adapters")
    if r < 1:
        raise ConfigError(f"lora_r must be at least 1 to add an adapter, got {r}.")
    modules: Any = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=modules, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM"
    )
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"LoRA could not wrap the model: {exc} Name other --lora-targets.") from exc
    return wrapped


def is_lora(model) -> bool:
    """Whether ``model`` is a peft model with an adapter."""
    return callable(getattr(model, "disable_adapter", None)) and hasattr(model, "peft_config")


class BaseModel(nn.Module):
    """The base model under a LoRA policy: calls run the policy with its adapter disabled (no weights of its own)."""

    def __init__(self, lora_model) -> None:
        super().__init__()
        self.__dict__["policy"] = lora_model  # not a submodule: its parameters belong to the policy

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # config, generation_config, ...: the policy's
            return getattr(self.__dict__["policy"], name)

    def get_base_model(self):
        """The transformers model under the adapter (its forward's signature names the cache keyword)."""
        return self.policy.get_base_model()

    def parameters(self, recurse: bool = True):
        """The policy's parameters (for device and dtype look-ups)."""
        return self.policy.parameters(recurse)

    def forward(self, *args, **kwargs):
        """The policy's forward with the adapter off."""
        with self.policy.disable_adapter():
            return self.policy(*args, **kwargs)


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights alone."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`adapter_state` into a model wrapped with the same LoRA settings."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"The adapter does not fit this model (unexpected keys such as {unexpected[0]!r}).")
