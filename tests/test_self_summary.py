"""The SELF results page (benchmarks/self_summary.py) on metrics written by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def summary_module():
    spec = importlib.util.spec_from_file_location("self_summary", ROOT / "benchmarks" / "self_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(folder: Path, arm: str, seed: int, rows: list[dict]) -> None:
    path = folder / "runs" / arm / f"seed-{seed}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def test_the_summary_pairs_seeds_and_scores_each_filter_against_the_program(tmp_path):
    def stage(n, accuracy, refined=None, kept=None, kept_right=None):
        row = {"stage": n, "eval/accuracy": accuracy, "eval/accuracy_refined": refined or accuracy}
        if n >= 1:  # a round: 10 of its answers are right
            row |= {"round/kept": kept, "round/kept_correct": kept_right, "round/correct": 10, "train_tokens": 100}
        return row

    accuracies = [(0.10, 0.12, 0.08, 0.14, 0.20), (0.12, 0.12, 0.10, 0.18, 0.24)]  # per seed, stage by stage
    for seed, (m0, st, meta, own, oracle) in enumerate(accuracies):
        base = [stage(-1, 0.03)] if seed == 0 else []  # evaluated once
        write(tmp_path, "m0-train", seed, [stage(0, m0), stage(1, st, kept=96, kept_right=10)])
        rounds = [stage(1, own, 0.2, kept=8, kept_right=4), stage(2, own, kept=4, kept_right=1)]
        rounds.append(stage(3, own + 0.05 * (seed + 1), kept=2, kept_right=2))
        write(tmp_path, "self", seed, [*base, stage(0, meta), *rounds])
        write(tmp_path, "program", seed, [stage(0, meta), stage(1, oracle, kept=10, kept_right=10)])

    summary_module().main([str(tmp_path), "--command", "test"])
    table = json.loads((tmp_path / "table.json").read_text())
    rows = {r["row"]: r for r in table["rows"]}
    assert rows["base model"]["seeds"] == 1 and rows["base model"]["accuracy"] == pytest.approx(0.03)
    assert rows["SELF, round 1 (own judgement filters)"]["accuracy"] == pytest.approx(0.16)
    paired = {d["difference"]: d for d in table["paired"]}
    assert paired["SELF round 1 - M0 + self-training"]["mean"] == pytest.approx((0.02 + 0.06) / 2)
    assert paired["program filter - own filter"]["mean"] == pytest.approx(0.06)
    assert paired["program filter - own filter"]["ci"] == pytest.approx(0.0, abs=1e-9)  # the same gap on both seeds
    assert paired["SELF round 3 - round 1 (what more rounds add)"]["mean"] == pytest.approx((0.05 + 0.10) / 2)
    assert rows["SELF, round 3"]["seeds"] == 2
    filters = {(f["arm"], f["round"]): f for f in table["filters"]}
    own = filters["self", 1]
    assert own["precision"] == pytest.approx(8 / 16) and own["recall"] == pytest.approx(8 / 20)
    assert filters["program", 1]["precision"] == 1.0 and filters["m0-train", 1]["precision"] == pytest.approx(20 / 192)
    assert filters["self", 2]["precision"] == pytest.approx(2 / 8) and filters["self", 3]["kept"] == 4
    assert ("program", 2) not in filters
    assert "| self | 1 | 2 | 16 | 8 | 20 | 0.50 | 0.40 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "self.png").exists()
    with (tmp_path / "runs.csv").open() as handle:
        every = list(csv.DictReader(handle))
    assert len(every) == 3 * 2 * 2 + 2 * 2 + 1  # three arms, two seeds, two stages each; self's rounds 2-3; the base
    assert {(r["arm"], r["seed"], r["stage"]) for r in every} >= {("self", "0", "-1"), ("m0-train", "1", "1")}
