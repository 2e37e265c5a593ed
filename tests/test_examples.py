from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rlaif_example_trains_on_the_direct_judge_and_on_the_distilled_reward_model(tmp_path):
    example = load("rlaif_reinforce")
    argv = ["--policy", "tiny", "--judge", "label:tiny", "--iterations", "1", "--num-envs", "4", "--pairs", "12"]
    summary = example.main(argv + ["--eval-prompts", "4", "--out", str(tmp_path), "--quiet"])
    assert (tmp_path / "reward-model" / "reward_model.json").exists()
    assert len((tmp_path / "prefs.jsonl").read_text().splitlines()) == 12
    assert json.loads((tmp_path / "summary.json").read_text())["reward_model"]["pairs"] == 12
    for run in ("direct", "distilled"):
        config = json.loads((tmp_path / run / "config.json").read_text())
        assert config["agent"] == "reinforce" and len((tmp_path / run / "metrics.csv").read_text().splitlines()) == 2
    # both runs start from the same policy and are evaluated on the same held-out prompts and seed
    assert summary["direct"]["score_before"] == summary["distilled"]["score_before"]
    distilled = json.loads((tmp_path / "distilled" / "config.json").read_text())["reward"]
    assert distilled["kind"] == "sparse" and distilled["scorer"].endswith("reward-model")
    direct = json.loads((tmp_path / "direct" / "config.json").read_text())
    assert direct["reward"] == {"kind": "rlaif-direct", "judge_model": "label:tiny"}
