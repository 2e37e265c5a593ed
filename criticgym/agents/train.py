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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

import criticgym
from criticgym import flops
from criticgym.agents.evaluate import Evaluator
from criticgym.agents.lora import BaseModel, add_lora, is_lora
from criticgym.agents.ppo import PPOConfig
from criticgym.agents.reinforce import ReinforceConfig
from criticgym.errors import ConfigError

AGENTS = ("ppo", "reinforce", "rloo")


@dataclass
class TrainConfig:
    """A training run.

    Every field is a ``criticgym train`` option (``--num-envs`` for ``num_envs``, ``--ppo.lr`` for the PPO learning
    rate).
    """

    env: str = "criticgym/SentimentControl-v0"
    """A registered criticgym id."""
    reward: Literal["sparse", "relc", "rlaif-direct", "rlaif-pairwise"] = "relc"
    """The reward set-up."""
    critic: str | None = None
    """RELC's span critic: lexicon, toxicity, llm, random, random-<critic> (None: the task's)."""
    critic_model: str = "smollm2-135m"
    """The LLM critic's model (critic=llm)."""
    judge_model: str = "smollm2-135m"
    """The AI judge (reward=rlaif-*): a model, label:<model> (its label-word gap), or label:self (self-rewarding)."""
    scorer: str | None = None
    """Extrinsic scorer name or reward-model folder (None: the task's)."""
    agent: Literal["ppo", "reinforce", "rloo"] = "ppo"
    """The algorithm: PPO (options --ppo.*), REINFORCE with a value baseline or RLOO (options --reinforce.*)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    model: str = "smollm2-135m"
    """Built-in name, local folder or hub id."""
    lora_r: int = 0
    """LoRA rank (0: train every weight). With LoRA the reference model is the base with the adapter off."""
    lora_alpha: float = 16.0
    """LoRA's alpha (the adapter's update is scaled by alpha / r)."""
    lora_targets: str = "all-linear"
    """Modules that get an adapter: all-linear, or comma-separated names such as q_proj,v_proj."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Forward passes under bfloat16 autocast (auto: on a CUDA device with bfloat16); weights stay float32."""
    iterations: int = 20
    """Agent iterations (one batch each)."""
    num_envs: int = 16
    """Completions per iteration."""
    alpha1: float = 1.0
    """RELC's weight of the extrinsic score."""
    alpha2: float = 1.0
    """RELC's weight of the span rewards."""
    max_new_tokens: int | None = None
    """Completion budget (None: the task's)."""
    seed: int = 0
    """The run's seed."""
    eval_every: int = 5
    """Evaluate every N iterations (0: only first and last)."""
    eval_prompts: int = 32
    """Held-out prompts per evaluation."""
    checkpoint_every: int = 5
    """Checkpoint every N iterations."""
    out: str = "runs/criticgym"
    """Output folder."""
    resume: bool = False
    """Continue the run in out/ from its checkpoint; an error when there is none, or when the run's settings differ."""
    resume_if_any: bool = False
    """Continue from out/checkpoint.pt when there is one (with the same settings), else start a new run there."""
    progress: bool = True
    """Show a progress bar."""
    workers: int = 0
    """Rollout workers as Ray actors, each playing num_envs / workers rows (0: this process plays; criticgym[ray])."""
    ray_address: str | None = None
    """The Ray cluster to join (None: start a local one) when workers or critic_actors are set."""
    worker_gpus: float | None = None
    """GPUs per rollout worker: 1 on a cluster with a GPU each (None: on CUDA the workers share one GPU)."""
    critic_actors: int = 0
    """Serve RELC's span critic from this many Ray actors, shared by every env (0: in each env's process)."""
    overlap_feedback: bool = False
    """Run the reward's expensive call (RELC's critic, the scorer, a direct judge) in a thread while the other
    episodes of the batch generate: the same rewards, less waiting."""

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ConfigError(f"Unknown agent {self.agent!r}; use one of {AGENTS}.")
        if self.iterations < 1 or self.num_envs < 1:
            raise ConfigError("iterations and num_envs must be at least 1.")
        if self.worker_gpus is not None and self.worker_gpus < 0:
            raise ConfigError(f"worker_gpus must be 0 or more, got {self.worker_gpus}.")
        if self.workers < 0 or self.critic_actors < 0:
            raise ConfigError("workers and critic_actors must be 0 (off) or more.")
        if self.reward == "rlaif-pairwise" and self.num_envs % 2:
            raise ConfigError(
                f"rlaif-pairwise pairs sub-envs 2i and 2i+1, so num_envs must be even; got {self.num_envs}."
            )
        if self.critic_actors and self.reward != "relc":
            raise ConfigError(f"critic_actors serves RELC's span critic; reward={self.reward!r} has none.")
        if isinstance(self.ppo, dict):  # read back from config.json
            self.ppo = PPOConfig(**self.ppo)
        if isinstance(self.reinforce, dict):
            self.reinforce = ReinforceConfig(**self.reinforce)

    @property
    def agent_config(self) -> PPOConfig | ReinforceConfig:
        """The config of the chosen agent (``agent="rloo"`` sets the REINFORCE baseline to ``"rloo"``)."""
        if self.agent == "ppo":
            return self.ppo
        return replace(self.reinforce, baseline="rloo") if self.agent == "rloo" else self.reinforce


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The options of the env a config trains on (reward set-up, model, budget)."""
    kwargs: dict[str, Any] = {"reward": cfg.reward, "model": cfg.model, "autoreset_mode": "disabled"}
    if cfg.reward == "relc":
        kwargs.update(alpha1=cfg.alpha1, alpha2=cfg.alpha2, seed=cfg.seed, critic_model=cfg.critic_model)
        if cfg.critic is not None:
            kwargs["critic"] = cfg.critic
    if cfg.reward.startswith("rlaif"):
        kwargs["judge_model"] = cfg.judge_model
    if cfg.overlap_feedback:
        kwargs["overlap_feedback"] = True
    for key in ("scorer", "max_new_tokens"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return kwargs


def build_policy(cfg: TrainConfig):
    """The policy a config starts from, and its tokenizer: the model, with a fresh LoRA adapter when asked.

    Weights the optimizer updates are float32 on every device (on CUDA the default would be bfloat16, in which most
    updates round away); with LoRA the frozen base keeps the device's default and the adapter is float32.
    """
    from criticgym.rollout import load_policy

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=None if cfg.lora_r else torch.float32)
    if cfg.lora_r:
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
    return model, tokenizer


def critic_pool(cfg: TrainConfig):
    """RELC's span critic served by ``cfg.critic_actors`` Ray actors (None when ``critic_actors`` is 0)."""
    if not cfg.critic_actors:
        return None
    from functools import partial

    from criticgym.critics.pool import CriticPool

    return CriticPool(partial(_critic_of, asdict(cfg)), actors=cfg.critic_actors, address=cfg.ray_address)


