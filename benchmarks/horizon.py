"""Does dense credit pay more as completions grow? RELC against sparse at two horizons, from frontier runs.

Each ``--run TOKENS=FOLDER`` is a ``criticgym bench frontier`` run of some of the arms ``untrained``, ``sparse`` and
``relc-lexicon`` (a horizon may take several folders, e.g. one per arm run side by side); the horizons differ only in
``--max-new-tokens``. Per horizon and judge: each arm's score, the paired RELC - sparse difference over seeds with
its 95% interval and what it could detect (``criticgym.bench.resolution``); across horizons: the change of that gain
(long minus short) with a Welch interval (the two horizons' seeds are separate runs).

    python benchmarks/horizon.py --run 20=benchmarks/results/frontier-cpu-256 \
        --run 60=benchmarks/results/horizon-cpu/60-sparse --run 60=benchmarks/results/horizon-cpu/60-relc \
        --out benchmarks/results/horizon-cpu

(``make bench-horizon`` runs the frontiers and this.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from criticgym.bench.resolution import per_seed_differences, resolution_rows
from criticgym.utils.stats import mean_ci, welch_ci

ARM, BASELINE = "relc-lexicon", "sparse"


def load(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def horizon_rows(tokens: int, records: list[dict], judges: list[str]) -> list[dict]:
    """One row per judge (and perplexity): both arms' means and RELC's paired gain with its resolution."""
    rows = []
    for judge in [*judges, "perplexity"]:
        if judge == "perplexity":
            scores = {(r["arm"], r["seed"]): r["perplexity"] for r in records if "perplexity" in r}
        else:
            scores = {(r["arm"], r["seed"]): r.get("per_prompt", {}).get(judge, r["scores"][judge]) for r in records}
        (resolved,) = [row for row in resolution_rows(scores, BASELINE) if row["arm"] == ARM]
        gains = per_seed_differences(scores, ARM, BASELINE)
        row = {"tokens": tokens, "judge": judge, "gains": gains.tolist()}
        for arm in ("untrained", BASELINE, ARM):
            values = [np.mean(v) for (a, _), v in scores.items() if a == arm]
            row[arm], row[f"{arm} ci"] = (float(x) for x in mean_ci(values)) if values else (np.nan, np.nan)
        rows.append(
            row
            | {k: resolved[k] for k in ("seeds", "prompts", "difference", "ci", "resolved", "detectable")}
            | {"prompt_share": resolved["prompt_share"]}
        )
    return rows


def fmt(mean: float, half: float, spec: str = "+.3f") -> str:
    return f"{mean:{spec}} ± {half:{spec.lstrip('+')}}" if np.isfinite(half) else f"{mean:{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="TOKENS=FOLDER, a frontier run per horizon")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    folders: dict[int, list[Path]] = {}
    for tokens, _, folder in (r.partition("=") for r in args.run):
        folders.setdefault(int(tokens), []).append(Path(folder))
    runs = sorted((tokens, [r for f in fs for r in load(f)]) for tokens, fs in folders.items())
    judges = list(runs[0][1][0]["scores"])  # the frontier's --judges, the independent one first
    rows = [row for tokens, records in runs for row in horizon_rows(tokens, records, judges)]
    growth = []
    for judge in [*judges, "perplexity"]:
        (short,), (long,) = (
            [r for r in rows if r["judge"] == judge and r["tokens"] == t] for t in (runs[0][0], runs[-1][0])
        )
        change, half = welch_ci(long["gains"], short["gains"])
        growth.append({"judge": judge, "change": change, "ci": half, "resolved": bool(abs(change) > half)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"rows": rows, "growth": growth}, indent=1) + "\n")
    lines = [
        "# Does dense credit pay more as completions grow? RELC (lexicon critic) against sparse",
        "",
        "Command: `python benchmarks/horizon.py "
        + " ".join([*(f"--run {r}" for r in args.run), f"--out {out}"])
        + "`, on the frontier runs their `summary.md` names.",
        "",
        "| new tokens | judge | untrained | sparse | RELC | RELC - sparse (paired) | resolved | detectable "
        "| seeds x prompts |",
        "| ---: | --- | ---: | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for r in rows:
        spec = ".2f" if r["judge"] == "perplexity" else "+.3f"
        cells = [str(r["tokens"]), r["judge"], fmt(r["untrained"], r["untrained ci"], spec)]
        cells += [fmt(r[BASELINE], r[f"{BASELINE} ci"], spec), fmt(r[ARM], r[f"{ARM} ci"], spec)]
        cells += [fmt(r["difference"], r["ci"], spec), "yes" if r["resolved"] else "no", f"{r['detectable']:.3f}"]
        cells.append(f"{r['seeds']} x {r['prompts']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"The gain's change from {runs[0][0]} to {runs[-1][0]} new tokens (Welch 95% interval):", ""]
    lines += ["| judge | change of RELC - sparse | resolved |", "| --- | ---: | :---: |"]
    lines += [f"| {g['judge']} | {fmt(g['change'], g['ci'])} | {'yes' if g['resolved'] else 'no'} |" for g in growth]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
