"""Reward models distilled from soft preference labels (distilled RLAIF, Lee et al. 2023, arXiv 2309.00267).

A :class:`RewardModel` maps a text (prompt + completion) to a scalar: a small MLP head on either frozen MiniLM
sentence embeddings (``backbone="minilm"``, fast on a CPU) or the last hidden state of a causal LM
(``backbone="smollm2-135m"``, ``"tiny"``, a folder or a hub id), optionally fine-tuning its top
``train_layers`` layers. It trains with :func:`soft_label_loss`, the cross-entropy of the pair's soft label
under the Bradley-Terry model, ``-[p log s(r_a - r_b) + (1 - p) log s(r_b - r_a)]``.

:class:`RewardModelScorer` loads a saved model as a scorer, so it plugs into the sparse extrinsic reward:
``gym.make(id, reward="sparse", scorer="path/to/reward-model")`` (any folder holding ``reward_model.json``).
Training lives in :mod:`criticgym.distill.fit` (``criticgym train-rm``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from criticgym.errors import ConfigError

CONFIG = "reward_model.json"


def soft_label_loss(r_a: torch.Tensor, r_b: torch.Tensor, p_a: torch.Tensor) -> torch.Tensor:
    """Mean soft-label Bradley-Terry loss; ``p_a`` is the probability that a is the better completion."""
    margin = r_a - r_b
    return -(p_a * F.logsigmoid(margin) + (1.0 - p_a) * F.logsigmoid(-margin)).mean()


class RewardModel(nn.Module):
    """A scalar reward for a text: an MLP head on a sentence embedding or on a causal LM's last hidden state.

    Args:
        backbone: ``"minilm"`` or a causal LM (built-in name, folder or hub id).
        train_layers: causal LM only: fine-tune this many top layers (0 keeps the backbone frozen).
        hidden: width of the head's hidden layer.
        device: where the causal LM runs.
    """

    def __init__(self, backbone: str = "minilm", train_layers: int = 0, hidden: int = 64, device: str = "cpu"):
        super().__init__()
        self.backbone, self.train_layers, self.hidden = backbone, int(train_layers), int(hidden)
        self.lm = self.tokenizer = None
        if backbone == "minilm":
            if train_layers:
                raise ConfigError("train_layers needs a causal-LM backbone; MiniLM embeddings stay frozen.")
            width = 384
        else:
            from criticgym.rollout import load_policy

            trained = torch.float32 if train_layers else None  # updated weights stay float32 on CUDA too
            self.lm, self.tokenizer = load_policy(backbone, device=device, dtype=trained)
            self.lm.requires_grad_(False)
            decoder = self.lm.get_decoder()
            layers = decoder.layers
            if not 0 <= train_layers <= len(layers):
                raise ConfigError(f"train_layers must be between 0 and {len(layers)}, got {train_layers}.")
            for layer in list(layers)[len(layers) - train_layers :]:
                layer.requires_grad_(True)
            if train_layers:
                decoder.norm.requires_grad_(True)
            width = self.lm.config.hidden_size
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("offset", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    @property
    def frozen(self) -> bool:
        """True when only the head trains (features can be computed once)."""
        return self.train_layers == 0

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, width) backbone features (with gradients when layers are trained)."""
        if self.lm is None:
            from criticgym.critics.embeddings import embed

            return torch.from_numpy(embed(texts))
        from criticgym.rollout import left_pad

        device = next(self.lm.parameters()).device
        eos = self.tokenizer.eos_token_id
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] or [eos] for t in texts]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        ids, mask = left_pad(encoded, pad, device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.lm.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions)
        return out.last_hidden_state[:, -1].float().cpu()  # left-padded: the last position is every text's end

    def head_reward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, width) -> (N,) raw rewards."""
        return self.head(features).squeeze(-1)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw rewards of texts, (N,)."""
        return self.head_reward(self.features(texts))

    @torch.no_grad()
    def reward(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Standardized rewards (``(raw - offset) / scale``, set from the training texts), (N,)."""
        self.eval()
        raw = torch.cat([self(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
        return (raw - self.offset) / self.scale

    def save(self, folder: str | Path) -> Path:
        """Write ``reward_model.json`` and the trained weights into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        trained = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        trained.update(offset=self.offset, scale=self.scale)
        if self.lm is not None and self.train_layers:
            trained.update({f"lm.{n}": p.detach() for n, p in self.lm.named_parameters() if p.requires_grad})
        save_file({k: v.contiguous().cpu() for k, v in trained.items()}, str(folder / "weights.safetensors"))
        config = {"backbone": self.backbone, "train_layers": self.train_layers, "hidden": self.hidden}
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> RewardModel:
        """Load a model written by :meth:`save`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG).exists():
            raise ConfigError(f"{folder} holds no {CONFIG}; train a reward model with `criticgym train-rm` first.")
        config = json.loads((folder / CONFIG).read_text())
        model = cls(config["backbone"], config["train_layers"], config["hidden"], device=device)
        weights = load_file(str(folder / "weights.safetensors"))
        model.head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
        model.offset.copy_(weights["offset"])
        model.scale.copy_(weights["scale"])
        if model.lm is not None:
            lm = {k[3:]: v for k, v in weights.items() if k.startswith("lm.")}
            model.lm.load_state_dict(lm, strict=False)
        return model.eval()


class RewardModelScorer:
    """A trained :class:`RewardModel` as a scorer (standardized reward of prompt + completion).

    Args:
        model: a :class:`RewardModel` or the folder it was saved to.
    """

    def __init__(self, model: RewardModel | str | Path, device: str = "cpu") -> None:
        self.path = None if isinstance(model, RewardModel) else str(model)
        self.model = model if isinstance(model, RewardModel) else RewardModel.load(model, device=device)

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            return self.__dict__
        return {"path": self.path, "model": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.model is None:
            self.model = RewardModel.load(self.path)

    def score(self, prompts, completions, references=None) -> list[float]:
        """The reward model's standardized reward of each prompt + completion."""
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        return self.model.reward(texts).tolist()


def is_reward_model(path: str) -> bool:
    """Whether ``path`` is a folder holding a saved reward model."""
    return (Path(path) / CONFIG).is_file()
