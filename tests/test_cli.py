from __future__ import annotations

import json

import pytest
import torch

from criticgym.agents.distill import read_jsonl
from criticgym.cli import main


def test_label_train_rm_and_eval_judge_commands(tmp_path, capsys):
    prefs = tmp_path / "prefs.jsonl"
    argv = ["label", "--policy", "tiny", "--judge", "lexicon", "--prompts", "10", "--batch-pairs", "4"]
    assert main(argv + ["--out", str(prefs)]) == 0
    records = read_jsonl(prefs)
    assert len(records) == 10 and {r["judge"] for r in records} == {"lexicon"}
    assert all(abs(r["p_first_ab"] + r["p_first_ba"] - 1) < 1e-9 for r in records)  # a scorer judge is symmetric

    rm = tmp_path / "rm"
    assert main(["train-rm", "--data", str(prefs), "--epochs", "5", "--out", str(rm)]) == 0
    metrics = json.loads((rm / "metrics.json").read_text())
    assert metrics["train_pairs"] == 8 and metrics["val_pairs"] == 2 and (rm / "weights.safetensors").exists()
    assert f"--scorer {rm}" in capsys.readouterr().out

    out = tmp_path / "judges.json"
    assert main(["eval-judge", "--judge", "lexicon", "--pairs", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())[0]
    assert result["judge"] == "lexicon" and result["pairs"] == 20
    assert "| lexicon | 20 |" in out.with_suffix(".md").read_text()
    assert main(["bench", "nothing"]) == 2


def test_eval_prints_the_held_out_table_of_a_model_and_of_a_run(tmp_path, capsys):
    env = ["--env", "criticgym/Words-v0"]
    assert main(["eval", "--model", "tiny", *env, "--prompts", "4", "--out", str(tmp_path / "eval.json")]) == 0
    text = capsys.readouterr().out
    assert "Held-out evaluation (4 test prompts" in text and "eval/score" in text and "eval/perplexity" in text
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"tiny"}

    run = tmp_path / "run"
    train = ["train", *env, "--reward", "sparse", "--model", "tiny", "--iterations", "2", "--num-envs", "4"]
    train += ["--eval-prompts", "4", "--out", str(run), "--no-progress", "--ppo.epochs", "1", "--ppo.lr", "1e-3"]
    assert main(train) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--prompts", "4", "--out", str(tmp_path / "run.json")]) == 0
    columns = json.loads((tmp_path / "run.json").read_text())
    assert list(columns) == ["base", "iteration 2"]
    # training evaluated on the same prompts with the same seed: the same numbers, before and after
    evals = torch.load(run / "checkpoint.pt", weights_only=False)["evals"]
    for column, during_training in zip(columns.values(), (evals[0], evals[-1]), strict=True):
        assert column["eval/score"] == pytest.approx(during_training["eval/score"])
        assert column["eval/perplexity"] == pytest.approx(during_training["eval/perplexity"], rel=1e-4)
    assert json.loads((run / "config.json").read_text())["ppo"]["lr"] == 1e-3
    assert "base" in capsys.readouterr().out
