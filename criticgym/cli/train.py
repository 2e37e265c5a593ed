"""``criticgym train``, ``demo`` and ``eval``: a run's settings and the held-out table before and after."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tyro

from criticgym.errors import ConfigError
from criticgym.rewards import DEFAULT_MODEL, RewardOption, Sparse, reward_spec
from criticgym.utils.files import write_text_atomically
from criticgym.utils.runfolder import output_file

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
    reward: RewardOption = field(default_factory=Sparse)
    """The reward set-up behind eval/reward, written as criticgym train takes it: --reward FORM (sparse, relc,
    relc-<critic>, random, random-<critic>, rlaif-direct, rlaif-pairwise) and its options (ignored with --checkpoint:
    the run's own)."""
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

    def __post_init__(self) -> None:
        self.reward = reward_spec(self.reward)  # a string form (EvalConfig(reward="relc-lexicon")) or a spec


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


def eval_config(argv: list[str]) -> EvalConfig:
    """``criticgym eval``'s options; the reward is written as ``criticgym train`` takes it (``--reward FORM``)."""
    from criticgym.train.config import check_reward_last, reward_args

    argv = reward_args(argv, "criticgym eval", EvalConfig)  # --reward FORM and its options: the subcommand, last
    check_reward_last(argv, "criticgym eval", EvalConfig)
    return tyro.cli(EvalConfig, args=argv, prog="criticgym eval")


def eval_command(argv: list[str]) -> int:
    """``criticgym eval``: print (and optionally write) the held-out table of :func:`evaluate`."""
    cfg = eval_config(argv)
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
