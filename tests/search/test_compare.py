from __future__ import annotations

import json

import numpy as np
import pytest

from criticgym.cli import main
from criticgym.critics import as_scorer
from criticgym.envs import get_task
from criticgym.errors import ConfigError
from criticgym.search.compare import SearchConfig, run_search
from criticgym.search.rain import RAINConfig


def test_search_runs_every_method_on_the_same_prompts_and_writes_the_report(tmp_path):
    cfg = SearchConfig(
        env="criticgym/Words-v0",
        evaluator="word-count",
        model="tiny",
        prompts=3,
        seeds=2,
        n=3,
        rain=RAINConfig(searches=3, min_new_searches=2),
        out=str(tmp_path),
        progress=False,
    )
    summary = run_search(cfg, log=lambda *_: None)
    records = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 3 * 2
    for method in ("best-of-n", "rain"):  # the same prompts for every method
        assert [r["prompt"] for r in records if r["method"] == method] == [
            r["prompt"] for r in records if r["method"] == "vanilla"
        ]
    rows = {r["method"]: r for r in summary["table"]}
    # each completion's score is the task's scorer of it, and the table's means are those of the records
    scorer = as_scorer(get_task("words").scorer)
    scores = scorer.score([r["prompt"] for r in records], [r["completion"] for r in records])
    assert [r["score"] for r in records] == pytest.approx(list(scores))
    for method, row in rows.items():
        mine = [r for r in records if r["method"] == method]
        assert row["score"] == pytest.approx(np.mean([r["score"] for r in mine]))
        assert row["value"] == pytest.approx(np.mean([r["value"] for r in mine]))
    assert rows["vanilla"]["time_vs_vanilla"] == pytest.approx(1.0)
    assert rows["best-of-n"]["evaluator_calls"] == 3 and rows["vanilla"]["evaluator_calls"] == 0
    assert rows["rain"]["forward_tokens"] > rows["vanilla"]["forward_tokens"]
    assert all(len(r["completion_ids"]) <= 8 for r in records)  # the env's budget
    assert "| rain | 6 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "search.png").read_bytes()[:4] == b"\x89PNG"


def test_search_command_and_bad_methods(tmp_path, capsys):
    argv = ["search", "--method", "vanilla", "--env", "criticgym/Words-v0", "--evaluator", "word-count"]
    assert main([*argv, "--model", "tiny", "--prompts", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "| vanilla | 2 |" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="Unknown method"):
        SearchConfig(method="vanilla,beam")
    with pytest.raises(ConfigError, match="held out"):
        SearchConfig(evaluator="vader", judge="vader")
