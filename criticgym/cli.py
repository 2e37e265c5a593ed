"""The ``criticgym`` command line.

Every subcommand's options come from a typed dataclass or function (tyro); ``criticgym <command> --help`` lists
them with their doc lines.

criticgym demo                      # sentiment control with smollm2-135m and critic span rewards, on a CPU
criticgym train --env criticgym/SentimentControl-v0 --agent ppo --iterations 30 --out runs/x relc --critic lexicon
criticgym train --agent rloo --reinforce.k 4 --reinforce.lr 2e-5        # nested agent options
criticgym eval --model smollm2-135m --env criticgym/SentimentControl-v0  # held-out table of a model
criticgym eval --checkpoint runs/x                                       # a trained run against its base model
criticgym bench ablation --arms sparse,relc-lexicon,random --seeds 3     # reward ablation
criticgym search --method vanilla,best-of-n,rain --evaluator vader --prompts 16  # inference-time search (RAIN)
criticgym label --judge smollm2-135m --prompts 256 --out prefs.jsonl     # AI preference labels (RLAIF)
criticgym train-rm --data prefs.jsonl --out rm                           # reward model on the soft labels
criticgym eval-judge --judge smollm2-135m --pairs 200                    # judge agreement and position bias
criticgym self-evolve --env criticgym/Arithmetic-v0 --rounds 2 --out runs/self  # SELF: learn from feedback in words
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any

import tyro

from criticgym.errors import AT_LEAST_1, NON_NEGATIVE, POSITIVE, ConfigError, CriticGymError, check_ranges
from criticgym.rewards import DEFAULT_MODEL
from criticgym.utils.files import disk_full, write_text_atomically
from criticgym.utils.options import parsed
from criticgym.utils.runfolder import output_file, run_folder

if TYPE_CHECKING:
    from criticgym.train.config import TrainConfig


def demo_config() -> TrainConfig:
    """The settings of ``criticgym demo`` (and ``make demo``); any option overrides them."""
    from criticgym.algos.ppo import PPOConfig
    from criticgym.rewards import DEFAULT_MODEL, Relc
    from criticgym.train.config import TrainConfig

    return TrainConfig(
        env="criticgym/SentimentControl-v0",
        reward=Relc(critic="lexicon"),
        agent="ppo",
        model=DEFAULT_MODEL,
        iterations=40,
        num_envs=16,
        # RELC's KL target; the controller starts once the KL reaches it, then moves kl_coef by up to 20% per
        # iteration of 16 completions
        ppo=PPOConfig(lr=5e-5, kl_coef=0.1, kl_target=6.0, kl_horizon=16, epochs=2, minibatch_size=8, freeze_layers=20),
        eval_every=10,
        eval_prompts=32,
        checkpoint_every=5,
        out="runs/demo",
        resume_if_any=True,  # run again, the demo continues (or shows) the run in its folder
    )


# -- train, demo, eval -----------------------------------------------------------------------------------

LABELS = {
    "eval/reward": "mean reward (the training reward)",
    "eval/score": "task score",
    "eval/perplexity": "perplexity under the reference",
    "eval/distinct_1": "distinct-1",
    "eval/distinct_2": "distinct-2",
}


def metric_label(key: str) -> str:
    """A held-out metric's name for people: ``eval/percent_positive_vader`` -> ``% positive (vader)``."""
    if key in LABELS:
        return LABELS[key]
    name = key.removeprefix("eval/")
    if name.startswith("percent_"):
        rate, _, judge = name.removeprefix("percent_").partition("_")
        return f"% {rate} ({judge})" if judge else f"% {rate}"
    return name.replace("_", " ")


def held_out_table(columns: dict[str, dict[str, Any]]) -> str:
    """``eval/*`` metrics of one or more evaluations, one column each, as aligned text."""
    keys = [k for k in next(iter(columns.values())) if k.startswith("eval/")]
    width = max(12, *(len(name) + 2 for name in columns))
    lines = [f"  {'metric':<36}" + "".join(f"{name:>{width}}" for name in columns)]
    for key in keys:
        row = "".join(f"{c.get(key, float('nan')):>{width}.3f}" for c in columns.values())
        lines.append(f"  {metric_label(key):<36}" + row)
    return "\n".join(lines)


def _bold(text: str) -> str:
    """Bold on a terminal; plain text when the output is redirected."""
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


def _samples(title: str, result: dict[str, Any], n: int = 4) -> str:
    lines = [f"\nSamples {title}:"]
    for sample in result["samples"][:n]:
        lines.append(f"  [{sample['reward']:+.2f}] {sample['prompt']}{_bold(sample['completion'])}")
    return "\n".join(lines)