def _critic_of(config: dict[str, Any]):
    """The span critic a config names, built where it is called (inside a pool's actor)."""
    from criticgym.envs import get_task
    from criticgym.envs.core import resolve_tokenizer
    from criticgym.registration import ENV_IDS, make_critic

    cfg = TrainConfig(**config)
    task = ENV_IDS.get(cfg.env, cfg.env)
    name = cfg.critic or get_task(task).critic
    return make_critic(name, task, resolve_tokenizer(cfg.model), cfg.critic_model, cfg.seed)


def build_agent(cfg: TrainConfig, model, tokenizer, envs):
    """The agent a config names."""
    from criticgym.agents.ppo import PPO
    from criticgym.agents.reinforce import Reinforce

    agent = PPO if cfg.agent == "ppo" else Reinforce
    return agent(model, tokenizer, envs, cfg.agent_config, seed=cfg.seed, precision=cfg.precision)


def build_evaluator(cfg: TrainConfig, tokenizer, ref_model, judge=None, critic=None) -> Evaluator:
    """Held-out evaluation for a config: its env and reward set-up on the test split (``critic``: a pool)."""
    options = {**env_kwargs(cfg), **({"judge": judge} if judge is not None else {})}
    if critic is not None:
        options["critic"] = critic
    return Evaluator(cfg.env, tokenizer, ref_model, cfg.eval_prompts, cfg.scorer, **options)


