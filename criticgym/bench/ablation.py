"""Reward ablations: which feedback learns faster at equal compute.

``criticgym bench ablation`` trains the same agent, with the same budget and seeds, once per reward *arm*, then
writes a CSV of learning curves, a table (final held-out score with a 95% interval, iterations to reach a
fraction of the best arm's gain, compute spent on rewards and on the policy), a PNG with shaded intervals and a
markdown summary.

Arms:

- ``sparse``: the task's scorer at the last token.
- ``relc-<critic>`` (``relc`` alone: the task's critic): RELC, the scorer plus a critic's span rewards.
- ``random`` / ``random-<critic>``: RELC with random spans that mark as many tokens per sample as the named
  critic (the task's by default) does, with the same values: the control for "the critic knows where".
- ``rlaif-direct``, ``rlaif-pairwise``: an AI judge's direct score or pairwise preference (``--judge-model``).

An arm name is a reward set-up's string form (:mod:`criticgym.rewards`); :func:`run_arm` also takes a spec.

Every arm is compared on the same scale, the task's extrinsic score (``charts/extrinsic`` on training batches,
``eval/score`` on held-out prompts), whatever reward it trains on. Each run lives in ``out/runs/<arm>/seed-<s>``
and checkpoints as ``criticgym train`` does, so a killed ablation resumes: finished runs are kept
(``result.json``; their checkpoint is deleted to save disk) and an unfinished one continues from its checkpoint.

    criticgym bench ablation --arms sparse,relc-lexicon,random,relc-llm --seeds 3 --out benchmarks/results/ablation-cpu

Defaults (a small CPU set-up, about 40 minutes on two cores with the four arms above): PPO on smollm2-135m,
12 iterations of 16 completions, 2 epochs of minibatches of 8, 20 of 30 layers frozen, lr 1e-4, KL 0.05.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from criticgym.algos.ppo import PPOConfig
from criticgym.bench import resolution
from criticgym.errors import AT_LEAST_1, POSITIVE, SHARE, ConfigError, check_ranges
from criticgym.rewards import DEFAULT_MODEL, RewardSpec, Sparse, options_of, reward_spec, spec_name
from criticgym.train import TrainConfig, build_evaluator, check_model, config_changes, relevant, train
from criticgym.train.config import HOW, RESUMABLE
from criticgym.train.export import drop_weights
from criticgym.utils.files import write_text_atomically
from criticgym.utils.options import deferred, parsed
from criticgym.utils.plots import pyplot
from criticgym.utils.runfolder import each_kept, refuse_other_settings, run_folder
from criticgym.utils.stats import mean_ci

CURVE_KEYS = ("charts/extrinsic", "charts/episodic_return", "charts/kl")


def arm_reward(arm: str, critic_model: str = DEFAULT_MODEL, judge_model: str = DEFAULT_MODEL) -> RewardSpec:
    """The reward spec an arm name sets (its string form, :func:`~criticgym.rewards.reward_spec`).

    Every arm shares the models: RELC's llm and label critics ask ``critic_model``, the RLAIF arms' judge is
    ``judge_model``.
    """
    spec = reward_spec(arm)
    models = {"critic_model": critic_model, "judge_model": judge_model}
    return replace(spec, **{k: v for k, v in models.items() if k in options_of(spec)})


def smooth(curve: np.ndarray, window: int = 3) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    cumulative = np.cumsum(np.insert(np.asarray(curve, dtype=np.float64), 0, 0.0))
    index = np.arange(1, len(curve) + 1)
    low = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[low]) / (index - low)


def iterations_to(curves: dict[str, np.ndarray], fraction: float, window: int = 3) -> dict[str, int | None]:
    """First iteration at which each arm's smoothed mean curve gains ``fraction`` of the best arm's final gain.

    The gain is measured from the common start (the mean of every arm's first point); ``None`` if never.
    """
    smoothed = {arm: smooth(curve, window) for arm, curve in curves.items()}
    start = float(np.mean([curve[0] for curve in curves.values()]))
    best = max(curve[-1] for curve in smoothed.values())
    threshold = start + fraction * (best - start)
    out: dict[str, int | None] = {}
    for arm, curve in smoothed.items():
        reached = np.flatnonzero(curve >= threshold)
        out[arm] = int(reached[0]) + 1 if len(reached) and best > start else None
    return out


def run_arm(
    base: TrainConfig, arm: str | RewardSpec, seed: int, out: Path, log=print, name: str | None = None
) -> dict[str, Any]:
    """Train one (arm, seed) run, or load it if it already finished; returns its history and final evaluation.

    ``arm`` is an arm name or a reward spec (``name``: its folder and label; the arm name by default).
    """
    spec = reward_spec(arm)
    arm = name or (arm if isinstance(arm, str) else spec_name(spec))
    folder = out / "runs" / arm / f"seed-{seed}"
    done = folder / "result.json"
    run = dict(resume=False, resume_if_any=True, overwrite=False, eval_every=0)
    cfg = replace(base, reward=spec, seed=seed, out=str(folder), **run)
    if stale(folder, cfg, base.overwrite, f"The {arm} run of seed {seed} ({folder})"):
        log(f"[ablation] {arm}, seed {seed}: made with other settings, run again (--overwrite)")
    if done.exists():
        return json.loads(done.read_text())
    log(f"[ablation] {arm}, seed {seed}: {cfg.iterations} iterations of {cfg.num_envs} ({cfg.agent}, {cfg.model})")
    result = train(cfg, log=log)
    final = {k: v for k, v in result["evals"][-1].items() if k != "samples"}
    record = {"arm": arm, "seed": seed, "history": result["history"], "final": final, "config": asdict(cfg)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(done)
    drop_weights(folder)  # the run is complete; the weights are not needed
    return record


STALE_FIX = "Run it again with --overwrite (it replaces what other settings made), or give the ablation another --out."


def stale(folder: Path, cfg: TrainConfig, overwrite: bool, what: str) -> bool:
    """Whether the run in ``folder`` (finished or not) was made with other settings than ``cfg``'s.

    Such a run is refused, listing the differences, or deleted with ``overwrite`` (so that it runs again).
    """
    for name, ignored in (("result.json", HOW), ("config.json", HOW + RESUMABLE)):
        if (folder / name).exists():
            saved = json.loads((folder / name).read_text())
            changed = config_changes(relevant(saved.get("config", saved)), asdict(cfg), ignored=ignored)
            if changed and overwrite:
                shutil.rmtree(folder)
                return True
            refuse_other_settings(what, changed, STALE_FIX)
    return False


def initial_evaluation(base: TrainConfig, out: Path) -> dict[str, Any]:
    """The held-out evaluation of the untrained policy, shared by every arm (cached in ``out/initial.json``)."""
    path = out / "initial.json"
    settings = asdict(replace(base, reward=Sparse(), seed=0))
    if path.exists():
        cached = json.loads(path.read_text())
        changed = config_changes(cached.pop("config", settings), settings, ignored=HOW + RESUMABLE)
        if not changed or not base.overwrite:
            refuse_other_settings(f"The initial evaluation in {path}", changed, STALE_FIX)
            return cached
    from criticgym.rollout import load_policy

    model, tokenizer = load_policy(base.model, device=base.device)
    result = build_evaluator(replace(base, reward=Sparse()), tokenizer, model)(model, 0)
    initial = {k: v for k, v in result.items() if k != "samples"}
    write_text_atomically(path, json.dumps({**initial, "config": settings}, indent=2) + "\n")
    return initial


def summarize(records: list[dict[str, Any]], fraction: float, difference: float | None = None) -> dict[str, Any]:
    """Per-arm curves and table rows from finished runs, and what each difference with the first arm resolves.

    The resolution is :mod:`criticgym.bench.resolution`'s, for a named ``difference`` too.
    """
    arms = list(dict.fromkeys(r["arm"] for r in records))
    table, curves, compute_curves, flop_curves = [], {}, {}, {}
    for arm in arms:
        runs = [r for r in records if r["arm"] == arm]
        extrinsic = np.array([[h["charts/extrinsic"] for h in r["history"]] for r in runs])
        reward_s = np.array([[h["perf/env_s"] for h in r["history"]] for r in runs])
        policy_s = np.array(
            [[h["perf/rollout_s"] - h["perf/env_s"] + h["perf/update_s"] for h in r["history"]] for r in runs]
        )
        reward_flops = np.array([[h.get("perf/reward_flops", np.nan) for h in r["history"]] for r in runs])
        policy_flops = np.array([[h.get("perf/policy_flops", np.nan) for h in r["history"]] for r in runs])
        curves[arm] = extrinsic
        compute_curves[arm] = np.cumsum(reward_s + policy_s, axis=1).mean(axis=0)
        flop_curves[arm] = np.cumsum(reward_flops + policy_flops, axis=1).mean(axis=0)
        score_mean, score_ci = mean_ci(np.array([r["final"]["eval/score"] for r in runs]))
        train_mean, train_ci = mean_ci(extrinsic[:, -3:].mean(axis=1))
        row = {
            "arm": arm,
            "seeds": len(runs),
            "heldout_score": float(score_mean),
            "heldout_ci": float(score_ci),
            "train_score_last3": float(train_mean),
            "train_ci": float(train_ci),
            "reward_s_per_run": float(reward_s.sum(1).mean()),
            "policy_s_per_run": float(policy_s.sum(1).mean()),
            "reward_tflop_per_run": float(reward_flops.sum(1).mean()) / 1e12,
            "policy_tflop_per_run": float(policy_flops.sum(1).mean()) / 1e12,
        }
        for key in sorted(runs[0]["final"]):
            if key.startswith("eval/percent") or key == "eval/perplexity":
                row[key.removeprefix("eval/")] = float(np.mean([r["final"][key] for r in runs]))
        table.append(row)
    reached = iterations_to({arm: c.mean(axis=0) for arm, c in curves.items()}, fraction)
    # the budget every arm reached: the smallest total; each arm's smoothed mean curve read off at it
    budget = min(float(c[-1]) for c in flop_curves.values())
    for row in table:
        arm = row["arm"]
        at = np.interp(budget, flop_curves[arm], smooth(curves[arm].mean(axis=0))) if np.isfinite(budget) else np.nan
        row["score_at_equal_flops"] = float(at)
    final = {(r["arm"], r["seed"]): r["final"]["eval/score"] for r in records}
    for row in table:
        row["iterations_to_fraction"] = reached[row["arm"]]
        # the held-out score minus the first arm's, paired by seed (same seeds, same evaluation prompts)
        seeds = [s for (a, s) in final if a == row["arm"] and (arms[0], s) in final]
        diffs = np.array([final[(row["arm"], s)] - final[(arms[0], s)] for s in seeds])
        row["vs_first_arm"], row["vs_first_arm_ci"] = (float(x) for x in mean_ci(diffs))
    scores = {(r["arm"], r["seed"]): r["final"].get("scores", r["final"]["eval/score"]) for r in records}
    return {
        "table": table,
        "resolution": resolution.resolution_rows(scores, arms[0], difference),
        "curves": curves,
        "compute": compute_curves,
        "flops": flop_curves,
        "equal_tflop": budget / 1e12,
        "fraction": fraction,
    }


def write_curves_csv(records: list[dict[str, Any]], path: Path) -> None:
    """One row per (arm, seed, iteration)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "arm",
                "seed",
                "iteration",
                "extrinsic",
                "return",
                "kl",
                "reward_s",
                "policy_s",
                "reward_flops",
                "policy_flops",
            ]
        )
        for r in records:
            for h in r["history"]:
                policy_s = h["perf/rollout_s"] - h["perf/env_s"] + h["perf/update_s"]
                writer.writerow(
                    [r["arm"], r["seed"], h["iteration"]]
                    + [f"{h[k]:.6g}" for k in CURVE_KEYS]
                    + [f"{h['perf/env_s']:.4g}", f"{policy_s:.4g}"]
                    + [f"{h.get(k, float('nan')):.4g}" for k in ("perf/reward_flops", "perf/policy_flops")]
                )


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """Mean training score per arm with shaded 95% intervals, against iterations, seconds and estimated FLOPs."""
    import matplotlib.ticker

    plt = pyplot()

    fig, (by_iteration, by_seconds, by_flops) = plt.subplots(1, 3, figsize=(15, 4))
    for arm, curve in summary["curves"].items():
        mean, half = mean_ci(curve)
        low, high = smooth(mean - np.nan_to_num(half)), smooth(mean + np.nan_to_num(half))
        steps = np.arange(1, len(mean) + 1)
        color = by_iteration.plot(steps, smooth(mean), label=arm)[0].get_color()
        by_iteration.fill_between(steps, low, high, color=color, alpha=0.2)
        for ax, x in ((by_seconds, summary["compute"][arm]), (by_flops, summary["flops"].get(arm))):
            if x is not None and np.isfinite(x).all():
                ax.plot(x, smooth(mean), color=color, label=arm)
                ax.fill_between(x, low, high, color=color, alpha=0.2)
    by_iteration.set(xlabel="iteration", ylabel="task score of training batches", title=title)
    by_seconds.set(xlabel="training compute, seconds (reward + policy, log)", title="At equal compute (time)")
    by_flops.set(xlabel="training compute, estimated FLOPs (reward + policy, log)", title="At equal compute (FLOPs)")
    for axis in (by_seconds, by_flops):
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
    by_iteration.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(mean: float, half: float) -> str:
    return f"{mean:+.3f} ± {half:.3f}" if np.isfinite(half) else f"{mean:+.3f}"


