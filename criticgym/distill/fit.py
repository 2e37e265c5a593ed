"""Fit a reward model to soft preference labels (the second half of distilled RLAIF; ``criticgym train-rm``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from criticgym.critics.reward_model import RewardModel, soft_label_loss
from criticgym.errors import ConfigError
from criticgym.utils.training import adam


class _Pairs:
    """The (a, b) rewards of preference pairs under a reward model; features computed once when only the head trains."""

    def __init__(self, model: RewardModel, rows: Sequence[dict[str, Any]]) -> None:
        self.model, self.rows = model, list(rows)
        self.labels = torch.tensor([float(r["label"]) for r in self.rows])
        self.features = None
        if model.frozen and self.rows:
            with torch.no_grad():
                self.features = (
                    model.features(self._texts("completion_a")),
                    model.features(self._texts("completion_b")),
                )

    def _texts(self, key: str, index=None) -> list[str]:
        rows = self.rows if index is None else [self.rows[i] for i in index]
        return [r["prompt"] + r[key] for r in rows]

    def rewards(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rewards of pairs ``index`` (all pairs when None)."""
        index = torch.arange(len(self.rows)) if index is None else index
        if self.features is not None:
            fa, fb = self.features
            return self.model.head_reward(fa[index]), self.model.head_reward(fb[index])
        return self.model(self._texts("completion_a", index)), self.model(self._texts("completion_b", index))


def _split(records: Sequence[dict[str, Any]], val_fraction: float, seed: int):
    """Held-out and training pairs (a seeded permutation)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = int(round(val_fraction * len(records)))
    val, train = [records[i] for i in order[:n_val]], [records[i] for i in order[n_val:]]
    if not train:
        raise ConfigError(f"No training pairs left out of {len(records)} after holding out {n_val}.")
    return val, train


def _held_out(val: _Pairs) -> dict[str, float]:
    """Soft-label loss on the held-out pairs, and how often the reward difference has the label's sign."""
    r_a, r_b = val.rewards()
    y = val.labels
    decided = y != 0.5
    agree = torch.sign(r_a - r_b)[decided] == torch.sign(y - 0.5)[decided]
    accuracy = float(agree.float().mean()) if decided.any() else float("nan")
    return {"val_loss": soft_label_loss(r_a, r_b, y).item(), "val_accuracy": accuracy}


def train_reward_model(
    records: Sequence[dict[str, Any]],
    backbone: str = "minilm",
    train_layers: int = 0,
    epochs: int = 50,
    lr: float = 3e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> tuple[RewardModel, dict[str, Any]]:
    """Fit a :class:`RewardModel` to soft labels; returns it (standardized on the training texts) and metrics.

    ``val_fraction`` of the pairs are held out; ``val_accuracy`` is the fraction of held-out pairs (whose label is
    not exactly 0.5) on which the model's reward difference has the sign of ``label - 0.5``.
    """
    val_rows, train_rows = _split(records, val_fraction, seed)
    torch.manual_seed(seed)
    model = RewardModel(backbone, train_layers, device=device)
    optimizer = adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    start_time = time.perf_counter()
    train, val = _Pairs(model, train_rows), _Pairs(model, val_rows)
    history = []
    for _ in range(epochs):
        model.train()
        permutation = torch.randperm(len(train_rows))
        total = 0.0
        for i in range(0, len(train_rows), batch_size):
            index = permutation[i : i + batch_size]
            loss = soft_label_loss(*train.rewards(index), train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(train_rows))
    metrics: dict[str, Any] = {"pairs": len(records), "train_pairs": len(train_rows), "val_pairs": len(val_rows)}
    metrics["train_loss"] = history[-1]
    model.eval()
    with torch.no_grad():
        if val_rows:
            metrics.update(_held_out(val))
        train_rewards = torch.cat(train.rewards())
        model.offset.fill_(float(train_rewards.mean()))
        model.scale.fill_(float(train_rewards.std().clamp(min=1e-6)))
    metrics["seconds"] = time.perf_counter() - start_time
    metrics["loss_curve"] = history
    log(
        f"reward model ({backbone}): train loss {metrics['train_loss']:.4f}"
        + (f", held-out loss {metrics['val_loss']:.4f}, accuracy {metrics['val_accuracy']:.3f}" if val_rows else "")
    )
    return model, metrics
