"""Preference pairs for distilled RLAIF: sample two completions, label them in both orders with an AI judge.

    criticgym label --env criticgym/SentimentControl-v0 --judge smollm2-135m --prompts 256 --out prefs.jsonl
    criticgym train-rm --data prefs.jsonl --backbone minilm --out rm/
    criticgym train --agent reinforce ... --reward sparse --scorer rm/

A preference record (one JSON object per line) holds ``prompt``, ``completion_a``, ``completion_b``,
``p_first_ab`` (the judge's P(option 1) with a shown first), ``p_first_ba`` (P(option 1) with b shown first),
``label`` (P(a better), both orders averaged) and ``judge``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from criticgym.critics.judge import both_orders, swap_average
from criticgym.errors import ConfigError
from criticgym.utils.files import write_jsonl

__all__ = ["FIELDS", "label_pairs", "read_jsonl", "write_jsonl"]

FIELDS = ("prompt", "completion_a", "completion_b", "p_first_ab", "p_first_ba", "label", "judge")


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
    from criticgym.rollout import RolloutEngine, SamplingParams, load_policy
    from criticgym.sources import play

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
        batch = play(
            engine, envs, seed=seed + start, sampling=SamplingParams(temperature=temperature), options={"group_size": 2}
        )
        infos = batch.infos[: 2 * min(batch_pairs, prompts - start)]
        contexts = [info["prompt"] for info in infos[0::2]]
        a, b = [info["completion"] for info in infos[0::2]], [info["completion"] for info in infos[1::2]]
        p_ab, p_ba = both_orders(judge, contexts, a, b)
        for i, context in enumerate(contexts):
            record = {"prompt": context, "completion_a": a[i], "completion_b": b[i]}
            record.update(p_first_ab=float(p_ab[i]), p_first_ba=float(p_ba[i]))
            record.update(label=float(swap_average(p_ab[i], p_ba[i])), judge=name)
            records.append(record)
    return records
