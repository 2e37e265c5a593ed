"""The SELF table and plot from the runs of ``benchmarks/self_results.sh``.

    python benchmarks/self_summary.py benchmarks/results/self-arithmetic --command "bash benchmarks/self_results.sh 3"

Reads ``runs/<arm>/seed-<n>/metrics.csv`` (one row per stage: -1 base, 0 meta-skills or M0, 1 the round) and
writes ``summary.md``, ``table.json`` and ``self.png``: held-out accuracy with a 95% t-interval over seeds, the
accuracy after one self-refinement, the precision and recall of the model's own judgements against the program,
how refinement moved answers, and the training tokens of each stage.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

# (row name, arm, stage, column): what each line of the table reads
ROWS = [
    ("base model", "self", -1, "eval/accuracy"),
    ("base model + self-refinement", "self", -1, "eval/accuracy_refined"),
    ("M0: fine-tuned on gold answers", "m0-train", 0, "eval/accuracy"),
    ("M0 + self-training (every answer kept)", "m0-train", 1, "eval/accuracy"),
    ("meta-skills (stage 0 of SELF)", "self", 0, "eval/accuracy"),
    ("meta-skills + self-refinement", "self", 0, "eval/accuracy_refined"),
    ("SELF, round 1 (own judgement filters)", "self", 1, "eval/accuracy"),
    ("SELF, round 1, + self-refinement at inference", "self", 1, "eval/accuracy_refined"),
    ("SELF, round 2", "self", 2, "eval/accuracy"),
    ("SELF, round 3", "self", 3, "eval/accuracy"),
    ("SELF, round 3, + self-refinement at inference", "self", 3, "eval/accuracy_refined"),
    ("meta-skills + round filtered by the program (oracle)", "program", 1, "eval/accuracy"),
]
# (name, (arm, stage, column) of a, of b): a - b per seed, the same seeds and round problems on both sides
PAIRS = [
    ("SELF round 1 - M0 + self-training", ("self", 1, "eval/accuracy"), ("m0-train", 1, "eval/accuracy")),
    ("SELF round 1 - meta-skills (what the round adds)", ("self", 1, "eval/accuracy"), ("self", 0, "eval/accuracy")),
    ("SELF round 3 - round 1 (what more rounds add)", ("self", 3, "eval/accuracy"), ("self", 1, "eval/accuracy")),
    ("SELF round 3 - M0 (gold answers)", ("self", 3, "eval/accuracy"), ("m0-train", 0, "eval/accuracy")),
    ("meta-skills - M0 (feedback vs gold data)", ("self", 0, "eval/accuracy"), ("m0-train", 0, "eval/accuracy")),
    ("program filter - own filter", ("program", 1, "eval/accuracy"), ("self", 1, "eval/accuracy")),
    (
        "SELF round 1: self-refinement at inference - none",
        ("self", 1, "eval/accuracy_refined"),
        ("self", 1, "eval/accuracy"),
    ),
]


def read_runs(folder: Path) -> dict[str, list[dict[int, dict[str, float]]]]:
    """Per arm, one {stage: row} per seed."""
    runs: dict[str, list] = {}
    for path in sorted(folder.glob("runs/*/seed-*/metrics.csv")):
        with path.open() as handle:
            rows = {int(r["stage"]): {k: _number(v) for k, v in r.items()} for r in csv.DictReader(handle)}
        runs.setdefault(path.parent.parent.name, []).append(rows)
    return runs


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with one value)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def table(runs: dict) -> list[dict]:
    out = []
    for name, arm, stage, column in ROWS:
        found = [seed[stage] for seed in runs.get(arm, []) if stage in seed]
        if not found:
            continue
        mean, half = interval([r[column] for r in found])
        judged = [r for r in found if not math.isnan(r.get("eval/judge_precision", math.nan))]
        out.append(
            {
                "row": name,
                "seeds": len(found),
                "accuracy": mean,
                "ci": half,
                "judge_precision": float(np.mean([r["eval/judge_precision"] for r in judged])) if judged else None,
                "judge_recall": float(np.nanmean([r.get("eval/judge_recall", math.nan) for r in found])),
                "wrong_to_right": int(sum(r.get("eval/wrong_to_right", 0) for r in found)),
                "right_to_wrong": int(sum(r.get("eval/right_to_wrong", 0) for r in found)),
                "train_tokens": float(np.nan_to_num(np.mean([r.get("train_tokens", math.nan) for r in found]))),
            }
        )
    return out


def paired(runs: dict) -> list[dict]:
    """Per-seed differences between two rows, with a 95% t-interval; only seeds that have both."""
    out = []
    for name, (arm_a, stage_a, col_a), (arm_b, stage_b, col_b) in PAIRS:
        a, b = runs.get(arm_a, []), runs.get(arm_b, [])
        diffs = [
            x[stage_a][col_a] - y[stage_b][col_b] for x, y in zip(a, b, strict=False) if stage_a in x and stage_b in y
        ]
        if diffs:
            mean, half = interval(diffs)
            out.append({"difference": name, "seeds": len(diffs), "mean": mean, "ci": half})
    return out


def filters(runs: dict) -> list[dict]:
    """How each arm's filter chose its training answers in each round, against the program (summed over seeds)."""
    out = []
    for arm in ("self", "program", "m0-train"):
        rounds = sorted({stage for seed in runs.get(arm, []) for stage in seed if stage >= 1})
        for stage in rounds:
            found = [seed[stage] for seed in runs.get(arm, []) if stage in seed]
            keys = ("round/kept", "round/kept_correct", "round/correct")
            kept, right, total = (int(sum(r[k] for r in found)) for k in keys)
            out.append(
                {
                    "arm": arm,
                    "round": stage,
                    "seeds": len(found),
                    "kept": kept,
                    "kept_right": right,
                    "right": total,
                    "precision": right / kept if kept else math.nan,
                    "recall": right / total if total else math.nan,
                }
            )
    return out


