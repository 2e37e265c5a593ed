"""What each arm of the frontier costs to serve N completions, which arms win at which N, and the table and plot.

Training-time feedback (sparse, RELC, RLAIF, SELF) pays once, before deployment; inference-time search (best-of-N,
RAIN) pays on every completion. To put both on one axis, an arm's cost to serve N held-out completions is

    cost(N) = training FLOPs (policy + reward, the whole run) + N * inference FLOPs per completion

(the untrained policy and the search arms train nothing; a trained policy's inference is one sampled completion; a
search's is its sampling plus its evaluations). Amortized, ``cost(N) / N = training / N + inference``. At a
deployment size N an arm is on the frontier when no other arm is at once cheaper (or as cheap) and better (or as
good) with one of the two strict; :func:`winners` lists the frontier for each N and :func:`crossover` the N at which
two arms cost the same. :func:`report` turns the records of ``criticgym bench frontier`` (:mod:`.frontier`) into
its summary, table and plot.

    >>> trained, search = ArmCost(train_flops=1e12, inference_flops=1e9), ArmCost(inference_flops=3e10)
    >>> trained.to_serve(100), search.to_serve(100)
    (1100000000000.0, 3000000000000.0)
    >>> round(crossover(trained, search), 1)  # from about 34 completions on, training is the cheaper way
    34.5
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from criticgym.bench import resolution
from criticgym.errors import ConfigError

SEARCH_ARMS = ("best-of-n", "rain")
"""The arms that train nothing and pay per completion for a search."""

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


PAIRED_WITH = ("untrained", "sparse", "best-of-n")
"""The arms every other arm is compared with, seed by seed: no training, the plain reward, the plain search."""


def summarize(
    records: list[dict[str, Any]],
    judges: list[str],
    baselines: Sequence[str] = PAIRED_WITH,
    difference: float | None = None,
) -> dict[str, Any]:
    """The frontier's table, its winners at each deployment size and what it resolves.

    Per arm: each judge's mean with a 95% interval over seeds, the mean FLOPs, and on the independent judge (the
    first) the paired difference with each of ``baselines`` that ran (``vs <baseline>``, over the seeds both ran and
    the prompts both served).
    ``resolution``: what each difference with the first of ``baselines`` after the untrained policy that ran (the
    sparse arm) resolves, on the independent judge, for a named ``difference`` too (:mod:`.resolution`).
    """
    from criticgym.utils.stats import mean_ci

    arms = list(dict.fromkeys(r["arm"] for r in records))
    independent = judges[0]
    # each prompt's score where records kept them: arms that served fewer prompts pair on the ones both served
    judged = {
        (r["arm"], r["seed"]): r.get("per_prompt", {}).get(independent, r["scores"][independent]) for r in records
    }
    table, costs, scores = [], {}, {}
    for arm in arms:
        runs = [r for r in records if r["arm"] == arm]
        row: dict[str, Any] = {"arm": arm, "family": runs[0]["family"], "learns from": runs[0].get("learns_from", "")}
        row["seeds"] = len(runs)
        for judge in judges:
            row[judge], row[f"{judge} ci"] = (float(x) for x in mean_ci(np.array([r["scores"][judge] for r in runs])))
        if all("perplexity" in r for r in runs):
            row["perplexity"], row["perplexity ci"] = (
                float(x) for x in mean_ci(np.array([r["perplexity"] for r in runs]))
            )
        for baseline in (b for b in baselines if b != arm):
            paired = resolution.per_seed_differences(judged, arm, baseline)
            if len(paired):
                row[f"vs {baseline}"], row[f"vs {baseline} ci"] = (float(x) for x in mean_ci(paired))
        costs[arm] = ArmCost(
            float(np.mean([r["train_flops"] for r in runs])), float(np.mean([r["inference_flops"] for r in runs]))
        )
        row["train_tflop"], row["inference_gflop"] = costs[arm].train_flops / 1e12, costs[arm].inference_flops / 1e9
        scores[arm] = row[independent]
        table.append(row)
    summary = {"table": table, "costs": costs, "scores": scores, "winners": winners(costs, scores), "judges": judges}
    ran = [b for b in baselines if b in arms]
    against = next((b for b in ran if b != "untrained"), ran[0] if ran else None)
    resolved = resolution.resolution_rows(judged, against, difference) if against else []
    return summary | {"baselines": ran, "resolution": resolved}


def markdown(summary: dict[str, Any], command: str) -> str:
    """The frontier's table, the paired differences, the frontier at each N and the crossovers, as markdown."""
    judges, independent = summary["judges"], summary["judges"][0]
    lines = [f"Command: `{command}`", "", f"Held-out judges: {', '.join(judges)} ({independent} trains nothing).", ""]
    head = ["arm", "family", "trains or searches on", "seeds", *judges, "perplexity", "train TFLOP", "GFLOP/completion"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * 3 + " ---: |" * (len(head) - 3)]
    for row in summary["table"]:
        cells = [row["arm"], row["family"], row["learns from"], str(row["seeds"])]
        cells += [_fmt(row[j], row[f"{j} ci"]) for j in judges]
        cells.append(_fmt(row["perplexity"], row["perplexity ci"], ".2f") if "perplexity" in row else "")
        cells += [f"{row['train_tflop']:.2f}", f"{row['inference_gflop']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["baselines"]:
        lines += ["", f"Paired differences by {independent}, seed by seed (95% interval):", ""]
        lines += ["| arm | " + " | ".join(f"vs {b}" for b in summary["baselines"]) + " |"]
        lines += ["| --- |" + " ---: |" * len(summary["baselines"])]
        for row in summary["table"]:
            cells = [_fmt(row[f"vs {b}"], row[f"vs {b} ci"]) if f"vs {b}" in row else "" for b in summary["baselines"]]
            lines.append(f"| {row['arm']} | " + " | ".join(cells) + " |")
    lines += resolution.markdown_lines(summary["resolution"], independent)
    lines += ["", "On the frontier (no other arm cheaper and better) when serving N completions:", ""]
    lines += [f"- N = {n:.0e}: {', '.join(arms)}" for n, arms in summary["winners"].items()]
    return "\n".join(lines + _crossovers(summary["costs"]) + ["", "![frontier](frontier.png)", ""])


def _crossovers(costs: Mapping[str, ArmCost]) -> list[str]:
    """A table of the N from which each training arm costs less to serve than each search arm (search: none)."""
    search = [arm for arm, cost in costs.items() if cost.train_flops == 0 and arm in SEARCH_ARMS]
    trained = [arm for arm, cost in costs.items() if cost.train_flops > 0]
    if not (search and trained):
        return []
    lines = ["", "Served completions from which a trained arm costs less than a search (training amortized):", ""]
    lines += ["| trained arm | " + " | ".join(search) + " |", "| --- |" + " ---: |" * len(search)]
    for arm in trained:
        ns = [crossover(costs[arm], costs[other]) for other in search]
        lines.append(f"| {arm} | " + " | ".join("never" if n is None else f"{n:,.0f}" for n in ns) + " |")
    return lines


def _fmt(mean: float, half: float, spec: str = "+.3f") -> str:
    return f"{mean:{spec}} ± {half:{spec.lstrip('+')}}" if np.isfinite(half) else f"{mean:{spec}}"


def plot(summary: dict[str, Any], path: Path) -> None:
    """The independent judge's score (95% interval over seeds) against the FLOPs to serve N completions.

    One panel per N; the frontier is joined by a dashed line.
    """
    from criticgym.utils.plots import pyplot

    plt = pyplot()
    independent, sizes = summary["judges"][0], list(summary["winners"])
    half = {row["arm"]: np.nan_to_num(row[f"{independent} ci"]) for row in summary["table"]}
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.0 * len(sizes) + 1.3, 3.4), sharey=True)
    for ax, n in zip(np.atleast_1d(axes), sizes, strict=True):
        for arm, cost in summary["costs"].items():
            marker = "s" if cost.train_flops == 0 and arm != "untrained" else "o"
            ax.errorbar(cost.to_serve(n), summary["scores"][arm], yerr=half[arm], fmt=marker, capsize=2, label=arm)
        front = summary["winners"][n]
        ax.plot([summary["costs"][a].to_serve(n) for a in front], [summary["scores"][a] for a in front], "k--", lw=0.8)
        ax.set(xscale="log", title=f"serving N = {n:.0e}", xlabel="FLOPs (training + N completions)")
    np.atleast_1d(axes)[0].set_ylabel(f"held-out score ({independent})")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.2 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(
    records: list[dict[str, Any]],
    judges: list[str],
    out: Path,
    command: str,
    log=print,
    difference: float | None = None,
) -> dict[str, Any]:
    """Write the frontier's summary.md, table.json, frontier.png and records.jsonl (every record: its completions)."""
    summary = summarize(records, judges, difference=difference)
    plot(summary, out / "frontier.png")
    (out / "summary.md").write_text(markdown(summary, command))
    table = {"table": summary["table"], "winners": {str(n): a for n, a in summary["winners"].items()}}
    table["resolution"] = summary["resolution"]
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    log((out / "summary.md").read_text())
    return summary
