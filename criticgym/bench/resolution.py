"""What a benchmark's paired comparisons resolve, and what a smaller difference would take.

For each arm against a baseline: the difference and its interval, the smallest difference its seeds and prompts
could detect, how the variance splits between training (seeds) and sampling (prompts), and the seeds or prompts a
named difference would need (:mod:`criticgym.utils.power`).

``bench ablation`` and ``bench frontier`` both report it. Scores come keyed by ``(arm, seed)``: each prompt's score
where the run kept them (the split is then known), else one mean per seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Scores = Mapping[tuple[str, int], "float | Sequence[float]"]


def paired(scores: Scores, arm: str, baseline: str) -> tuple[np.ndarray, np.ndarray]:
    """Two arms' scores over the seeds both ran.

    (seeds, prompts) arrays over the prompts every run served if each kept its prompts' scores (runs serve the first
    prompts of one list, so a run with fewer pairs on its own), else (seeds,) arrays of their means.
    """
    seeds = sorted(s for (a, s) in scores if a == arm and (baseline, s) in scores)
    rows = [(np.atleast_1d(scores[(arm, s)]), np.atleast_1d(scores[(baseline, s)])) for s in seeds]
    common = min((len(x) for pair in rows for x in pair), default=0)
    if common > 1:
        return tuple(np.array([pair[i][:common] for pair in rows], dtype=np.float64) for i in (0, 1))
    return np.array([a.mean() for a, _ in rows]), np.array([b.mean() for _, b in rows])


def per_seed_differences(scores: Scores, arm: str, baseline: str) -> np.ndarray:
    """Each shared seed's mean paired difference ``arm - baseline`` (over the prompts both served)."""
    mine, theirs = paired(scores, arm, baseline)
    return (mine - theirs).mean(axis=1) if mine.ndim == 2 else mine - theirs


def resolution_rows(scores: Scores, baseline: str, difference: float | None = None) -> list[dict[str, Any]]:
    """One row per arm other than ``baseline`` that shares a seed with it (see the module's text)."""
    from criticgym.utils.power import paired_resolution

    rows = []
    for arm in dict.fromkeys(a for a, _ in scores if a != baseline):
        arm_scores, base_scores = paired(scores, arm, baseline)
        if len(arm_scores) == 0:
            continue
        r = paired_resolution(arm_scores, base_scores)
        row = {"arm": arm, "vs": baseline, "seeds": r.seeds, "prompts": r.prompts}
        row |= {"difference": r.difference, "ci": r.half_width, "resolved": r.resolved, "detectable": r.detectable}
        row |= {"seed_variance": r.seed_variance, "prompt_variance": r.prompt_variance, "prompt_share": r.prompt_share}
        if difference is not None:
            row |= {"target": difference, "seeds_for_target": r.seeds_for(difference)}
            row["prompts_for_target"] = r.prompts_for(difference)
        rows.append(row)
    return rows


def markdown_lines(rows: list[dict[str, Any]], judged_by: str) -> list[str]:
    """The rows as a markdown table with a note on how to read it (nothing without rows)."""
    if not rows:
        return []
    vs, target = rows[0]["vs"], rows[0].get("target")
    lines = ["", f"What the comparison with {vs} resolves, by {judged_by} (95% confidence, 80% power):", ""]
    head = ["arm", "seeds", "prompts", f"vs {vs}", "resolved", "detectable", "variance from prompts"]
    if target is not None:
        head += [f"seeds for {target:g}", f"prompts for {target:g}"]
    lines += ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * 3 + " :---: |" + " ---: |" * (len(head) - 5)]
    for row in rows:
        share = row["prompt_share"]  # None: per-seed means only (or one seed), the split unknown
        known = row["seeds"] > 1  # one seed measures no variance: nothing to plan from
        prompts = "means" if share is None and known else str(row["prompts"])
        cells = [row["arm"], str(row["seeds"]), prompts, _fmt(row["difference"], row["ci"])]
        cells += ["yes" if row["resolved"] else "no", f"{row['detectable']:.3f}" if known else "unknown"]
        cells.append("unknown" if share is None else f"{share:.0%}")
        if target is not None:
            cells += [_count(row["seeds_for_target"]) if known else "unknown"]
            cells.append("unknown" if share is None else _count(row["prompts_for_target"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [
        "",
        "Resolved: the 95% interval excludes 0. Detectable: the smallest true difference these seeds and prompts detect"
        " with 80% power. Variance from prompts: the share of a per-seed difference's variance that more prompts would"
        " remove (the rest comes from training and only more seeds remove it; unknown where runs kept only each seed's"
        " mean, and prompts then shows means, or with one seed). A target's seeds are at the prompts served, its"
        " prompts at the seeds run (never: the seed variance alone is too large, add seeds).",
    ]


def _fmt(mean: float, half: float) -> str:
    return f"{mean:+.3f} ± {half:.3f}" if np.isfinite(half) else f"{mean:+.3f}"


def _count(n: int | None) -> str:
    return "never" if n is None else f"{n:,}"
