"""The feedback frontier's accounting: what each arm costs to serve N completions, and which arms win at which N.

Training-time feedback (sparse, RELC, RLAIF, SELF) pays once, before deployment; inference-time search (best-of-N,
RAIN) pays on every completion. To put both on one axis, an arm's cost to serve N held-out completions is

    cost(N) = training FLOPs (policy + reward, the whole run) + N * inference FLOPs per completion

(the untrained policy and the search arms train nothing; a trained policy's inference is one sampled completion; a
search's is its sampling plus its evaluations). Amortized, ``cost(N) / N = training / N + inference``. At a
deployment size N an arm is on the frontier when no other arm is at once cheaper (or as cheap) and better (or as
good) with one of the two strict; :func:`winners` lists the frontier for each N and :func:`crossover` the N at which
two arms cost the same.

    >>> trained, search = ArmCost(train_flops=1e12, inference_flops=1e9), ArmCost(inference_flops=3e10)
    >>> trained.to_serve(100), search.to_serve(100)
    (1100000000000.0, 3000000000000.0)
    >>> round(crossover(trained, search), 1)  # from about 34 completions on, training is the cheaper way
    34.5
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from criticgym.errors import ConfigError
from criticgym.rewards import DEFAULT_MODEL
from criticgym.search.rain import RAINConfig
from criticgym.train import TrainConfig

DEPLOYMENT_SIZES = tuple(int(10**k) for k in range(2, 7))
"""The N of the frontier plot: 10^2 .. 10^6 served completions."""


@dataclass(frozen=True)
class ArmCost:
    """What an arm spends: once to train (policy and reward FLOPs), and per served completion."""

    train_flops: float = 0.0
    inference_flops: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.train_flops) and np.isfinite(self.inference_flops)):
            raise ConfigError(f"An arm's FLOPs must be finite, got {self}.")
        if self.train_flops < 0 or self.inference_flops < 0:
            raise ConfigError(f"An arm's FLOPs cannot be negative, got {self}.")

    def to_serve(self, n: float) -> float:
        """Total FLOPs to train (once) and serve ``n`` completions."""
        return float(self.train_flops + n * self.inference_flops)

    def per_completion(self, n: float) -> float:
        """FLOPs per served completion when the training is amortized over ``n`` of them."""
        return float(self.train_flops / n + self.inference_flops)


def training_flops(history: Sequence[Mapping[str, Any]]) -> float:
    """Training FLOPs of a history: PPO's ``perf/policy_flops`` + ``perf/reward_flops``, SELF's ``perf/train_flops``."""
    keys = ("perf/policy_flops", "perf/reward_flops", "perf/train_flops")
    return float(sum(row.get(key, 0.0) for row in history for key in keys))


def inference_flops(spent: Mapping[str, float], completions: int) -> float:
    """FLOPs per completion from what serving ``completions`` of them spent (every phase: policy and evaluator)."""
    if completions < 1:
        raise ConfigError(f"Inference FLOPs per completion need at least one completion, got {completions}.")
    return float(sum(spent.values()) / completions)


def serving_curve(costs: Mapping[str, ArmCost], sizes: Iterable[int] = DEPLOYMENT_SIZES) -> dict[str, np.ndarray]:
    """Each arm's total FLOPs to serve every N of ``sizes``."""
    sizes = list(sizes)
    return {arm: np.array([cost.to_serve(n) for n in sizes]) for arm, cost in costs.items()}


