"""Inference-time search on a task's held-out prompts: vanilla sampling, best-of-N and RAIN, one interface.

``criticgym search`` runs one method (or several, ``--method vanilla,best-of-n,rain``) on the same test prompts
and seeds, and judges every completion with the task's **held-out** judge, which is never the evaluator the
search used when the task has another one (search with VADER, judge with the sentiment classifier). It writes

- ``completions.jsonl``: one record per (method, seed, prompt): the completion, its values and its costs;
- ``summary.json`` / ``summary.md``: per method, the acceptable rate by the held-out judge (95% Wilson interval),
  the task's score and the evaluator's value (95% t intervals over prompts), forward tokens, evaluator calls and
  wall time per prompt, and time relative to vanilla;
- ``search.png``: the acceptable rate against forward tokens per prompt.

    criticgym search --method vanilla,best-of-n,rain --env criticgym/SentimentControl-v0 --evaluator vader \
        --model smollm2-135m --prompts 16 --seeds 2 --out runs/search
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import criticgym
from criticgym.errors import AT_LEAST_1, POSITIVE, ConfigError, check_ranges
from criticgym.rewards import DEFAULT_MODEL
from criticgym.search.rain import RAIN, RAINConfig
from criticgym.utils.options import deferred
from criticgym.utils.plots import pyplot
from criticgym.utils.runfolder import run_folder
from criticgym.utils.stats import mean_ci, wilson

METHODS = ("vanilla", "best-of-n", "rain")


@dataclass
class SearchConfig:
    """A comparison of inference-time methods on a task's held-out prompts."""

    method: str = "vanilla,best-of-n,rain"
    """Comma-separated methods: vanilla, best-of-n, rain."""
    env: str = "criticgym/SentimentControl-v0"
    """A registered criticgym id: its test prompts, budget, EOS and held-out judge."""
    evaluator: str = "vader"
    """What the search optimizes: a scorer name, or the policy judging its own text: 'self' / 'self-soft' (the
    task's two-option question), 'self-label' (the task's label-word gap)."""
    judge: str | None = None
    """The held-out judge, a scorer name other than the evaluator (None: the task's first such judge)."""
    model: str = DEFAULT_MODEL
    """The frozen policy: built-in name, folder or hub id."""
    prompts: int = 16
    """Held-out prompts per seed."""
    seeds: int = 1
    """Seeds (0..seeds-1): each draws its own prompts and samples."""
    n: int = 8
    """Best-of-N: samples per prompt, the evaluator keeps the best."""
    temperature: float = 1.0
    """Sampling temperature of vanilla and best-of-N."""
    max_new_tokens: int | None = None
    """Completion budget (None: the task's)."""
    rain: RAINConfig = field(default_factory=RAINConfig)
    device: str = "cpu"
    """cpu, cuda or auto."""
    out: str = "runs/search"
    """Output folder."""
    overwrite: bool = False
    """Replace what out/ holds (without it, a folder that holds a comparison is refused)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not deferred():
            self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for an unknown method or an option out of its range."""
        self.methods  # noqa: B018  (checks the names)
        check_ranges(self, dict(prompts=AT_LEAST_1, seeds=AT_LEAST_1, n=AT_LEAST_1, temperature=POSITIVE))
        check_ranges(self, dict(max_new_tokens=AT_LEAST_1))
        if self.judge is not None and self.judge == self.evaluator:
            raise ConfigError(f"The judge must not be the search's evaluator ({self.evaluator!r}): it is held out.")

    @property
    def methods(self) -> list[str]:
        """The methods to run, checked."""
        methods = [m.strip() for m in self.method.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ConfigError(f"Unknown method(s) {unknown}; use a comma-separated subset of {METHODS}.")
        return methods


def held_out_prompts(cfg: SearchConfig, tokenizer, seed: int) -> tuple[list[list[int]], list[str], Any]:
    """The seed's held-out prompts (ids and texts) and the env they come from (its budget and EOS)."""
    options: dict[str, Any] = {"model": tokenizer, "reward": None, "split": "test", "autoreset_mode": "disabled"}
    if cfg.max_new_tokens is not None:
        options["max_new_tokens"] = cfg.max_new_tokens
    envs = criticgym.make_vec(cfg.env, num_envs=cfg.prompts, **options)
    obs, _ = envs.reset(seed=seed)
    lengths = obs["attention_mask"].sum(axis=1)
    ids = [obs["input_ids"][row, : lengths[row]].tolist() for row in range(cfg.prompts)]
    return ids, [tokenizer.decode(i) for i in ids], envs


def rain_rows(cfg: SearchConfig, model, tokenizer, evaluator, ids, prompts, seed: int, budget: int, eos, bar):
    """RAIN's completion of each prompt: (text, ids, forward tokens, evaluator calls, seconds)."""
    rain = RAIN(model, tokenizer, evaluator, replace(cfg.rain, max_new_tokens=budget))
    rows = []
    for index, (prompt_ids, prompt) in enumerate(zip(ids, prompts, strict=True)):
        before = getattr(evaluator, "forward_tokens", 0)  # a model evaluator's own forward tokens
        result = rain.search(prompt_ids, prompt, seed=seed * 1_000_003 + index, budget=budget, eos_ids=eos)
        stats = result.stats
        forward = stats["forward_tokens"] + getattr(evaluator, "forward_tokens", 0) - before
        rows.append((result.completion, result.completion_ids, forward, stats["evaluations"], stats["seconds"]))
        bar.update()
    return rows


SERVED_TOGETHER = 64
"""Completions sampled in one batch: blocks of prompts (64 for vanilla, 4 for best-of-16), each with its own seed."""


def sampled_rows(cfg: SearchConfig, method: str, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar):
    """Vanilla sampling's (one sample) or best-of-N's (the evaluator's best of ``cfg.n``) completion of each prompt.

    Prompts are sampled in blocks of :data:`SERVED_TOGETHER` completions (a batch-1 decode is many times slower per
    token), each block seeded by its first prompt's index; a block's seconds and evaluator tokens are shared equally.
    """
    from criticgym.rollout import RolloutEngine, SamplingParams

    engine = RolloutEngine(model, tokenizer)
    k = cfg.n if method == "best-of-n" else 1
    per_block = max(1, SERVED_TOGETHER // k)
    rows = []
    for first in range(0, len(ids), per_block):
        block = ids[first : first + per_block]
        start, before = time.perf_counter(), getattr(evaluator, "forward_tokens", 0)
        batch = engine.generate(
            [prompt_ids for prompt_ids in block for _ in range(k)],
            max_new_tokens=budget,
            sampling=SamplingParams(temperature=cfg.temperature),
            seed=seed * 1_000_003 + first,
        )
        texts, kept = _completions(batch, tokenizer, eos)
        values = (
            np.asarray(evaluator.rate([p for p in prompts[first : first + len(block)] for _ in range(k)], texts))
            if k > 1
            else None
        )
        judged = (getattr(evaluator, "forward_tokens", 0) - before) / len(block)
        seconds = (time.perf_counter() - start) / len(block)
        for row, prompt_ids in enumerate(block):
            own = slice(row * k, (row + 1) * k)
            best = row * k + (int(np.argmax(values[own])) if values is not None else 0)
            forward = len(prompt_ids) + sum(len(c) for c in kept[own]) + judged  # one shared prefill per prompt
            rows.append((texts[best], kept[best], forward, k if k > 1 else 0, seconds))
            bar.update()
    return rows


def _judged_records(method: str, seed: int, prompts, rows, evaluator, task, task_scorer, judge) -> list[dict[str, Any]]:
    """One record per completion: the search's own value, the task's score and the held-out judge's."""
    from criticgym.critics.scorers import score_texts

    completions = [r[0] for r in rows]
    values = evaluator.rate(prompts, completions)
    scores = score_texts(task_scorer, prompts, completions)
    judged = score_texts(judge, prompts, completions) if judge is not None else [float("nan")] * len(rows)
    records = []
    for index, (row, value, score, judge_score) in enumerate(zip(rows, values, scores, judged, strict=True)):
        text, completion_ids, forward, calls, seconds = row
        records.append(
            {
                "method": method,
                "seed": seed,
                "prompt_index": index,
                "prompt": prompts[index],
                "completion": text,
                "completion_ids": [int(t) for t in completion_ids],
                "value": float(value),
                "score": float(score),
                "judge": float(judge_score),
                "acceptable": bool(task.rate is not None and task.rate([judge_score]) == 100.0),
                "forward_tokens": int(forward),
                "evaluator_calls": int(calls),
                "seconds": float(seconds),
            }
        )
    return records


def run_search(cfg: SearchConfig, log=print) -> dict[str, Any]:
    """Run every method on every seed's prompts; write and return the summary (in a guarded ``cfg.out``)."""
    with run_folder(cfg.out, overwrite=cfg.overwrite, resume_hint=None):
        return _run_search(cfg, log)


def _run_search(cfg: SearchConfig, log) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from criticgym.critics import as_scorer
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS
    from criticgym.rollout import load_policy
    from criticgym.search.values import make_value

    methods = cfg.methods
    task = get_task(ENV_IDS.get(cfg.env, cfg.env))
    model, tokenizer = load_policy(cfg.model, device=cfg.device)
    evaluator = make_value(cfg.evaluator, model, tokenizer, task.self_evaluation, task.label_words)
    judge_name = cfg.judge or task.held_out_judge(cfg.evaluator)
    judge = as_scorer(judge_name) if judge_name is not None else None
    task_scorer = as_scorer(task.scorer)
    out = Path(cfg.out)
    records: list[dict[str, Any]] = []
    for seed in range(cfg.seeds):
        ids, prompts, envs = held_out_prompts(cfg, tokenizer, seed)
        budget, eos = envs.unwrapped.max_new_tokens, tuple(envs.unwrapped.eos_token_ids)
        for method in methods:
            bar = tqdm(total=len(prompts), desc=f"{method} seed {seed}", disable=not cfg.progress, unit="prompt")
            if method == "rain":
                rows = rain_rows(cfg, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar)
            else:
                rows = sampled_rows(cfg, method, model, tokenizer, evaluator, ids, prompts, seed, budget, eos, bar)
            bar.close()
            records += _judged_records(method, seed, prompts, rows, evaluator, task, task_scorer, judge)
    with (out / "completions.jsonl").open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = summarize(records, methods)
    summary.update(
        {
            "config": asdict(cfg),
            "evaluator": cfg.evaluator,
            "judge": judge_name,
            "rate": asdict(task.rate) if task.rate else None,
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    plot(summary, out / "search.png")
    log((out / "summary.md").read_text())
    return summary


def _completions(batch, tokenizer, eos) -> tuple[list[str], list[list[int]]]:
    """Texts and ids of a generated batch, each cut after its first EOS (the env's definition)."""
    texts, kept = [], []
    for row in range(batch.completion_ids.size(0)):
        ids = batch.completion_ids[row, : int(batch.lengths[row])].tolist()
        for i, token in enumerate(ids):
            if token in eos:
                ids = ids[: i + 1]
                break
        kept.append(ids)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts, kept


def _mean_half(values: list[float]) -> tuple[float, float]:
    mean, half = mean_ci(values)
    return float(mean), float(half)


def summarize(records: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per-method rows: acceptable rate (Wilson 95%), score and value (t 95%), costs, time vs vanilla."""
    rows = []
    vanilla_s = np.mean([r["seconds"] for r in records if r["method"] == "vanilla"] or [np.nan])
    by_key = {(r["method"], r["seed"], r["prompt_index"]): r for r in records}
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        accepted = sum(r["acceptable"] for r in mine)
        low, high = wilson(accepted, len(mine))
        score, score_ci = _mean_half([r["score"] for r in mine])
        value, value_ci = _mean_half([r["value"] for r in mine])
        row = {
            "method": method,
            "completions": len(mine),
            "acceptable": accepted / len(mine) if mine else float("nan"),
            "acceptable_ci95": [low, high],
            "score": score,
            "score_ci95": score_ci,
            "value": value,
            "value_ci95": value_ci,
            "forward_tokens": float(np.mean([r["forward_tokens"] for r in mine])),
            "evaluator_calls": float(np.mean([r["evaluator_calls"] for r in mine])),
            "seconds": float(np.mean([r["seconds"] for r in mine])),
            "time_vs_vanilla": float(np.mean([r["seconds"] for r in mine]) / vanilla_s),
        }
        paired = [
            r["score"] - by_key[("vanilla", r["seed"], r["prompt_index"])]["score"]
            for r in mine
            if ("vanilla", r["seed"], r["prompt_index"]) in by_key and method != "vanilla"
        ]
        if paired:
            row["score_vs_vanilla"], row["score_vs_vanilla_ci95"] = _mean_half(paired)
        rows.append(row)
    return {"table": rows}


def markdown(summary: dict[str, Any]) -> str:
    """The summary table as markdown."""
    cfg = summary["config"]
    rate = summary["rate"]
    what = f"{rate['name']} by {summary['judge']}" if rate else "acceptable"
    lines = [
        f"# Inference-time search on {cfg['env']}",
        "",
        f"Model {cfg['model']}, {cfg['prompts']} test prompts x {cfg['seeds']} seed(s); the search's evaluator: "
        f"`{summary['evaluator']}`; held-out judge: `{summary['judge']}`. Intervals are 95% (Wilson for rates, "
        "Student-t over prompts for means).",
        "",
        f"| method | completions | % {what} | task score | vs vanilla (paired) | evaluator value | forward tokens "
        "| evaluator calls | s / prompt | time vs vanilla |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary["table"]:
        low, high = r["acceptable_ci95"]
        paired = f"{r['score_vs_vanilla']:+.3f} ± {r['score_vs_vanilla_ci95']:.3f}" if "score_vs_vanilla" in r else ""
        lines.append(
            f"| {r['method']} | {r['completions']} | {100 * r['acceptable']:.0f}% ({100 * low:.0f}-{100 * high:.0f}) "
            f"| {r['score']:+.3f} ± {r['score_ci95']:.3f} | {paired} | {r['value']:+.3f} ± {r['value_ci95']:.3f} "
            f"| {r['forward_tokens']:.0f} | {r['evaluator_calls']:.1f} | {r['seconds']:.2f} "
            f"| {r['time_vs_vanilla']:.1f}x |"
        )
    return "\n".join(lines + ["", "![search](search.png)", ""])


def plot(summary: dict[str, Any], path: Path) -> None:
    """Acceptable rate (with its interval) against forward tokens per prompt, one point per method."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in summary["table"]:
        low, high = r["acceptable_ci95"]
        y = 100 * r["acceptable"]
        ax.errorbar(r["forward_tokens"], y, yerr=[[y - 100 * low], [100 * high - y]], fmt="o", capsize=4)
        ax.annotate(r["method"], (r["forward_tokens"], y), textcoords="offset points", xytext=(6, 4))
    ax.set(xscale="log", xlabel="forward tokens per prompt", ylabel="% acceptable (held-out judge)")
    ax.set_title(summary["config"]["env"].split("/")[-1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
