"""The frontier's FLOPs accounting, on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from criticgym.bench import costs as fc
from criticgym.bench import frontier as fr
from criticgym.errors import ConfigError

# training 1.2 TFLOP once (policy 1.0 + reward 0.2), then 1 GFLOP per completion; search: nothing to train, 30 GFLOP
# per completion (best-of-30 style); the untrained policy: 1 GFLOP per completion
COSTS = {
    "relc": fc.ArmCost(train_flops=1.2e12, inference_flops=1e9),
    "best-of-n": fc.ArmCost(inference_flops=3e10),
    "untrained": fc.ArmCost(inference_flops=1e9),
}
SCORES = {"relc": 0.40, "best-of-n": 0.50, "untrained": 0.06}


def test_training_flops_add_policy_and_reward_over_iterations_and_inference_divides_by_completions():
    history = [
        {"perf/policy_flops": 4e11, "perf/reward_flops": 1e11},
        {"perf/policy_flops": 6e11, "perf/reward_flops": 1e11},
    ]
    assert fc.training_flops(history) == 1.2e12
    self_stages = [
        {"stage": -1, "eval/accuracy": 0.5},
        {"stage": 0, "perf/train_flops": 3e11},
        {"perf/train_flops": 2e11},
    ]
    assert fc.training_flops(self_stages) == 5e11  # SELF's stages; its evaluation row counts nothing
    assert fc.inference_flops({"policy": 2.4e10, "reward": 6e9}, completions=32) == pytest.approx(3e10 / 32)
    with pytest.raises(ConfigError, match="at least one completion"):
        fc.inference_flops({"policy": 1.0}, completions=0)


def test_the_cost_to_serve_n_is_training_plus_n_completions_and_amortizes():
    relc = COSTS["relc"]
    assert relc.to_serve(100) == 1.2e12 + 100 * 1e9 == 1.3e12
    assert relc.per_completion(100) == pytest.approx(1.3e10)
    assert relc.per_completion(10**6) == pytest.approx(1e9 + 1.2e6)  # training all but vanishes
    curve = fc.serving_curve(COSTS, sizes=(100, 10_000))
    np.testing.assert_allclose(curve["relc"], [1.3e12, 1.12e13])
    np.testing.assert_allclose(curve["best-of-n"], [3e12, 3e14])
    with pytest.raises(ConfigError, match="cannot be negative"):
        fc.ArmCost(train_flops=-1.0)


def test_crossover_is_where_training_starts_to_pay():
    # 1.2e12 + n 1e9 = n 3e10  ->  n = 1.2e12 / 2.9e10
    assert fc.crossover(COSTS["relc"], COSTS["best-of-n"]) == pytest.approx(1.2e12 / 2.9e10)
    assert fc.crossover(COSTS["relc"], COSTS["untrained"]) is None  # the same inference: training never pays back
    assert fc.crossover(COSTS["best-of-n"], COSTS["untrained"]) is None  # best-of-n is never the cheaper one


def test_winners_at_each_deployment_size():
    found = fc.winners(COSTS, SCORES, sizes=(10, 100, 10**6))
    # at 10 completions search is both cheaper (3e11 < 1.21e12) and better than RELC: RELC is off the frontier
    assert found[10] == ["untrained", "best-of-n"]
    # from the crossover (about 41) on, RELC is cheaper than search but scores less: both are on the frontier
    assert found[100] == ["untrained", "relc", "best-of-n"]
    assert found[10**6] == ["untrained", "relc", "best-of-n"]
    better = {**SCORES, "relc": 0.6}  # a trained arm that also scores more takes search off the frontier once cheaper
    assert fc.winners(COSTS, better, sizes=(100,))[100] == ["untrained", "relc"]
    with pytest.raises(ConfigError, match="only one"):
        fc.winners(COSTS, {"relc": 0.4}, sizes=(100,))


def test_the_frontier_runs_every_family_on_tiny_judges_them_and_resumes(tmp_path, monkeypatch):
    from dataclasses import replace

    from criticgym.envs.tasks import TASKS

    monkeypatch.setitem(TASKS, "sentiment", replace(TASKS["sentiment"], scorer="vader"))  # no classifier to train
    argv = ["--arms", "untrained,sparse,distilled,self,best-of-n", "--seeds", "1", "--seeds-of", "untrained=2"]
    argv += ["--prompts", "4", "--prompts-of", "best-of-n=2", "--n", "2"]
    argv += ["--judges", "label:tiny,vader", "--judge-model", "label:tiny", "--pairs", "4", "--self-rounds", "1"]
    argv += ["--model", "tiny", "--iterations", "1", "--num-envs", "4", "--eval-prompts", "2", "--max-new-tokens", "6"]
    argv += ["--ppo.minibatch-size", "4", "--ppo.epochs", "1", "--ppo.freeze-layers", "0", "--out", str(tmp_path)]
    fill = fr._fill_perplexity

    def measured_by_each_unit(cfg, out, records):
        assert all("perplexity" in record for record in records)  # the report has none left to measure
        fill(cfg, out, records)

    monkeypatch.setattr(fr, "_fill_perplexity", measured_by_each_unit)
    summary = fr.frontier(argv, log=lambda *_: None)
    monkeypatch.setattr(fr, "_fill_perplexity", fill)
    rows = {row["arm"]: row for row in summary["table"]}
    assert list(rows) == ["untrained", "sparse", "distilled", "self", "best-of-n"]
    assert {arm: row["seeds"] for arm, row in rows.items()} == {arm: 2 if arm == "untrained" else 1 for arm in rows}
    # training arms spent training FLOPs, the untrained policy and the search none; search pays per completion
    assert rows["untrained"]["train_tflop"] == rows["best-of-n"]["train_tflop"] == 0.0
    assert all(rows[arm]["train_tflop"] > 0 for arm in ("sparse", "distilled", "self"))
    assert rows["distilled"]["train_tflop"] > rows["sparse"]["train_tflop"]  # the same run plus labelling
    assert rows["best-of-n"]["inference_gflop"] > rows["untrained"]["inference_gflop"] > 0  # two samples, and VADER
    # the table says what each arm trained or searched on (here the task's scorer is VADER)
    assert {arm: row["learns from"] for arm, row in rows.items()} == {
        "untrained": "nothing",
        "sparse": "vader",
        "distilled": "a reward model of label:tiny's preferences",
        "self": "the sentiment annotator, then its own judgement",
        "best-of-n": "vader (search)",
    }
    record = json.loads((tmp_path / "runs" / "untrained" / "seed-0" / "frontier.json").read_text())
    assert len(record["completions"]) == 4 and set(record["scores"]) == {"label:tiny", "vader"}
    # every arm is judged on the same held-out prompts
    prompts = [c["prompt"] for c in record["completions"]]
    for arm in rows:  # best-of-N serves the first 2 (--prompts-of)
        other = json.loads((tmp_path / "runs" / arm / "seed-0" / "frontier.json").read_text())
        assert [c["prompt"] for c in other["completions"]] == prompts[: 2 if arm == "best-of-n" else 4]
        assert [len(v) for v in other["per_prompt"].values()] == [2 if arm == "best-of-n" else 4] * 2
    # each arm is paired with sparse on the prompts both served, judge by judge
    resolved = {row["arm"]: row for row in summary["resolution"]}
    assert resolved["best-of-n"]["prompts"] == 2 and resolved["untrained"]["prompts"] == 4
    assert (tmp_path / "frontier.png").exists() and "On the frontier" in (tmp_path / "summary.md").read_text()
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 6  # every record, to recompute the table
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))  # a finished unit drops its weights, SELF's too
    # every arm's completions have a perplexity under the initial policy
    assert all(np.isfinite(row["perplexity"]) and row["perplexity"] > 1 for row in rows.values())
    # a finished frontier resumes without retraining; a record from before perplexity existed gets it
    monkeypatch.setattr(fr, "_policy_after", lambda *a, **k: pytest.fail("retrained a finished arm"))
    older = tmp_path / "runs" / "sparse" / "seed-0" / "frontier.json"
    older.write_text(json.dumps({k: v for k, v in json.loads(older.read_text()).items() if k != "perplexity"}))
    again = fr.frontier(argv, log=lambda *_: None)["table"]
    assert json.dumps(again) == json.dumps(summary["table"])  # nan-aware
    assert json.loads(older.read_text())["perplexity"] == pytest.approx(rows["sparse"]["perplexity"])


def test_perplexity_under_the_reference_is_that_of_each_token_after_its_prefix():
    import torch

    from criticgym.rollout import load_policy

    model, tokenizer = load_policy("tiny")
    prompts = [tokenizer.encode("The film was"), tokenizer.encode("I think that the")]
    completions = [" dull and slow", " cast is wonderful, really"]
    nll, tokens = 0.0, 0
    for prompt, text in zip(prompts, completions, strict=True):  # one unpadded sequence at a time, by hand
        completion = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        nll -= float(logprobs.gather(1, torch.tensor(completion)[:, None]).sum())
        tokens += len(completion)
    expected = float(np.exp(nll / tokens))  # every token weighs the same, whichever completion it is in
    assert fr.reference_perplexity(model, tokenizer, prompts, completions) == pytest.approx(expected, rel=1e-4)


def test_seeds_of_gives_an_arm_its_own_seed_count_and_names_the_form_when_wrong():
    cfg = fr.FrontierConfig(arms="sparse,self,rain", seeds=8, seeds_of="self=5, rain=3")
    assert cfg.arm_seeds == {"sparse": 8, "self": 5, "rain": 3}
    for wrong in ("best-of-n=4", "self", "self=0", "self=many"):
        with pytest.raises(ConfigError, match="write arm=count"):
            _ = fr.FrontierConfig(arms="sparse,self", seeds_of=wrong).arm_seeds
    cfg = fr.FrontierConfig(arms="sparse,rain", prompts=256, prompts_of="rain=64")
    assert cfg.arm_prompts == {"sparse": 256, "rain": 64}
    assert fr.arm_settings(cfg, "rain")["prompts"] == 64 and fr.arm_settings(cfg, "sparse")["prompts"] == 256
    with pytest.raises(ConfigError, match="--prompts-of 'rain=0'"):
        _ = fr.FrontierConfig(arms="sparse,rain", prompts_of="rain=0").arm_prompts


def test_each_reward_arm_names_the_scorer_critic_or_judge_it_trains_on():
    cfg = fr.FrontierConfig(judge_model="label:self", critic_model="smollm2-135m")
    assert fr.learns_from(cfg, "sparse") == "sentiment-classifier"
    assert fr.learns_from(cfg, "relc-lexicon") == "sentiment-classifier + lexicon spans"
    assert fr.learns_from(cfg, "relc-label") == "sentiment-classifier + label (smollm2-135m) spans"
    assert fr.learns_from(cfg, "random-lexicon") == "sentiment-classifier + random-lexicon spans"
    assert fr.learns_from(cfg, "rlaif-direct") == fr.learns_from(cfg, "rlaif-pairwise") == "label:self"
    assert fr.learns_from(cfg, "rain") == "vader (search)"


def test_the_summary_pairs_seeds_on_the_independent_judge_and_finds_the_frontier(tmp_path):
    def record(arm, seed, independent, train, inference):
        scores = {"label:gemma3-270m": independent, "vader": 0.5}
        return {
            "arm": arm,
            "family": fr.family(arm),
            "learns_from": "vader (search)" if arm == "best-of-n" else "the classifier",
            "seed": seed,
            "train_flops": train,
            "inference_flops": inference,
            "scores": scores,
        }

    records = [
        record("sparse", 0, 0.10, 1e12, 1e9),
        record("sparse", 1, 0.20, 1e12, 1e9),
        record("relc-lexicon", 0, 0.30, 1.2e12, 1e9),
        record("relc-lexicon", 1, 0.30, 1.0e12, 1e9),
        record("best-of-n", 0, 0.50, 0.0, 3e10),
        record("best-of-n", 1, 0.40, 0.0, 3e10),
    ]
    summary = fc.summarize(records, ["label:gemma3-270m", "vader"])
    rows = {row["arm"]: row for row in summary["table"]}
    assert rows["sparse"]["label:gemma3-270m"] == pytest.approx(0.15) and "vs sparse" not in rows["sparse"]
    assert rows["relc-lexicon"]["vs sparse"] == pytest.approx(0.15)  # (0.2 + 0.1) / 2, paired by seed
    assert rows["relc-lexicon"]["vs best-of-n"] == pytest.approx(-0.15)  # (-0.2 - 0.1) / 2
    assert summary["baselines"] == ["sparse", "best-of-n"]  # no untrained arm ran: no column for it
    assert rows["relc-lexicon"]["train_tflop"] == pytest.approx(1.1) and rows["best-of-n"]["inference_gflop"] == 30
    assert [rows[a]["family"] for a in rows] == ["sparse score", "critic spans (RELC)", "inference-time search"]
    # at 100 completions search (3e12) costs more than RELC (1.2e12) but scores more: both on the frontier; sparse
    # is as cheap as RELC's mean minus 0.1 TFLOP and scores less: on it too (cheapest)
    assert summary["winners"][100] == ["sparse", "relc-lexicon", "best-of-n"]
    text = fc.markdown(summary, "criticgym bench frontier")
    assert "| relc-lexicon | critic spans (RELC) | the classifier | 2 |" in text
    assert "| arm | vs sparse | vs best-of-n |" in text and "| relc-lexicon | +0.150 ± " in text
    assert "| best-of-n | inference-time search | vader (search) | 2 |" in text
    assert "- N = 1e+02: sparse, relc-lexicon, best-of-n" in text
    # training pays from 1e12 / (3e10 - 1e9) = 34.5 completions for sparse, 1.1e12 / 2.9e10 = 37.9 for RELC
    assert "| trained arm | best-of-n |" in text and "| sparse | 34 |" in text and "| relc-lexicon | 38 |" in text
    fc.plot(summary, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 0


def test_the_summary_says_what_each_difference_with_sparse_resolves_from_every_prompts_scores():
    from criticgym.utils.power import paired_resolution

    rng = np.random.default_rng(0)
    per_prompt = {arm: rng.normal(shift, 0.3, size=(4, 16)) for arm, shift in (("sparse", 0.0), ("relc-lexicon", 0.2))}
    per_prompt["untrained"] = rng.normal(0.0, 0.3, size=(4, 16))
    records = [
        {
            "arm": arm,
            "family": fr.family(arm),
            "seed": seed,
            "train_flops": 1e12,
            "inference_flops": 1e9,
            "scores": {"label:gemma3-270m": float(scores[seed].mean())},
            "per_prompt": {"label:gemma3-270m": scores[seed].tolist()},
        }
        for arm, scores in per_prompt.items()
        for seed in range(4)
    ]
    summary = fc.summarize(records, ["label:gemma3-270m"], difference=0.05)
    rows = {row["arm"]: row for row in summary["resolution"]}
    assert list(rows) == ["relc-lexicon", "untrained"] and {row["vs"] for row in rows.values()} == {"sparse"}
    expected = paired_resolution(per_prompt["relc-lexicon"], per_prompt["sparse"])
    row = rows["relc-lexicon"]
    assert (row["seeds"], row["prompts"]) == (4, 16)
    assert row["difference"] == pytest.approx(expected.difference) and row["ci"] == pytest.approx(expected.half_width)
    assert row["detectable"] == pytest.approx(expected.detectable)
    assert row["prompt_variance"] == pytest.approx(expected.prompt_variance)
    assert row["seeds_for_target"] == expected.seeds_for(0.05)
    assert row["prompts_for_target"] == expected.prompts_for(0.05)
    assert row["resolved"] == (abs(expected.difference) > expected.half_width)
    text = fc.markdown(summary, "criticgym bench frontier")
    assert "What the comparison with sparse resolves" in text and "| seeds for 0.05 | prompts for 0.05 |" in text
    assert f"| relc-lexicon | 4 | 16 | {expected.difference:+.3f} ± " in text
    # records without each prompt's score pair the per-seed means: the total variance, no split
    for record in records:
        del record["per_prompt"]
    row = {r["arm"]: r for r in fc.summarize(records, ["label:gemma3-270m"])["resolution"]}["relc-lexicon"]
    assert (
        row["prompts"] == 1 and row["prompt_share"] is None and row["difference"] == pytest.approx(expected.difference)
    )


def test_first_seed_runs_a_later_range_of_seeds_in_its_own_folder(tmp_path):
    argv = ["--arms", "untrained", "--seeds", "2", "--first-seed", "3", "--prompts", "2", "--judges", "vader"]
    argv += ["--model", "tiny", "--max-new-tokens", "4", "--out", str(tmp_path)]
    summary = fr.frontier(argv, log=lambda *_: None)
    assert sorted(p.name for p in (tmp_path / "runs" / "untrained").iterdir()) == ["seed-3", "seed-4"]
    assert summary["table"][0]["seeds"] == 2
    assert [json.loads(line)["seed"] for line in (tmp_path / "records.jsonl").read_text().splitlines()] == [3, 4]
    with pytest.raises(ConfigError, match="--first-seed"):
        fr.FrontierConfig(first_seed=-1)
