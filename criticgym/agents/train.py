"""The training driver behind ``criticgym train`` and ``criticgym demo``.

It builds the env, the policy and the agent from a :class:`TrainConfig`, then loops: one agent iteration, a CSV
row of metrics, a progress bar with live reward and KL, an evaluation on held-out prompts every ``eval_every``
iterations, and an atomic checkpoint every ``checkpoint_every``; metrics also go to TensorBoard
(``out/tensorboard``) when the ``tensorboard`` package is installed. ``resume=True`` continues from the last
checkpoint exactly as an uninterrupted run would (agents draw every random number from the seed and the
iteration). At the end it writes ``curves.png`` (reward and KL) and ``samples.md``.

    criticgym train --env criticgym/SentimentControl-v0 --reward relc --critic lexicon --agent ppo \
        --model smollm2-135m --iterations 30 --out runs/sentiment
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

import criticgym
from criticgym.errors import ConfigError

AGENTS = ("ppo", "reinforce", "rloo")


@dataclass
class TrainConfig:
    """A training run. Every field is a ``criticgym train`` option (``--num-envs`` for ``num_envs``)."""

    env: str = field(default="criticgym/SentimentControl-v0", metadata={"help": "a registered criticgym id"})
    reward: str = field(default="relc", metadata={"help": "sparse, relc, rlaif-direct or rlaif-pairwise"})
    critic: str | None = field(default=None, metadata={"help": "lexicon, toxicity, llm, random (task default)"})
    critic_model: str = field(default="smollm2-135m", metadata={"help": "the LLM critic's model (critic=llm)"})
    judge_model: str = field(default="smollm2-135m", metadata={"help": "the AI judge's model (reward=rlaif-*)"})
    scorer: str | None = field(default=None, metadata={"help": "extrinsic scorer name (task default)"})
    agent: str = field(default="ppo", metadata={"help": "ppo, reinforce or rloo"})
    model: str = field(default="smollm2-135m", metadata={"help": "built-in name, local folder or hub id"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    iterations: int = field(default=20, metadata={"help": "agent iterations (one batch each)"})
    num_envs: int = field(default=16, metadata={"help": "completions per iteration"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (the agent's default)"})
    kl_coef: float | None = field(default=None, metadata={"help": "KL penalty weight (the agent's default)"})
    kl_target: float | None = field(default=None, metadata={"help": "PPO: KL per completion the controller holds"})
    kl_horizon: int | None = field(default=None, metadata={"help": "PPO: the KL controller's horizon (completions)"})
    epochs: int = field(default=4, metadata={"help": "PPO epochs per batch"})
    minibatch_size: int = field(default=8, metadata={"help": "PPO minibatch size"})
    freeze_layers: int = field(default=0, metadata={"help": "freeze embeddings and this many lower layers (PPO)"})
    alpha1: float = field(default=1.0, metadata={"help": "RELC weight of the extrinsic score"})
    alpha2: float = field(default=1.0, metadata={"help": "RELC weight of the span rewards"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "completion budget (the task's)"})
    seed: int = field(default=0, metadata={"help": "run seed"})
    eval_every: int = field(default=5, metadata={"help": "evaluate every N iterations (0: only first and last)"})
    eval_prompts: int = field(default=32, metadata={"help": "held-out prompts per evaluation"})
    checkpoint_every: int = field(default=5, metadata={"help": "checkpoint every N iterations"})
    out: str = field(default="runs/criticgym", metadata={"help": "output folder"})
    resume: bool = field(default=False, metadata={"help": "continue from out/checkpoint.pt"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ConfigError(f"Unknown agent {self.agent!r}; use one of {AGENTS}.")
        if self.iterations < 1 or self.num_envs < 1:
            raise ConfigError("iterations and num_envs must be at least 1.")


def _env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"reward": cfg.reward, "model": cfg.model, "autoreset_mode": "disabled"}
    if cfg.reward == "relc":
        kwargs.update(alpha1=cfg.alpha1, alpha2=cfg.alpha2, seed=cfg.seed, critic_model=cfg.critic_model)
        if cfg.critic is not None:
            kwargs["critic"] = cfg.critic
    if cfg.reward.startswith("rlaif"):
        kwargs["judge_model"] = cfg.judge_model
    for key in ("scorer", "max_new_tokens"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return kwargs


def build_agent(cfg: TrainConfig, model, tokenizer, envs):
    """The agent a config names, with its overrides applied."""
    from criticgym.agents.ppo import PPO, PPOConfig
    from criticgym.agents.reinforce import Reinforce, ReinforceConfig

    overrides = {k: v for k, v in (("lr", cfg.lr), ("kl_coef", cfg.kl_coef)) if v is not None}
    if cfg.agent == "ppo":
        ppo = {k: v for k, v in (("kl_target", cfg.kl_target), ("kl_horizon", cfg.kl_horizon)) if v is not None}
        config = PPOConfig(
            epochs=cfg.epochs, minibatch_size=cfg.minibatch_size, freeze_layers=cfg.freeze_layers, **overrides, **ppo
        )
        return PPO(model, tokenizer, envs, config, seed=cfg.seed)
    baseline = "rloo" if cfg.agent == "rloo" else "value"
    return Reinforce(model, tokenizer, envs, ReinforceConfig(baseline=baseline, **overrides), seed=cfg.seed)


class Evaluator:
    """Held-out evaluation: mean training reward, the task's score, a second judge, distinct-n, perplexity.

    ``eval/score`` is the task's own scorer (the sentiment classifier for SentimentControl) whatever the training
    reward is, so runs with different rewards, scorers and judges compare on one scale.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, ref_model) -> None:
        from criticgym.critics import SentimentClassifier, ToxicityScorer, VaderSentiment, as_scorer

        self.envs = criticgym.make_vec(cfg.env, num_envs=cfg.eval_prompts, split="test", **_env_kwargs(cfg))
        self.tokenizer, self.ref_model = tokenizer, ref_model
        self.task = self.envs.unwrapped.episodes.task.name
        self.scorer = as_scorer(self.envs.unwrapped.episodes.task.scorer)
        # the second judge differs from the training reward (RELC evaluates with another classifier)
        if self.task == "sentiment":
            trained_on_classifier = cfg.scorer in (None, "sentiment-classifier")
            self.judge_name = "vader" if trained_on_classifier else "sentiment-classifier"
            self.judge = VaderSentiment() if trained_on_classifier else SentimentClassifier()
        elif self.task == "detoxify":
            self.judge_name, self.judge = "toxicity", ToxicityScorer()
        else:
            self.judge_name, self.judge = None, None

    @torch.no_grad()
    def __call__(self, model, iteration: int) -> dict[str, Any]:
        """Evaluate ``model`` on the held-out prompts (the same prompts and sampling seed every time)."""
        from criticgym.agents.base import token_rewards
        from criticgym.critics.scorers import score_texts
        from criticgym.envs import play
        from criticgym.rollout import RolloutEngine

        engine = RolloutEngine(model, self.tokenizer, ref_model=self.ref_model)
        batch = play(engine, self.envs, seed=12345, top_p=0.9)

        prompts = [info["prompt"] for info in batch.infos]
        completions = [info["completion"] for info in batch.infos]
        returns = token_rewards(batch).sum(1)
        mask = batch.completion_mask.float()
        references = [info.get("reference") for info in batch.infos]
        ids = [info["completion_ids"] for info in batch.infos]
        scores = score_texts(self.scorer, prompts, completions, None if None in references else references, ids)
        result: dict[str, Any] = {
            "iteration": iteration,
            "prompts": len(prompts),
            "eval/reward": float(returns.mean()),
            "eval/score": float(np.mean(scores)),
            "eval/perplexity": float(torch.exp(-(batch.ref_logprobs * mask).sum() / mask.sum().clamp(min=1))),
            "eval/distinct_1": distinct_n(completions, 1),
            "eval/distinct_2": distinct_n(completions, 2),
        }
        if self.judge is not None:
            scores = np.asarray(self.judge.score(prompts, completions))
            if self.task == "sentiment":
                result[f"eval/percent_positive_{self.judge_name}"] = float(100 * (scores > 0).mean())
            else:
                result["eval/percent_toxic"] = float(100 * (scores <= -0.5).mean())
        result["samples"] = [
            {"prompt": p, "completion": c, "reward": float(r)}
            for p, c, r in zip(prompts, completions, returns, strict=True)
        ][:8]
        return result


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts' words (0 when there are none)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a killed run never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run (or resume) a training run; returns ``{"history", "evals", "out"}``."""
    from tqdm.auto import tqdm

    from criticgym.rollout import load_policy

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device)
    envs = criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **_env_kwargs(cfg))
    agent = build_agent(cfg, model, tokenizer, envs)
    evaluate = Evaluator(cfg, tokenizer, agent.ref_model)
    checkpoint = out / "checkpoint.pt"
    history: list[dict[str, float]] = []
    evals: list[dict[str, Any]] = []
    if cfg.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        agent.load_state_dict(state["agent"])
        history, evals = state["history"], state["evals"]
        log(f"Resumed from {checkpoint} at iteration {agent.iteration}.")
    else:
        evals.append(evaluate(model, 0))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    _write_csv(out / "metrics.csv", history)

    board = _tensorboard(out)
    bar = tqdm(range(agent.iteration, cfg.iterations), disable=not cfg.progress, desc="train", unit="it")
    for _ in bar:
        metrics = {"iteration": agent.iteration + 1, **agent.iterate()}
        history.append(metrics)
        _append_csv(out / "metrics.csv", metrics)
        if board is not None:
            for key, value in metrics.items():
                board.add_scalar(key, value, metrics["iteration"])
        bar.set_postfix(reward=f"{metrics['charts/episodic_return']:+.3f}", kl=f"{metrics['charts/kl']:.2f}")
        done = agent.iteration == cfg.iterations
        if done or (cfg.eval_every and agent.iteration % cfg.eval_every == 0):
            evals.append(evaluate(model, agent.iteration))
        if done or agent.iteration % cfg.checkpoint_every == 0:
            save_atomically({"agent": agent.state_dict(), "history": history, "evals": evals}, checkpoint)
    if board is not None:
        board.close()
    _write_samples(out / "samples.md", evals)
    adaptive = getattr(agent.config, "adaptive_kl", False)
    plot_curves(history, evals, out / "curves.png", agent.config.kl_target if adaptive else None)
    return {"history": history, "evals": evals, "out": out}


