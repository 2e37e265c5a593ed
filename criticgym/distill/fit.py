"""Fit a reward model to soft preference labels (the second half of distilled RLAIF; ``criticgym train-rm``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from criticgym.critics.reward_model import RewardModel, soft_label_loss
from criticgym.errors import ConfigError


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
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    n_val = int(round(val_fraction * len(records)))
    val, train = [records[i] for i in order[:n_val]], [records[i] for i in order[n_val:]]
    if not train:
        raise ConfigError(f"No training pairs left out of {len(records)} after holding out {n_val}.")
    model = RewardModel(backbone, train_layers, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)

    def texts(rows, key):
        return [r["prompt"] + r[key] for r in rows]

    def labels(rows):
        return torch.tensor([float(r["label"]) for r in rows])

    start_time = time.perf_counter()
    cached = {}
    if model.frozen:  # only the head trains: compute every feature once
        with torch.no_grad():
            for name, rows in (("train", train), ("val", val)):
                if rows:
                    cached[name] = (
                        model.features(texts(rows, "completion_a")),
                        model.features(texts(rows, "completion_b")),
                    )

    def rewards(name, rows, index):
        if model.frozen:
            fa, fb = cached[name]
            return model.head_reward(fa[index]), model.head_reward(fb[index])
        chosen = [rows[i] for i in index]
        return model(texts(chosen, "completion_a")), model(texts(chosen, "completion_b"))

    y_train = labels(train)
    history = []
    for _ in range(epochs):
        model.train()
        permutation = torch.randperm(len(train))
        total = 0.0
        for i in range(0, len(train), batch_size):
            index = permutation[i : i + batch_size]
            r_a, r_b = rewards("train", train, index)
            loss = soft_label_loss(r_a, r_b, y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(train))
    metrics: dict[str, Any] = {"pairs": len(records), "train_pairs": len(train), "val_pairs": len(val)}
    metrics["train_loss"] = history[-1]
    model.eval()
    with torch.no_grad():
        if val:
            r_a, r_b = rewards("val", val, torch.arange(len(val)))
            y = labels(val)
            metrics["val_loss"] = soft_label_loss(r_a, r_b, y).item()
            decided = y != 0.5
            agree = torch.sign(r_a - r_b)[decided] == torch.sign(y - 0.5)[decided]
            metrics["val_accuracy"] = float(agree.float().mean()) if decided.any() else float("nan")
        train_rewards = torch.cat(rewards("train", train, torch.arange(len(train))))
        model.offset.fill_(float(train_rewards.mean()))
        model.scale.fill_(float(train_rewards.std().clamp(min=1e-6)))
    metrics["seconds"] = time.perf_counter() - start_time
    metrics["loss_curve"] = history
    log(
        f"reward model ({backbone}): train loss {metrics['train_loss']:.4f}"
        + (f", held-out loss {metrics['val_loss']:.4f}, accuracy {metrics['val_accuracy']:.3f}" if val else "")
    )
    return model, metrics
