from __future__ import annotations

import json

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