def _report(result: dict) -> None:
    first, last = result["evals"][0], result["evals"][-1]
    print(f"\nHeld-out evaluation ({first.get('prompts', 'held-out')} test prompts, top-p 0.9):")
    print(held_out_table({"before": first, "after": last}))
    print(_samples("before training", first) + "\n" + _samples("after training", last))
    out = result["out"]
    print(f"\nWrote {out}/metrics.csv, {out}/samples.md, {out}/curves.png, {out}/checkpoint.pt and {out}/policy")


def train_command(argv: list[str]) -> int:
    """``criticgym train``: train, then print the held-out table before and after."""
    from criticgym.train.driver import config_from_args, train

    _report(train(config_from_args(argv)))
    return 0


def demo_command(argv: list[str]) -> int:
    """``criticgym demo``: ``train`` with the settings of :func:`demo_config`."""
    from criticgym.critics.scorers import CLASSIFIER_CACHE
    from criticgym.rewards import DEFAULT_MODEL, Relc
    from criticgym.rollout.models import is_built
    from criticgym.train.driver import config_from_args, train

    default = demo_config()
    if "--overwrite" in argv:  # start over: the one case in which the demo does not continue its folder
        default = replace(default, resume_if_any=False)
    cfg = config_from_args(argv, default=default, prog="criticgym demo")
    if cfg.resume_if_any and (Path(cfg.out) / "checkpoint.pt").exists():
        print(
            f"{cfg.out} holds a demo run from before: this continues it (a finished one shows its results again). "
            "Start it over with --overwrite, or run another next to it with --out runs/demo-2.",
            flush=True,
        )
    print(
        f"criticgym demo: {cfg.agent.upper()} on {cfg.env} with reward={cfg.reward.kind}"
        f"{f' (critic={cfg.reward.critic})' if isinstance(cfg.reward, Relc) else ''}, "
        f"model {cfg.model}, {cfg.iterations} iterations of {cfg.num_envs} completions.",
        flush=True,
    )
    once = [("converts the model", DEFAULT_MODEL)] if cfg.model == DEFAULT_MODEL else []
    once += [("trains the evaluation classifier", CLASSIFIER_CACHE)]
    cold = [what for what, folder in once if not is_built(folder)]
    if cold:
        print(f"This first run {' and '.join(cold)} once (about a minute).", flush=True)
    _report(train(cfg))
    return 0