def markdown(rows: list[dict], command: str, diffs: list[dict] = (), chosen: list[dict] = ()) -> str:
    lines = [
        "# SELF on held-out Arithmetic problems (SmolLM2-135M)",
        "",
        f"Command: `{command}`",
        "",
        "| | seeds | held-out accuracy (95% CI) | judge precision | judge recall | refinement: wrong->right / "
        "right->wrong | training tokens (this stage) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ci = f" ± {r['ci']:.3f}" if not math.isnan(r["ci"]) else ""
        precision = f"{r['judge_precision']:.2f}" if r["judge_precision"] is not None else "n/a"
        recall = f"{r['judge_recall']:.2f}" if not math.isnan(r["judge_recall"]) else "n/a"
        tokens = f"{r['train_tokens']:,.0f}" if r["train_tokens"] else ""
        lines.append(
            f"| {r['row']} | {r['seeds']} | {r['accuracy']:.3f}{ci} | {precision} | {recall} | "
            f"{r['wrong_to_right']} / {r['right_to_wrong']} | {tokens} |"
        )
    if diffs:
        lines += ["", "| paired difference of held-out accuracy | seeds | mean (95% CI) |", "| --- | ---: | ---: |"]
        for d in diffs:
            ci = f" ± {d['ci']:.3f}" if not math.isnan(d["ci"]) else ""
            lines.append(f"| {d['difference']} | {d['seeds']} | {d['mean']:+.3f}{ci} |")
    if chosen:
        lines += [
            "",
            "| round's filter | round | seeds | answers kept | of them right | right answers in all | precision | "
            "recall |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for f in chosen:
            lines.append(
                f"| {f['arm']} | {f['round']} | {f['seeds']} | {f['kept']} | {f['kept_right']} | {f['right']} | "
                f"{f['precision']:.2f} | {f['recall']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_all(runs: dict, path: Path) -> None:
    """Every stage of every run in one file (the runs themselves hold checkpoints and stay out of git)."""
    records = [
        {"arm": arm, "seed": seed, **row, "stage": stage}
        for arm, seeds in sorted(runs.items())
        for seed, stages in enumerate(seeds)
        for stage, row in sorted(stages.items())
    ]
    keys = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [r["row"] for r in rows]
    errors = [0.0 if math.isnan(r["ci"]) else r["ci"] for r in rows]
    ax.barh(range(len(rows)), [r["accuracy"] for r in rows], xerr=errors, color="tab:blue", alpha=0.8)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="held-out accuracy (95% CI over seeds)", title="SELF on Arithmetic, SmolLM2-135M")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--command", default="bash benchmarks/self_results.sh")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    runs = read_runs(folder)
    rows, diffs, chosen = table(runs), paired(runs), filters(runs)
    text = markdown(rows, args.command, diffs, chosen)
    (folder / "summary.md").write_text(text)
    (folder / "table.json").write_text(json.dumps({"rows": rows, "paired": diffs, "filters": chosen}, indent=2) + "\n")
    write_all(runs, folder / "runs.csv")
    if rows:
        plot(rows, folder / "self.png")
    print(text)
    return rows


if __name__ == "__main__":
    main()