def self_judge(cfg: TrainConfig, model, tokenizer):
    """The self-rewarding judge of ``judge_model="label:self"`` (None for any other judge).

    A frozen copy of the initial policy asks the task's label-word question.
    """
    from criticgym.critics.verbalizer import label_word_judge, parse_label_judge
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS

    parsed = parse_label_judge(cfg.judge_model)
    if not cfg.reward.startswith("rlaif") or parsed is None or parsed[1] != "self":
        return None
    words = get_task(ENV_IDS.get(cfg.env, cfg.env)).label_words
    backend = (_frozen_copy(model), tokenizer)
    return label_word_judge(cfg.judge_model, words, pairwise=cfg.reward == "rlaif-pairwise", backend=backend)


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a killed run never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# How and where a run runs, not what it computes: never a reason to refuse a finished or resumed run.
HOW = ("out", "resume", "resume_if_any", "progress", "ray_address", "overlap_feedback", "worker_gpus")
# What a resumed run may change besides: its length and bookkeeping, and how its batches are played or critiqued
# (workers and critic actors give the same batch).
RESUMABLE = ("iterations", "eval_every", "checkpoint_every", "workers", "critic_actors")


def relevant(config: dict[str, Any]) -> dict[str, Any]:
    """A run config without the options its reward set-up does not read (a sparse run has no judge)."""
    unused = []
    if not str(config.get("reward", "")).startswith("rlaif"):
        unused.append("judge_model")
    if config.get("reward") != "relc":
        unused += ["critic", "critic_model", "alpha1", "alpha2", "critic_actors"]
    return {k: v for k, v in config.items() if k not in unused}


def config_changes(
    old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None, ignored: tuple[str, ...] = HOW
) -> list[str]:
    """The settings in which two run configs differ, as ``key (old -> new)`` (a key missing from ``old``: its default).

    Keys in ``ignored`` are skipped, and so are the options that neither run's reward set-up reads.
    """
    defaults = asdict(TrainConfig()) if defaults is None else defaults
    changed = []
    for key, value in relevant(new).items():
        if key in ignored:
            continue
        before = old.get(key, defaults.get(key))
        if isinstance(value, dict) and isinstance(before, dict):
            changed += [f"{key}.{c}" for c in config_changes(before, value, defaults.get(key, {}), ())]
        elif before != value:
            changed.append(f"{key} ({before!r} -> {value!r})")
    return changed