def pareto(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The arms no other arm dominates, cheapest first, from ``arm -> (cost, score)`` (higher score is better)."""

    def dominated(arm: str) -> bool:
        cost, score = points[arm]
        return any(
            c <= cost and s >= score and (c < cost or s > score) for other, (c, s) in points.items() if other != arm
        )

    return sorted((arm for arm in points if not dominated(arm)), key=lambda arm: points[arm])


def winners(
    costs: Mapping[str, ArmCost], scores: Mapping[str, float], sizes: Iterable[int] = DEPLOYMENT_SIZES
) -> dict[int, list[str]]:
    """The frontier at each deployment size N: the arms that no other arm beats at once on cost and on score."""
    missing = set(costs) ^ set(scores)
    if missing:
        raise ConfigError(f"Every arm needs a cost and a score; these have only one: {sorted(missing)}.")
    return {n: pareto({arm: (costs[arm].to_serve(n), scores[arm]) for arm in costs}) for n in sizes}


def crossover(a: ArmCost, b: ArmCost) -> float | None:
    """The number of completions at which ``a`` and ``b`` cost the same to serve (None: they never do)."""
    slope = b.inference_flops - a.inference_flops
    if slope == 0:
        return None
    n = (a.train_flops - b.train_flops) / slope
    return float(n) if n > 0 else None


# -- running the frontier -------------------------------------------------------------------------------------

SEARCH_ARMS = ("best-of-n", "rain")
OTHER_ARMS = ("untrained", "distilled", "self")


def family(arm: str) -> str:
    """The feedback family of an arm, for the table."""
    named = {"untrained": "none", "self": "feedback in words (SELF)", "distilled": "AI judge (RLAIF)"}
    if arm in SEARCH_ARMS or arm in named:
        return named.get(arm, "inference-time search")
    if arm.startswith("rlaif"):
        return "AI judge (RLAIF)"
    return "critic spans (RELC)" if arm.startswith(("relc", "random")) else "sparse score"


def _frontier_defaults():
    from criticgym.bench.ablation import _ablation_defaults

    return replace(_ablation_defaults(), out="runs/frontier")


@dataclass
class FrontierConfig:
    """Every feedback family on one task, the same policy and prompts, judged by a model none of them used.

    Every ``criticgym train`` option applies to the training arms (``--out`` is the frontier's folder; ``--seed``
    is set per run).
    """

    arms: str = "untrained,sparse,relc-lexicon,relc-label,rlaif-direct,rlaif-pairwise,distilled,self,best-of-n,rain"
    """Comma-separated arms: untrained, any reward arm of the ablation, distilled (a reward model trained on the
    judge's preferences), self (SELF rounds on the task's feedback spec), best-of-n and rain (search, no training)."""
    seeds: int = 5
    """Seeds per arm (0..seeds-1): training, sampling and search draw from them."""
    judges: str = "label:gemma3-270m,sentiment-classifier,vader"
    """Held-out judges (label:<model> or scorer names), the independent one first: no arm trains or searches on it."""
    judge_model: str = "label:self"
    """The RLAIF and distilled arms' judge."""
    critic_model: str = DEFAULT_MODEL
    """The model of the RELC arms' llm and label critics."""
    search_evaluator: str = "vader"
    """What best-of-N and RAIN optimize."""
    n: int = 16
    """Best-of-N's samples per prompt."""
    rain: RAINConfig = field(default_factory=lambda: RAINConfig(searches=10))
    prompts: int = 32
    """Held-out prompts every arm serves (the same ones for every arm and seed)."""
    pairs: int = 128
    """Preference pairs the distilled arm labels."""
    self_rounds: int = 2
    """SELF's rounds (after its meta-skill stage), on prompts_per_round = train.num_envs * train.iterations."""
    train: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=_frontier_defaults)

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.prompts < 1 or self.n < 1:
            raise ConfigError("--seeds, --prompts and --n must be at least 1.")
        if not self.judge_list:
            raise ConfigError("--judges needs at least one held-out judge.")

    @property
    def arm_list(self) -> list[str]:
        """The arms, each checked."""
        from criticgym.bench.ablation import arm_reward

        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        for arm in arms:
            if arm not in SEARCH_ARMS + OTHER_ARMS:
                arm_reward(arm)  # a reward arm's name, or an error listing the forms
        return arms

    @property
    def judge_list(self) -> list[str]:
        """The held-out judges, independent first."""
        return [j.strip() for j in self.judges.split(",") if j.strip()]


def judge_texts(name: str, task, prompts: list[str], completions: list[str]) -> list[float]:
    """A held-out judge's scores: a label-word judge's rating in [-1, 1], or a scorer's score."""
    return list(_held_out_judge(name, task.name)(prompts, completions))