def markdown(summary: dict[str, Any], base: TrainConfig, command: str) -> str:
    """The summary table and set-up, as markdown."""
    fraction = summary["fraction"]
    lines = [
        f"# Reward ablation on {base.env}",
        "",
        f"Command: `{command}`",
        "",
        f"Agent {base.agent}, model {base.model}, {base.iterations} iterations of {base.num_envs} completions per "
        f"run, evaluation on {base.eval_prompts} held-out prompts. Scores are the task's extrinsic scorer whatever "
        "the arm trains on; intervals are 95% Student-t over seeds.",
        "",
    ]
    initial = summary.get("initial")
    if initial:
        extra = ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in initial.items() if k.startswith("eval/"))
        lines += [f"Before training (the same policy for every arm), held-out: {extra}.", ""]
    lines += [
        f"| arm | seeds | held-out score | vs {summary['table'][0]['arm']} (paired) | training score (last 3 it.) "
        f"| training score at {summary['equal_tflop']:.3g} TFLOP | it. to {fraction:.0%} of best gain "
        "| reward s/run | policy s/run | reward TFLOP/run | policy TFLOP/run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["table"]:
        reached = row["iterations_to_fraction"]
        lines.append(
            f"| {row['arm']} | {row['seeds']} | {_fmt(row['heldout_score'], row['heldout_ci'])} "
            f"| {_fmt(row['vs_first_arm'], row['vs_first_arm_ci'])} "
            f"| {_fmt(row['train_score_last3'], row['train_ci'])} | {row['score_at_equal_flops']:+.3f} "
            f"| {reached if reached else 'not reached'} "
            f"| {row['reward_s_per_run']:.1f} | {row['policy_s_per_run']:.1f} "
            f"| {row['reward_tflop_per_run']:.2f} | {row['policy_tflop_per_run']:.2f} |"
        )
    extra = [k for k in summary["table"][0] if k.startswith("percent") or k == "perplexity"]
    if extra:
        lines += ["", "| arm | " + " | ".join(extra) + " |", "| --- |" + " ---: |" * len(extra)]
        for row in summary["table"]:
            lines.append(f"| {row['arm']} | " + " | ".join(f"{row[k]:.1f}" for k in extra) + " |")
    lines += resolution.markdown_lines(summary.get("resolution", []), "the held-out score")
    lines += ["", "![curves](ablation.png)", ""]
    return "\n".join(lines)


def _ablation_defaults() -> TrainConfig:
    return TrainConfig(
        iterations=12,
        num_envs=16,
        ppo=PPOConfig(epochs=2, minibatch_size=8, freeze_layers=20, lr=1e-4, kl_coef=0.05),
        progress=False,
        out="runs/ablation",
    )


@dataclass
class AblationConfig:
    """Train the same agent once per reward arm and seed; report which feedback learns faster at equal compute.

    Every ``criticgym train`` option applies to every run (``--out`` is the ablation's folder; ``--seed``,
    ``--resume`` and ``--eval-every`` are set per run).
    """

    arms: str = "sparse,relc-lexicon,random"
    """Comma-separated arms: sparse, relc, relc-<critic>, random, random-<critic>, rlaif-direct, rlaif-pairwise."""
    seeds: int = 3
    """Seeds per arm (0..seeds-1)."""
    fraction: float = 0.9
    """Fraction of the best arm's gain an arm must reach (iterations-to-fraction column)."""
    critic_model: str = DEFAULT_MODEL
    """The model of the RELC arms' llm and label critics."""
    judge_model: str = DEFAULT_MODEL
    """The RLAIF arms' judge: a model, label:<model>, or label:self."""
    difference: float | None = None
    """A paired held-out difference to plan for: the report adds the seeds and prompts that would detect it."""
    train: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=_ablation_defaults)
    """Every run's settings; the arms set the reward (a reward subcommand here is an error)."""

    def __post_init__(self) -> None:
        if not deferred():
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an option out of its range."""
        check_ranges(self, dict(seeds=AT_LEAST_1, fraction=SHARE, difference=POSITIVE))


def parse_args(argv: list[str]) -> tuple[AblationConfig, TrainConfig]:
    """Ablation options and the base training config every run starts from."""
    cfg = parsed(AblationConfig, argv, "criticgym bench ablation")
    if cfg.train.reward != _ablation_defaults().reward:
        raise ConfigError(
            "The arms set each run's reward: drop the reward subcommand, and give the arms' models with "
            "--critic-model and --judge-model."
        )
    return cfg, cfg.train


def ablation(argv: list[str], log=print) -> dict[str, Any]:
    """Run (or resume) an ablation from command-line options; writes the report into ``--out``."""
    args, base = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    specs = {arm: arm_reward(arm, args.critic_model, args.judge_model) for arm in arms}  # bad names fail here
    check_model(base)
    with run_folder(base.out, resume=True):  # finished runs are kept, stale ones refused (or replaced: --overwrite)
        return _ablation(argv, args, base, arms, specs, log)


def _ablation(argv, args, base, arms, specs, log) -> dict[str, Any]:
    out = Path(base.out)
    pairs = [(arm, seed) for arm in arms for seed in range(args.seeds)]
    records = each_kept([partial(run_arm, base, specs[arm], seed, out, log, arm) for arm, seed in pairs], out)
    summary = summarize(records, args.fraction, args.difference)
    summary["initial"] = initial_evaluation(base, out)
    command = "criticgym bench ablation " + shlex.join(argv)
    write_curves_csv(records, out / "curves.csv")
    plot(summary, out / "ablation.png", base.env.split("/")[-1])
    (out / "summary.md").write_text(markdown(summary, base, command))
    (out / "table.json").write_text(json.dumps(summary["table"], indent=2) + "\n")
    (out / "resolution.json").write_text(json.dumps(summary["resolution"], indent=2) + "\n")
    log((out / "summary.md").read_text())
    return summary