def _tensorboard(out: Path):
    """A TensorBoard writer in ``out/tensorboard`` when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _append_csv(path: Path, row: dict[str, float]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _write_samples(path: Path, evals: list[dict[str, Any]]) -> None:
    lines = ["# Samples on held-out prompts", ""]
    for result in (evals[0], evals[-1]) if len(evals) > 1 else evals:
        lines += [f"## Iteration {result['iteration']} (mean reward {result['eval/reward']:+.3f})", ""]
        lines += ["| reward | prompt | completion |", "| ---: | --- | --- |"]
        for s in result["samples"]:
            cells = [_cell(s["prompt"]), _cell(s["completion"])]
            lines.append(f"| {s['reward']:+.3f} | {cells[0]} | {cells[1]} |")
        lines.append("")
    path.write_text("\n".join(lines))


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def plot_curves(
    history: list[dict[str, float]], evals: list[dict[str, Any]], path: Path, kl_target: float | None = None
) -> None:
    """Training reward (with held-out evaluations) and KL against iterations, as a PNG.

    With ``kl_target`` the KL panel shows the target and the band from half to twice it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_reward, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["iteration"] for h in history]
    ax_reward.plot(steps, [h["charts/episodic_return"] for h in history], label="training batch", alpha=0.7)
    ax_reward.plot([e["iteration"] for e in evals], [e["eval/reward"] for e in evals], "o-", label="held-out")
    ax_reward.set(xlabel="iteration", ylabel="episode return", title="Reward")
    ax_reward.legend()
    ax_kl.plot(steps, [h["charts/kl"] for h in history], color="tab:red", label="KL")
    if kl_target is not None:
        ax_kl.axhline(kl_target, color="gray", linestyle="--", label=f"target {kl_target:g}")
        ax_kl.axhspan(kl_target / 2, kl_target * 2, color="gray", alpha=0.12, label="half to twice the target")
        ax_kl.legend()
    ax_kl.set(xlabel="iteration", ylabel="KL to reference (per completion)", title="KL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def config_from_args(argv: list[str] | None = None, **defaults: Any) -> TrainConfig:
    """Parse ``--field value`` options into a :class:`TrainConfig` (``defaults`` override the dataclass's)."""
    import argparse

    parser = argparse.ArgumentParser(prog="criticgym train", description="Train a policy on a criticgym env.")
    for f in fields(TrainConfig):
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=f.metadata["help"])
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, default=default, help=f.metadata["help"])
    return TrainConfig(**vars(parser.parse_args(argv)))