@dataclass
class EvalConfig:
    """Evaluate a model, or a trained run against its base model, on a task's held-out test prompts."""

    model: str = DEFAULT_MODEL
    """Built-in name, local folder or hub id (ignored with --checkpoint: the run's own)."""
    env: str = "criticgym/SentimentControl-v0"
    """A registered criticgym id (ignored with --checkpoint: the run's own)."""
    checkpoint: str | None = None
    """A run folder (or its checkpoint.pt) written by criticgym train: its policy is evaluated beside its base."""
    reward: str = "sparse"
    """The reward set-up behind eval/reward: sparse, relc, relc-<critic>, rlaif-direct, rlaif-pairwise (ignored with
    --checkpoint: the run's own)."""
    prompts: int = 32
    """Held-out prompts."""
    max_new_tokens: int | None = None
    """Completion budget (None: the task's)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    out: str | None = None
    """Write the results as JSON."""
    overwrite: bool = False
    """Replace out when it exists (without it, an existing file is refused before anything is evaluated)."""


def evaluate(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """The held-out results of ``cfg``: one column (the model) or two (a run's base model and its policy)."""
    from criticgym.rollout import load_policy
    from criticgym.train.build import build_evaluator
    from criticgym.train.evaluate import Evaluator

    if cfg.checkpoint is None:
        model, tokenizer = load_policy(cfg.model, device=cfg.device)
        options = {"reward": cfg.reward, "model": tokenizer}
        if cfg.max_new_tokens is not None:
            options["max_new_tokens"] = cfg.max_new_tokens
        evaluator = Evaluator(cfg.env, tokenizer, model, cfg.prompts, **options)  # perplexity under itself
        return {cfg.model: evaluator(model)}
    import copy

    from criticgym.train.config import TrainConfig
    from criticgym.utils.files import load_checkpoint

    path = Path(cfg.checkpoint)
    run = path if path.is_dir() else path.parent
    checkpoint = path / "checkpoint.pt" if path.is_dir() else path
    if not checkpoint.is_file() or not (run / "config.json").is_file():
        raise ConfigError(
            f"--checkpoint {cfg.checkpoint}: no run there (a run folder holds checkpoint.pt and config.json, written "
            "by criticgym train). Point it at a run folder or its checkpoint.pt."
        )
    train_cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    train_cfg = replace(train_cfg, device=cfg.device, eval_prompts=cfg.prompts)
    base, tokenizer = load_policy(train_cfg.model, device=cfg.device)
    fix = f"Train the run again (criticgym train --out {run} --overwrite ...), or point --checkpoint at another run."
    state = load_checkpoint(checkpoint, ("agent",), fix, map_location=cfg.device)
    if train_cfg.lora_r:  # the base with the run's adapter; the base column is the same weights, adapter off
        from criticgym.algos.lora import BaseModel, add_lora, load_adapter_state

        policy = add_lora(base, train_cfg.lora_r, train_cfg.lora_alpha, train_cfg.lora_targets)
        load_adapter_state(policy, state["agent"]["model"])
        base = BaseModel(policy)
    else:
        policy = copy.deepcopy(base)  # the same architecture, the run's weights below
        policy.load_state_dict(state["agent"]["model"])
    # perplexity under the base model, and label:self judging with it, as in training
    evaluator = build_evaluator(train_cfg, tokenizer, base, policy=(base, tokenizer))
    return {"base": evaluator(base), f"iteration {state['agent']['iteration']}": evaluator(policy)}


def eval_command(argv: list[str]) -> int:
    """``criticgym eval``: print (and optionally write) the held-out table of :func:`evaluate`."""
    cfg = tyro.cli(EvalConfig, args=argv, prog="criticgym eval")
    with ExitStack() as outputs:
        if cfg.out:
            outputs.enter_context(output_file(cfg.out, overwrite=cfg.overwrite))
        columns = evaluate(cfg)
        first = next(iter(columns.values()))
        print(f"Held-out evaluation ({first['prompts']} test prompts, top-p 0.9):")
        print(held_out_table(columns))
        for name, result in columns.items():
            print(_samples(name, result))
        if cfg.out:
            write_text_atomically(cfg.out, json.dumps(columns, indent=2) + "\n")
    return 0


# -- bench --------------------------------------------------------------------------------------------------


def bench_command(argv: list[str]) -> int:
    """``criticgym bench ablation`` and ``criticgym bench toxic-start`` (:func:`criticgym.bench.command`)."""
    from criticgym.bench import command

    return command(argv)


# -- AI feedback: label, train-rm, eval-judge ------------------------------------------------------------


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
    with run_folder(out, overwrite=overwrite, resume_hint=None):
        model, metrics = train_reward_model(
            read_jsonl(data), backbone, train_layers, epochs, lr, batch_size, val_fraction, seed, device
        )
        folder = model.save(out)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"Saved the reward model to {folder}; train on it with: criticgym train ... sparse --scorer {folder}")
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


def search_command(argv: list[str]) -> int:
    """``criticgym search``: vanilla, best-of-N and RAIN on a task's held-out prompts (see search/compare.py)."""
    from criticgym.search.compare import SearchConfig, run_search

    run_search(parsed(SearchConfig, argv, "criticgym search"))
    return 0


def self_evolve_command(argv: list[str]) -> int:
    """``criticgym self-evolve``: meta-skill learning, then self-evolution rounds (see selfevolve/driver.py)."""
    from criticgym.selfevolve.driver import SelfConfig, self_evolve

    result = self_evolve(parsed(SelfConfig, argv, "criticgym self-evolve"))
    out = result["out"]
    print(f"Wrote {out}/metrics.csv, {out}/curves.png, {out}/checkpoint.pt and the samples of each stage in {out}/")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "demo": demo_command,
    "eval": eval_command,
    "bench": bench_command,
    "search": search_command,
    "label": lambda argv: tyro.cli(label, args=argv, prog="criticgym label"),
    "train-rm": lambda argv: tyro.cli(train_rm, args=argv, prog="criticgym train-rm"),
    "eval-judge": eval_judge_command,
    "self-evolve": self_evolve_command,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``criticgym`` command.

    The package's own errors (a wrong option, a missing file or package) end the command with their message and exit
    code 2, without a traceback; ``--debug`` (anywhere on the line) or ``CRITICGYM_DEBUG=1`` shows it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CRITICGYM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"Unknown command {command!r}; use one of {', '.join(COMMANDS)}.\n\n{__doc__}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except (CriticGymError, KeyboardInterrupt, OSError) as error:
        if isinstance(error, OSError) and not disk_full(error):
            raise
        if debug:
            traceback.print_exc()
        print(f"criticgym {command}: {failure_message(error)}", file=sys.stderr)
        if not debug:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return 2


def failure_message(error: BaseException) -> str:
    """One paragraph for a failure the command line reports itself (Ctrl-C, a full disk, the package's errors)."""
    if isinstance(error, KeyboardInterrupt):
        return str(error) or "interrupted (Ctrl-C)."
    if isinstance(error, OSError):
        return f"no space left on the device ({error}). Free some space and run the same command again."
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