@lru_cache(maxsize=8)
def _held_out_judge(name: str, task_name: str):
    """A judge's scoring function, built once per run rather than per record (a label-word judge loads a model)."""
    from criticgym.critics import as_scorer
    from criticgym.critics.judge import label_word_judge, parse_label_judge
    from criticgym.critics.scorers import score_texts
    from criticgym.envs import get_task

    if parse_label_judge(name) is not None:
        return label_word_judge(name, get_task(task_name).label_words, pairwise=False).rate
    scorer = as_scorer(name)
    return lambda prompts, completions: score_texts(scorer, prompts, completions)


def serve(cfg: FrontierConfig, model, tokenizer, method: str, seed: int) -> tuple[list[str], list[str], float]:
    """The held-out prompts, one served completion each (vanilla, best-of-N or RAIN), and FLOPs per completion."""
    from tqdm.auto import tqdm

    from criticgym import flops
    from criticgym.search import compare
    from criticgym.search.values import make_evaluator

    search = compare.SearchConfig(
        env=cfg.train.env, prompts=cfg.prompts, n=cfg.n, rain=cfg.rain, evaluator=cfg.search_evaluator, progress=False
    )
    ids, prompts, envs = compare.held_out_prompts(search, tokenizer, 0)  # the same prompts for every arm and seed
    budget, eos = envs.unwrapped.max_new_tokens, tuple(envs.unwrapped.eos_token_ids)
    task = envs.unwrapped.episodes.task
    evaluator = make_evaluator(cfg.search_evaluator, model, tokenizer, task.self_evaluation, task.label_words)
    flops.track(model)
    flops.take()
    with flops.phase("inference"), tqdm(disable=True) as bar:  # no bar inside the frontier's own log
        if method == "rain":
            rows = compare.rain_rows(search, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar)
        else:
            rows = compare.sampled_rows(
                search, method, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar
            )
    return prompts, [r[0] for r in rows], inference_flops(flops.take(), len(rows))


def _policy_after(run: TrainConfig, log) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Train (or resume) a run, then its final policy and its history."""
    import torch

    from criticgym.rollout import load_policy
    from criticgym.train import train

    history = train(run, log=log)["history"]
    state = torch.load(Path(run.out) / "checkpoint.pt", weights_only=False, map_location=run.device)
    model, tokenizer = load_policy(run.model, device=run.device)
    model.load_state_dict(state["agent"]["model"])
    return model, tokenizer, history


def _run_config(cfg: FrontierConfig, reward, seed: int, folder: Path) -> TrainConfig:
    return replace(cfg.train, reward=reward, seed=seed, out=str(folder), resume=False, resume_if_any=True, eval_every=0)


def _self_judge_model(cfg: FrontierConfig) -> str:
    """The judge as a model name (``label:self`` is the initial policy, which labels before any training)."""
    return cfg.judge_model.replace("label:self", f"label:{cfg.train.model}")


def _distilled_policy(cfg: FrontierConfig, seed: int, folder: Path, log):
    """Distilled RLAIF: the judge labels pairs once, a reward model fits them, PPO trains on it (sparse)."""
    from criticgym import flops
    from criticgym.critics.judge import make_judge
    from criticgym.distill.fit import train_reward_model
    from criticgym.distill.pairs import label_pairs
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS
    from criticgym.rewards import Sparse

    rm_folder = folder / "reward-model"
    flops.take()
    if not (rm_folder / "reward_model.json").exists():
        task = get_task(ENV_IDS.get(cfg.train.env, cfg.train.env))
        with flops.phase("reward"):
            judge = make_judge(_self_judge_model(cfg), task.preamble, task.label_words)
            records = label_pairs(cfg.train.env, cfg.train.model, judge, prompts=cfg.pairs, seed=seed)
            reward_model, _ = train_reward_model(records, "minilm", seed=seed, log=log)
        reward_model.save(rm_folder)
        labelling = sum(flops.take().values())
        (folder / "labelling_flops.json").write_text(json.dumps(labelling))
    labelling = json.loads((folder / "labelling_flops.json").read_text())
    run = _run_config(cfg, Sparse(scorer=str(rm_folder)), seed, folder / "run")
    model, tokenizer, history = _policy_after(run, log)
    return model, tokenizer, training_flops(history) + labelling


def _self_policy(cfg: FrontierConfig, seed: int, folder: Path, log):
    """SELF on the task's feedback spec: meta-skills from the annotator, then rounds filtered by its own judgement."""
    from criticgym.selfevolve.driver import SelfConfig, self_evolve

    per_round = cfg.train.num_envs * cfg.train.iterations  # as many answers per round as a training run samples
    self_cfg = SelfConfig(
        env=cfg.train.env,
        model=cfg.train.model,
        out=str(folder / "self"),
        rounds=cfg.self_rounds,
        meta_records=per_round,
        qa_records=0,
        prompts_per_round=per_round,
        eval_problems=cfg.prompts,
        freeze_layers=cfg.train.ppo.freeze_layers,
        seed=seed,
        device=cfg.train.device,
        progress=False,
    )
    result = self_evolve(self_cfg, log=log)
    return result["model"], result["tokenizer"], training_flops(result["history"])


