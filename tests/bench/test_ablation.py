from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from criticgym.bench import ablation as ab
from criticgym.errors import ConfigError
from criticgym.rewards import Relc, RlaifPairwise, Sparse


def test_arm_names_map_to_reward_set_ups():
    assert ab.arm_reward("sparse") == Sparse()
    assert ab.arm_reward("relc") == Relc()
    assert ab.arm_reward("relc-llm", critic_model="tiny") == Relc(critic="llm", critic_model="tiny")
    assert ab.arm_reward("random") == Relc(critic="random")
    assert ab.arm_reward("random-toxicity") == Relc(critic="random-toxicity")
    assert ab.arm_reward("rlaif-pairwise", judge_model="label:self") == RlaifPairwise(judge_model="label:self")
    with pytest.raises(ConfigError, match="Unknown reward set-up 'dense'.*relc-<critic>"):
        ab.arm_reward("dense")


def test_the_arms_set_the_reward_and_share_the_models():
    cfg, base = ab.parse_args(["--arms", "sparse,rlaif-direct", "--judge-model", "label:self"])
    assert cfg.judge_model == "label:self" and base.reward == ab._ablation_defaults().reward
    with pytest.raises(ConfigError, match="The arms set each run's reward"):
        ab.parse_args(["--arms", "sparse", "sparse"])


def test_interval_is_a_student_t_interval():
    mean, half = ab.mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)
    mean, half = ab.mean_ci(np.array([[1.0, 5.0], [3.0, 5.0]]))  # per column
    np.testing.assert_allclose(mean, [2.0, 5.0])
    assert half[1] == 0.0 and np.isnan(ab.mean_ci(np.array([4.0]))[1])


def test_smoothing_and_iterations_to_a_fraction_of_the_best_gain():
    np.testing.assert_allclose(ab.smooth(np.array([0.0, 3.0, 6.0, 9.0]), 3), [0.0, 1.5, 3.0, 6.0])
    curves = {
        "fast": np.array([0.0, 1.0, 1.0, 1.0, 1.0]),
        "slow": np.array([0.0, 0.0, 0.2, 0.5, 1.0]),
        "flat": np.zeros(5),
    }
    reached = ab.iterations_to(curves, fraction=0.9, window=1)
    assert reached == {"fast": 2, "slow": 5, "flat": None}
    assert ab.iterations_to({"a": np.zeros(3), "b": np.zeros(3)}, 0.9, 1) == {"a": None, "b": None}  # no gain at all


def fake_record(arm, seed, slope, n=6, critic_s=0.0):
    history = [
        {
            "iteration": i + 1,
            "charts/extrinsic": slope * i + 0.01 * seed,
            "charts/episodic_return": slope * i,
            "charts/kl": 0.1 * i,
            "perf/rollout_s": 1.0 + critic_s,
            "perf/env_s": critic_s,
            "perf/update_s": 2.0,
            "perf/policy_flops": 2e12,
            "perf/reward_flops": critic_s * 2 / 3 * 1e12,
        }
        for i in range(n)
    ]
    final = {"iteration": n, "eval/score": slope * n + 0.01 * seed, "eval/percent_positive_vader": 50.0 + seed}
    return {"arm": arm, "seed": seed, "history": history, "final": final}


