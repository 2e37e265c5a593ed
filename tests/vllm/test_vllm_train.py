"""``criticgym train --engine vllm``: PPO iterations whose rollouts vLLM samples (``make test-vllm``)."""

from __future__ import annotations

import csv

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="make test-vllm installs vLLM's CPU build")

from criticgym.cli import main  # noqa: E402


def rows_of(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("lora", [False, True])
def test_ppo_iterations_on_vllm_rollouts(tmp_path, lora):
    args = ["train", "--env", "criticgym/Words-v0", "--model", "tiny-vllm", "--engine", "vllm", "--iterations", "2"]
    args += [
        "--num-envs",
        "8",
        "--ppo.lr",
        "1e-3",
        "--ppo.epochs",
        "1",
        "--ppo.minibatch-size",
        "4",
        "--ppo.tis-cap",
        "2",
    ]
    args += ["--eval-prompts", "4", "--out", str(tmp_path), "--no-progress"]
    args += ["--lora-r", "4"] if lora else []
    main([*args, "sparse"])
    rows = rows_of(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    for row in rows:
        # vLLM's log-probs and the learner's re-scored ones: the same distribution up to float rounding on the CPU
        assert 0 <= float(row["rollout/logprob_gap"]) < 1e-3
        assert float(row["perf/weight_sync_s"]) > 0 and float(row["charts/completion_tokens"]) > 0
