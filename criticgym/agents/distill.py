"""Distilled RLAIF: label preference pairs with an AI judge, then train a reward model on the soft labels.

    criticgym label --env criticgym/SentimentControl-v0 --judge smollm2-135m --prompts 256 --out prefs.jsonl
    criticgym train-rm --data prefs.jsonl --backbone minilm --out rm/
    criticgym train --reward sparse --scorer rm/ --agent reinforce ...

A preference record (one JSON object per line) holds ``prompt``, ``completion_a``, ``completion_b``,
``p_first_ab`` (the judge's P(option 1) with a shown first), ``p_first_ba`` (P(option 1) with b shown first),
``label`` (P(a better), both orders averaged) and ``judge``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from criticgym.critics.judge import swap_average
from criticgym.critics.reward_model import RewardModel, soft_label_loss
from criticgym.errors import ConfigError

FIELDS = ("prompt", "completion_a", "completion_b", "p_first_ab", "p_first_ba", "label", "judge")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records, one JSON object per line, atomically; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a preference dataset (the fields of :data:`FIELDS`, labels in [0, 1])."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}, line {number}: not JSON ({error.msg}).") from None
        missing = [f for f in ("prompt", "completion_a", "completion_b", "label") if f not in record]
        if missing:
            raise ConfigError(f"{path}, line {number}: missing {missing}; a preference record needs {list(FIELDS)}.")
        if not 0.0 <= float(record["label"]) <= 1.0:
            raise ConfigError(f"{path}, line {number}: label {record['label']} is not a probability in [0, 1].")
        records.append(record)
    if not records:
        raise ConfigError(f"{path} holds no preference records.")
    return records


def label_pairs(
    env_id: str,
    policy: str,
    judge: Any,
    prompts: int = 256,
    batch_pairs: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    split: str = "train",
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Sample two completions of each prompt with ``policy`` and label every pair in both orders with ``judge``."""
    import criticgym
    from criticgym.envs import play
    from criticgym.rollout import RolloutEngine, load_policy

    if prompts < 1 or batch_pairs < 1:
        raise ConfigError("prompts and batch_pairs must be at least 1.")
    model, tokenizer = load_policy(policy, device=device)
    engine = RolloutEngine(model, tokenizer)
    envs = criticgym.make_vec(
        env_id, num_envs=2 * batch_pairs, reward=None, model=tokenizer, split=split, autoreset_mode="disabled"
    )
    name = getattr(judge, "name", None) or type(judge).__name__
    records: list[dict[str, Any]] = []
    for start in range(0, prompts, batch_pairs):
        batch = play(engine, envs, seed=seed + start, temperature=temperature, options={"group_size": 2})
        infos = batch.infos[: 2 * min(batch_pairs, prompts - start)]
        contexts = [info["prompt"] for info in infos[0::2]]
        a, b = [info["completion"] for info in infos[0::2]], [info["completion"] for info in infos[1::2]]
        p_ab, p_ba = judge.prefer_both_orders(contexts, a, b)
        for i, context in enumerate(contexts):
            record = {"prompt": context, "completion_a": a[i], "completion_b": b[i]}
            record.update(p_first_ab=float(p_ab[i]), p_first_ba=float(p_ba[i]))
            record.update(label=float(swap_average(p_ab[i], p_ba[i])), judge=name)
            records.append(record)
    return records


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