def resume_state(cfg: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint a run continues from (None: a new run), checked against the run's settings.

    ``resume`` needs a checkpoint in ``out``; ``resume_if_any`` takes one when it is there. Either way the checkpoint's
    run must have the same settings as ``cfg`` in everything that changes its numbers (it may run longer).
    """
    checkpoint = Path(cfg.out) / "checkpoint.pt"
    if not (cfg.resume or cfg.resume_if_any):
        return None
    if not checkpoint.exists():
        if cfg.resume_if_any:
            return None
        raise ConfigError(
            f"--resume: there is no run to resume in {cfg.out} (no checkpoint.pt). Drop --resume to start one there, "
            "or use --resume-if-any to continue a run when there is one and start it otherwise."
        )
    state = torch.load(checkpoint, weights_only=False)
    saved = state.get("config")
    if saved is None and (checkpoint.parent / "config.json").exists():  # written before checkpoints held it
        saved = json.loads((checkpoint.parent / "config.json").read_text())
    changed = config_changes(saved or {}, asdict(cfg), ignored=HOW + RESUMABLE)
    if changed:
        raise ConfigError(
            f"{cfg.out} holds a run with other settings: {'; '.join(changed)}. Resuming would continue it under "
            "settings it did not start with. Give this run another --out, or drop --resume to start it over in "
            f"{cfg.out}."
        )
    return state


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run (or resume) a training run; returns ``{"history", "evals", "out"}``."""
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    state = resume_state(cfg)  # before anything is built: a run that cannot resume fails at once
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_policy(cfg)
    judge = self_judge(cfg, model, tokenizer)
    pool = critic_pool(cfg)
    shared = {"critic": pool} if pool is not None else {}  # what every env gets besides env_kwargs(cfg)
    options = {**env_kwargs(cfg), **shared, **({"judge": judge} if judge is not None else {})}
    envs = None if cfg.workers else criticgym.make_vec(cfg.env, num_envs=cfg.num_envs, **options)
    agent = build_agent(cfg, model, tokenizer, envs)
    if cfg.workers:
        from criticgym.agents.workers import RolloutWorkers

        agent.workers = RolloutWorkers(cfg, cfg.workers, env_options=shared)
    reference = agent.ref_model if agent.ref_model is not None else _frozen_copy(model)  # perplexity's model
    evaluate = build_evaluator(cfg, tokenizer, reference, judge, pool)
    checkpoint = out / "checkpoint.pt"
    history: list[dict[str, float]] = []
    evals: list[dict[str, Any]] = []
    if state is not None:
        agent.load_state_dict(state["agent"])
        history, evals = state["history"], state["evals"]
        log(f"Resumed from {checkpoint} at iteration {agent.iteration}.")
    else:
        log(f"Evaluating the initial policy on {cfg.eval_prompts} held-out prompts ...")
        with agent.autocast():
            evals.append(evaluate(model, 0))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    _write_csv(out / "metrics.csv", history)

    board = _tensorboard(out)
    bar = tqdm(range(agent.iteration, cfg.iterations), disable=not cfg.progress, desc="train", unit="it")
    for _ in bar:
        flops.take()  # what set-up and evaluation spent is not training compute
        with flops.phase("policy"):
            metrics = {"iteration": agent.iteration + 1, **agent.iterate()}
        spent = flops.take()
        metrics |= {"perf/policy_flops": spent.get("policy", 0.0), "perf/reward_flops": spent.get("reward", 0.0)}
        history.append(metrics)
        _append_csv(out / "metrics.csv", metrics)
        if board is not None:
            for key, value in metrics.items():
                board.add_scalar(key, value, metrics["iteration"])
        bar.set_postfix(reward=f"{metrics['charts/episodic_return']:+.3f}", kl=f"{metrics['charts/kl']:.2f}")
        done = agent.iteration == cfg.iterations
        if done or (cfg.eval_every and agent.iteration % cfg.eval_every == 0):
            with agent.autocast():
                evals.append(evaluate(model, agent.iteration))
        if done or agent.iteration % cfg.checkpoint_every == 0:
            saved = {"agent": agent.state_dict(), "history": history, "evals": evals, "config": asdict(cfg)}
            save_atomically(saved, checkpoint)
    if board is not None:
        board.close()
    for actors in (agent.workers, pool):
        if actors is not None:
            actors.close()
    _write_samples(out / "samples.md", evals)
    adaptive = getattr(agent.config, "adaptive_kl", False)
    plot_curves(history, evals, out / "curves.png", agent.config.kl_target if adaptive else None)
    return {"history": history, "evals": evals, "out": out}


def _frozen_copy(model):
    """The initial policy, frozen: a copy, or for a LoRA policy its base with the adapter off (no copy)."""
    import copy

    if is_lora(model):
        return BaseModel(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


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


def config_from_args(argv: list[str] | None = None, default: TrainConfig | None = None, prog: str = "criticgym train"):
    """Parse ``criticgym train`` options into a :class:`TrainConfig` (``default``: the values options start from)."""
    import tyro

    return tyro.cli(
        TrainConfig, args=argv, default=default, prog=prog, description="Train a policy on a criticgym env."
    )