def test_summary_table_csv_plot_and_markdown(tmp_path):
    records = [fake_record("sparse", s, 0.1) for s in range(3)] + [
        fake_record("relc-llm", s, 0.2, critic_s=3.0) for s in range(3)
    ]
    summary = ab.summarize(records, fraction=0.9)
    rows = {r["arm"]: r for r in summary["table"]}
    assert rows["relc-llm"]["heldout_score"] == pytest.approx(1.21) and rows["relc-llm"]["seeds"] == 3
    assert rows["sparse"]["iterations_to_fraction"] is None and rows["relc-llm"]["iterations_to_fraction"] is not None
    assert rows["relc-llm"]["reward_s_per_run"] == pytest.approx(18.0) and rows["sparse"]["reward_s_per_run"] == 0.0
    assert rows["relc-llm"]["policy_s_per_run"] == pytest.approx(18.0)  # rollout minus env time, plus update
    assert rows["sparse"]["percent_positive_vader"] == pytest.approx(51.0)
    assert rows["relc-llm"]["vs_first_arm"] == pytest.approx(0.6) and rows["relc-llm"]["vs_first_arm_ci"] < 1e-9
    assert rows["sparse"]["vs_first_arm"] == 0.0
    assert rows["relc-llm"]["reward_tflop_per_run"] == pytest.approx(12.0) and summary["equal_tflop"] == 12.0
    # at 12 TFLOP the critic arm is at its third iteration (4 TFLOP each), the sparse arm at its sixth (2 each)
    assert rows["relc-llm"]["score_at_equal_flops"] == pytest.approx(0.21)  # smoothed: mean of 0.01, 0.21, 0.41
    assert rows["sparse"]["score_at_equal_flops"] == pytest.approx(0.41)  # mean of 0.31, 0.41, 0.51

    ab.write_curves_csv(records, tmp_path / "curves.csv")
    with (tmp_path / "curves.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 36 and lines[0]["arm"] == "sparse" and float(lines[-1]["reward_s"]) == 3.0
    assert float(lines[-1]["reward_flops"]) == 2e12
    ab.plot(summary, tmp_path / "ablation.png", "test")
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    text = ab.markdown(summary, ab.parse_args([])[1], "criticgym bench ablation")
    assert "| relc-llm | 3 | +1.210 ± 0.025 | +0.600 ± 0.000 |" in text
    assert "training score at 12 TFLOP" in text and "| 18.0 | 18.0 | 12.00 | 12.00 |" in text
    # records without each prompt's score: the paired per-seed means (0.6 on every seed: nothing left to detect)
    (row,) = summary["resolution"]
    assert (row["arm"], row["vs"], row["seeds"], row["prompts"]) == ("relc-llm", "sparse", 3, 1)
    assert row["difference"] == pytest.approx(0.6) and row["detectable"] == pytest.approx(0.0, abs=1e-9)
    assert row["resolved"] and row["prompt_share"] is None
    assert "What the comparison with sparse resolves, by the held-out score" in text
    assert "| relc-llm | 3 | means | +0.600 ± 0.000 | yes | 0.000 | unknown |" in text


def test_the_ablation_plans_seeds_and_prompts_for_a_named_difference_from_each_prompts_score():
    from criticgym.utils.power import paired_resolution

    rng = np.random.default_rng(1)
    per_prompt = {"sparse": rng.normal(0.0, 0.5, (4, 8)), "relc-llm": rng.normal(0.1, 0.5, (4, 8))}
    records = [fake_record(arm, s, 0.1) for arm in per_prompt for s in range(4)]
    for record in records:
        record["final"]["scores"] = per_prompt[record["arm"]][record["seed"]].tolist()
    (row,) = ab.summarize(records, fraction=0.9, difference=0.2)["resolution"]
    expected = paired_resolution(per_prompt["relc-llm"], per_prompt["sparse"])
    assert row["prompts"] == 8 and row["difference"] == pytest.approx(expected.difference)
    assert row["detectable"] == pytest.approx(expected.detectable)
    assert row["prompt_share"] == pytest.approx(expected.prompt_share)
    assert (row["seeds_for_target"], row["prompts_for_target"]) == (expected.seeds_for(0.2), expected.prompts_for(0.2))
    with pytest.raises(ConfigError, match="--difference"):
        ab.parse_args(["--difference", "0"])


def test_ablation_runs_every_arm_and_seed_and_resumes_without_retraining(tmp_path, monkeypatch):
    out = tmp_path / "abl"
    argv = ["--arms", "sparse,relc-lexicon", "--seeds", "2", "--env", "criticgym/Words-v0", "--model", "tiny"]
    argv += [
        "--iterations",
        "2",
        "--num-envs",
        "4",
        "--eval-prompts",
        "4",
        "--ppo.freeze-layers",
        "0",
        "--out",
        str(out),
    ]
    summary = ab.ablation(argv, log=lambda *_: None)
    assert [r["arm"] for r in summary["table"]] == ["sparse", "relc-lexicon"]
    assert (out / "ablation.png").exists() and "Before training" in (out / "summary.md").read_text()
    assert json.loads((out / "initial.json").read_text())["iteration"] == 0
    table = json.loads((out / "table.json").read_text())
    assert all(row["seeds"] == 2 and np.isfinite(row["heldout_score"]) for row in table)
    # every run kept each held-out prompt's score: the resolution knows how its variance splits
    (resolved,) = json.loads((out / "resolution.json").read_text())
    assert (resolved["arm"], resolved["vs"], resolved["seeds"], resolved["prompts"]) == ("relc-lexicon", "sparse", 2, 4)
    assert (
        resolved["prompt_variance"] is not None
        and "What the comparison with sparse" in (out / "summary.md").read_text()
    )
    with (out / "curves.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 2 * 2
    assert not list(out.glob("runs/*/*/checkpoint.pt"))  # finished runs drop their weights
    assert not list(out.glob("runs/*/*/policy"))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ab, "train", no_training)
    again = ab.ablation(argv, log=lambda *_: None)
    assert again["table"] == summary["table"]


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    from dataclasses import asdict, replace

    base = ab._ablation_defaults()
    folder = tmp_path / "runs" / "sparse" / "seed-0"
    folder.mkdir(parents=True)
    cfg = replace(base, reward="sparse", seed=0, out=str(folder), resume=True, eval_every=0)
    record = {"arm": "sparse", "seed": 0, "history": [], "final": {}, "config": asdict(cfg)}
    (folder / "result.json").write_text(json.dumps(record))
    assert ab.run_arm(base, "sparse", 0, tmp_path) == record
    changed = r"other settings: ppo.lr \(0.0001 -> 1.0\); iterations \(12 -> 3\). .*--overwrite.*another --out"
    with pytest.raises(ConfigError, match=changed):
        ab.run_arm(replace(base, iterations=3, ppo=replace(base.ppo, lr=1.0)), "sparse", 0, tmp_path)
    old = {k: v for k, v in record["config"].items() if k != "workers"}  # written before the option existed
    assert ab.config_changes(old, asdict(cfg)) == []