def run_arm(cfg: FrontierConfig, arm: str, seed: int, out: Path, log=print) -> dict[str, Any]:
    """One (arm, seed): train (or not), serve the held-out prompts, judge them; cached in ``frontier.json``."""
    from criticgym.bench.ablation import arm_reward
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS
    from criticgym.rollout import load_policy

    folder = out / "runs" / arm / f"seed-{seed}"
    done = folder / "frontier.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[frontier] {arm}, seed {seed}")
    if arm in SEARCH_ARMS + ("untrained",):
        (model, tokenizer), train_flops = load_policy(cfg.train.model, device=cfg.train.device), 0.0
    elif arm == "distilled":
        model, tokenizer, train_flops = _distilled_policy(cfg, seed, folder, log)
    elif arm == "self":
        model, tokenizer, train_flops = _self_policy(cfg, seed, folder, log)
    else:
        spec = arm_reward(arm, cfg.critic_model, cfg.judge_model)
        model, tokenizer, history = _policy_after(_run_config(cfg, spec, seed, folder / "run"), log)
        train_flops = training_flops(history)
    method = arm if arm in SEARCH_ARMS else "vanilla"
    prompts, completions, per_completion = serve(cfg, model, tokenizer, method, seed)
    task = get_task(ENV_IDS.get(cfg.train.env, cfg.train.env))
    judged = {name: judge_texts(name, task, prompts, completions) for name in cfg.judge_list}
    record = {
        "arm": arm,
        "family": family(arm),
        "seed": seed,
        "train_flops": train_flops,
        "inference_flops": per_completion,
        "scores": {name: float(np.mean(values)) for name, values in judged.items()},
        "completions": [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)],
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(done)
    (folder / "run" / "checkpoint.pt").unlink(missing_ok=True)  # served and judged: the weights are not needed
    return record


def summarize(records: list[dict[str, Any]], judges: list[str], baseline: str = "sparse") -> dict[str, Any]:
    """The frontier's table and its winners at each deployment size.

    Per arm: each judge's mean with a 95% interval over seeds, the paired difference with ``baseline`` on the
    independent judge (the first), the mean FLOPs.
    """
    from criticgym.utils.stats import mean_ci

    arms = list(dict.fromkeys(r["arm"] for r in records))
    independent = judges[0]
    by_seed = {(r["arm"], r["seed"]): r for r in records}
    table, costs, scores = [], {}, {}
    for arm in arms:
        runs = [r for r in records if r["arm"] == arm]
        row: dict[str, Any] = {"arm": arm, "family": runs[0]["family"], "seeds": len(runs)}
        for judge in judges:
            row[judge], row[f"{judge} ci"] = (float(x) for x in mean_ci(np.array([r["scores"][judge] for r in runs])))
        paired = [
            r["scores"][independent] - by_seed[(baseline, r["seed"])]["scores"][independent]
            for r in runs
            if (baseline, r["seed"]) in by_seed
        ]
        if arm != baseline and paired:
            row["vs baseline"], row["vs baseline ci"] = (float(x) for x in mean_ci(np.array(paired)))
        costs[arm] = ArmCost(
            float(np.mean([r["train_flops"] for r in runs])), float(np.mean([r["inference_flops"] for r in runs]))
        )
        row["train_tflop"], row["inference_gflop"] = costs[arm].train_flops / 1e12, costs[arm].inference_flops / 1e9
        scores[arm] = row[independent]
        table.append(row)
    return {"table": table, "costs": costs, "scores": scores, "winners": winners(costs, scores), "judges": judges}


