"""``criticgym label``, ``train-rm`` and ``eval-judge``: AI preference labels, a reward model on them, judge quality."""

from __future__ import annotations

import json
import shlex
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import tyro

from criticgym.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ConfigError, check_ranges
from criticgym.rewards import DEFAULT_MODEL
from criticgym.utils.files import write_text_atomically
from criticgym.utils.runfolder import output_file, run_folder


def label(
    env: str = "criticgym/SentimentControl-v0",
    policy: str = DEFAULT_MODEL,
    judge: str = DEFAULT_MODEL,
    prompts: int = 256,
    batch_pairs: int = 16,
    temperature: float = 1.0,
    split: str = "train",
    seed: int = 0,
    device: str = "cpu",
    out: str = "prefs.jsonl",
    overwrite: bool = False,
) -> int:
    """Sample pairs of completions and write a soft-label preference dataset (JSONL).

    Args:
        env: a registered criticgym id (its prompts, and its task's judge preamble).
        policy: the model that writes both completions.
        judge: a judge model, label:<model> (its label-word gap), label:self (the policy), or a scorer name.
        prompts: pairs to label (one prompt each).
        batch_pairs: pairs sampled per batch.
        temperature: sampling temperature of the completions.
        split: train or test prompts.
        seed: sampling seed.
        device: cpu, cuda or auto.
        out: the JSONL file to write.
        overwrite: replace out when it exists (without it, an existing file is refused).
    """
    from criticgym.distill.pairs import label_pairs, write_jsonl
    from criticgym.registration import ENV_IDS, make_judge

    options = SimpleNamespace(prompts=prompts, batch_pairs=batch_pairs, temperature=temperature, seed=seed)
    check_ranges(options, dict(prompts=AT_LEAST_1, batch_pairs=AT_LEAST_1, temperature=POSITIVE, seed=NON_NEGATIVE))
    with output_file(out, overwrite=overwrite):
        judge_ = make_judge(judge, ENV_IDS.get(env, env), pairwise=True, policy=policy)
        records = label_pairs(env, policy, judge_, prompts, batch_pairs, temperature, seed, split, device)
        n = write_jsonl(out, records)
    labels = [r["label"] for r in records]
    print(f"Wrote {n} labelled pairs to {out} (mean |label - 0.5| = {sum(abs(x - 0.5) for x in labels) / n:.3f}).")
    return 0


def train_rm(
    data: str,
    backbone: str = "minilm",
    train_layers: int = 0,
    epochs: int = 50,
    lr: float = 3e-3,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    out: str = "rm",
    overwrite: bool = False,
) -> int:
    """Train a reward model on a preference dataset.

    Args:
        data: a JSONL file written by criticgym label.
        backbone: minilm, or a causal LM (smollm2-135m, tiny, a folder).
        train_layers: causal LM: fine-tune this many top layers.
        epochs: passes over the training pairs.
        lr: learning rate.
        batch_size: pairs per step.
        val_fraction: share of pairs held out for validation.
        seed: split and initialization seed.
        device: cpu, cuda or auto.
        out: the folder to save the reward model in.
        overwrite: replace the reward model in out (without it, a folder that holds one is refused).
    """
    from criticgym.distill.fit import train_reward_model
    from criticgym.distill.pairs import read_jsonl

    options = SimpleNamespace(train_layers=train_layers, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    ranges = dict(train_layers=NON_NEGATIVE, epochs=AT_LEAST_1, lr=POSITIVE, batch_size=AT_LEAST_1, seed=NON_NEGATIVE)
    check_ranges(options, ranges)
    if not 0 <= val_fraction < 1:  # a share of the pairs, and some must be left to train on
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}.")
    if not Path(data).is_file():
        raise ConfigError(f"--data {data}: no such file. Write a preference dataset with `criticgym label` first.")
    check_train_layers(backbone, train_layers)
    with run_folder(out, overwrite=overwrite, resume_hint=None):
        model, metrics = train_reward_model(
            read_jsonl(data), backbone, train_layers, epochs, lr, batch_size, val_fraction, seed, device
        )
        folder = model.save(out)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"Saved the reward model to {folder}; train on it with: criticgym train ... --reward sparse --scorer {folder}"
    )
    return 0


@dataclass
class EvalJudgeConfig:
    """Agreement with known labels, position bias and consistency of judges (Rotten Tomatoes test pairs)."""

    judge: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A judge model, label:<model> (label words), or a scorer name; repeat to compare (default: smollm2-135m)."""
    pairs: int = 200
    """Pairs of one fresh and one rotten review."""
    seed: int = 0
    """Which pairs, and which review comes first."""
    out: str | None = None
    """Write the results as JSON (and .md beside it)."""
    overwrite: bool = False
    """Replace out (and its .md) when they exist (without it, existing ones are refused before any judge runs)."""


def eval_judge_command(argv: list[str]) -> int:
    """``criticgym eval-judge``: the judge table, optionally written as JSON and markdown."""
    from criticgym.critics.judge import evaluate_judge
    from criticgym.registration import make_judge

    cfg = tyro.cli(EvalJudgeConfig, args=argv, prog="criticgym eval-judge")
    with ExitStack() as outputs:
        if cfg.out:
            path = Path(cfg.out)
            if path.suffix == ".md":
                raise ConfigError(f"--out {path}: the markdown table goes beside the JSON; give a .json name.")
            for written in (path, path.with_suffix(".md")):
                outputs.enter_context(output_file(written, overwrite=cfg.overwrite))
        results = [
            evaluate_judge(make_judge(name, "sentiment", pairwise=True), cfg.pairs, cfg.seed)
            for name in cfg.judge or (DEFAULT_MODEL,)
        ]
        table = judge_table(results)
        print(table)
        if cfg.out:
            write_text_atomically(path, json.dumps(results, indent=2) + "\n")
            command = "criticgym eval-judge " + shlex.join(argv)
            write_text_atomically(path.with_suffix(".md"), f"# Judge quality\n\nCommand: `{command}`\n\n{table}\n")
    return 0


def judge_table(results: list[dict]) -> str:
    """Judge metrics as a markdown table."""
    lines = [
        "| judge | pairs | agreement (95% CI) | one order only | position bias | consistency | AUC | s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        low, high = r["agreement_ci95"]
        lines.append(
            f"| {r['judge']} | {r['pairs']} | {r['agreement']:.3f} ({low:.3f}-{high:.3f}) "
            f"| {r['agreement_one_order']:.3f} | {r['position_bias_rate']:.3f} (first {r['prefers_first']:.2f}, "
            f"second {r['prefers_second']:.2f}) | {r['consistency']:.3f} "
            f"| {'' if r.get('auc') is None else format(r['auc'], '.3f')} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def check_train_layers(backbone: str, train_layers: int) -> None:
    """Refuse ``--train-layers`` that the backbone cannot take, from its config: before the folder or the weights."""
    if not train_layers:
        return
    if backbone == "minilm":
        raise ConfigError("--train-layers needs a causal-LM backbone (--backbone smollm2-135m); MiniLM stays frozen.")
    from criticgym.rollout.models import layer_count

    layers = layer_count(backbone)
    if layers is not None and train_layers > layers:
        raise ConfigError(f"--train-layers {train_layers}: {backbone} has {layers} layers; train at most {layers}.")