def markdown(summary: dict[str, Any], command: str) -> str:
    """The frontier's table, and the frontier at each deployment size, as markdown."""
    judges, independent = summary["judges"], summary["judges"][0]
    lines = [f"Command: `{command}`", "", f"Held-out judges: {', '.join(judges)} ({independent} trains nothing).", ""]
    head = ["arm", "family", "seeds", *judges, f"vs sparse ({independent}, paired)", "train TFLOP", "GFLOP/completion"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(head) - 2)]
    for row in summary["table"]:
        cells = [row["arm"], row["family"], str(row["seeds"])]
        cells += [_fmt(row[j], row[f"{j} ci"]) for j in judges]
        cells.append(_fmt(row["vs baseline"], row["vs baseline ci"]) if "vs baseline" in row else "")
        cells += [f"{row['train_tflop']:.2f}", f"{row['inference_gflop']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "On the frontier (no other arm cheaper and better) when serving N completions:", ""]
    lines += [f"- N = {n:.0e}: {', '.join(arms)}" for n, arms in summary["winners"].items()]
    return "\n".join(lines + ["", "![frontier](frontier.png)", ""])


def _fmt(mean: float, half: float) -> str:
    return f"{mean:+.3f} ± {half:.3f}" if np.isfinite(half) else f"{mean:+.3f}"


def plot(summary: dict[str, Any], path: Path) -> None:
    """The independent judge's score against the FLOPs to serve N completions, one panel per N, frontier joined."""
    from criticgym.utils.plots import pyplot

    plt = pyplot()
    sizes = list(summary["winners"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.4), sharey=True)
    for ax, n in zip(np.atleast_1d(axes), sizes, strict=True):
        for arm, cost in summary["costs"].items():
            ax.scatter(cost.to_serve(n), summary["scores"][arm], label=arm)
        front = summary["winners"][n]
        ax.plot([summary["costs"][a].to_serve(n) for a in front], [summary["scores"][a] for a in front], "k--", lw=0.8)
        ax.set(xscale="log", title=f"serving N = {n:.0e}", xlabel="FLOPs (training + N completions)")
    np.atleast_1d(axes)[0].set_ylabel(f"held-out score ({summary['judges'][0]})")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(records: list[dict[str, Any]], judges: list[str], out: Path, command: str, log=print) -> dict[str, Any]:
    """Write the frontier's summary.md, table.json, frontier.png and records.jsonl (every record: its completions)."""
    summary = summarize(records, judges)
    plot(summary, out / "frontier.png")
    (out / "summary.md").write_text(markdown(summary, command))
    table = {"table": summary["table"], "winners": {str(n): a for n, a in summary["winners"].items()}}
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    log((out / "summary.md").read_text())
    return summary


def frontier(argv: list[str], log=print) -> dict[str, Any]:
    """``criticgym bench frontier``: run (or resume) every arm and seed, then :func:`report`."""
    cfg = tyro.cli(FrontierConfig, args=argv, prog="criticgym bench frontier")
    if cfg.train.lora_r:
        raise ConfigError("The frontier serves full-weight policies; drop --lora-r.")
    arms, out = cfg.arm_list, Path(cfg.train.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [run_arm(cfg, arm, seed, out, log) for arm in arms for seed in range(cfg.seeds)]
    return report(records, cfg.judge_list, out, "criticgym bench frontier " + shlex.join(argv), log)
