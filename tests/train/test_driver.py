from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from criticgym.algos.ppo import PPOConfig
from criticgym.algos.reinforce import ReinforceConfig
from criticgym.cli import main
from criticgym.errors import ConfigError
from criticgym.rewards import Relc, RlaifPairwise
from criticgym.train import TrainConfig, config_from_args, train
from criticgym.train.evaluate import Evaluator, distinct_n


def tiny_config(out, **overrides):
    options = dict(
        env="criticgym/Words-v0",
        reward="sparse",
        agent="ppo",
        model="tiny",
        iterations=4,
        num_envs=8,
        ppo=PPOConfig(lr=1e-3, epochs=1, minibatch_size=4),
        reinforce=ReinforceConfig(lr=1e-3),
        eval_every=2,
        eval_prompts=4,
        checkpoint_every=2,
        out=str(out),
        progress=False,
    )
    options.update(overrides)
    return TrainConfig(**options)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_train_writes_metrics_evaluations_checkpoint_and_plot(tmp_path):
    result = train(tiny_config(tmp_path), log=lambda *a: None)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert {"charts/episodic_return", "charts/kl", "losses/approx_kl", "losses/clipfrac"} <= rows[0].keys()
    assert [e["iteration"] for e in result["evals"]] == [0, 2, 4]
    assert {"eval/reward", "eval/perplexity", "eval/distinct_1", "eval/distinct_2"} <= result["evals"][0].keys()
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "Iteration 4" in (tmp_path / "samples.md").read_text()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["agent"]["iteration"] == 4 and len(state["history"]) == 4
    # the evaluations are the held-out evaluator's numbers: of the initial model at 0, of the saved weights at 4
    # (the evaluator samples with a fixed seed, so a fresh one on the same weights gives the same values)
    from criticgym.rollout import load_policy
    from criticgym.train import build_evaluator

    cfg = tiny_config(tmp_path)
    reference, tokenizer = load_policy(cfg.model)
    evaluator = build_evaluator(cfg, tokenizer, reference)
    initial = evaluator(reference)
    policy, _ = load_policy(cfg.model)
    policy.load_state_dict(state["agent"]["model"])
    final = evaluator(policy, 4)
    for expected, got in ((initial, result["evals"][0]), (final, result["evals"][-1])):
        for key in ("eval/reward", "eval/score", "eval/perplexity", "eval/distinct_1", "eval/distinct_2", "scores"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    assert result["evals"][-1]["eval/score"] == pytest.approx(float(np.mean(final["scores"])))
    assert [float(r["charts/kl"]) for r in rows] == pytest.approx([h["charts/kl"] for h in result["history"]])


# the sparse reward, and the ablation's control arm: RELC with random spans (a critic whose draws must not depend
# on what it critiqued before the kill)
RESUMED_ARMS = {
    "sparse": {},
    "random-spans": dict(env="criticgym/SentimentControl-v0", reward=Relc(critic="random", scorer="vader")),
}


@pytest.mark.parametrize("arm", sorted(RESUMED_ARMS))
def test_a_killed_run_resumes_without_losing_completed_iterations(tmp_path, monkeypatch, arm):
    def config(out, **overrides):
        return tiny_config(out, eval_every=1, **RESUMED_ARMS[arm], **overrides)

    straight = train(config(tmp_path / "straight"), log=lambda *a: None)

    # Kill the run during iteration 3's evaluation: its CSV row is written, its checkpoint (every 2) is not.
    real_call = Evaluator.__call__

    def dies_at_3(self, model, iteration):
        if iteration == 3:
            raise KeyboardInterrupt
        return real_call(self, model, iteration)

    monkeypatch.setattr(Evaluator, "__call__", dies_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "killed"), log=lambda *a: None)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "killed" / "metrics.csv")] == [1, 2, 3]
    monkeypatch.setattr(Evaluator, "__call__", real_call)

    resumed = train(config(tmp_path / "killed", resume=True), log=lambda *a: None)
    assert [h["charts/episodic_return"] for h in resumed["history"]] == [
        h["charts/episodic_return"] for h in straight["history"]
    ]
    assert [e["eval/reward"] for e in resumed["evals"]] == [e["eval/reward"] for e in straight["evals"]]
    if arm == "random-spans":  # the test means something only if random spans were paid
        assert any(h["charts/episodic_return"] != h["charts/extrinsic"] for h in straight["history"])
    rows = read_csv(tmp_path / "killed" / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]  # no duplicated or lost rows


def test_config_from_command_line_options():
    cfg = config_from_args(["--agent", "rloo", "--num-envs", "8", "--reinforce.lr", "0.001", "--no-progress"])
    assert (cfg.agent, cfg.num_envs, cfg.reinforce.lr, cfg.progress) == ("rloo", 8, 0.001, False)
    assert cfg.agent_config.baseline == "rloo" and cfg.agent_config.lr == 0.001
    # every field of every agent is an option, nested under the agent's name
    cfg = config_from_args(["--ppo.top-p", "0.9", "--ppo.kl-target", "3", "--ppo.no-adaptive-kl"])
    assert (cfg.ppo.top_p, cfg.ppo.kl_target, cfg.ppo.adaptive_kl) == (0.9, 3.0, False)
    assert config_from_args(["--agent", "reinforce", "--reinforce.k", "2"]).agent_config.k == 2
    assert config_from_args([], default=TrainConfig(iterations=7)).iterations == 7
    with pytest.raises(SystemExit):  # tyro names the choices
        config_from_args(["--agent", "dqn"])
    with pytest.raises(ConfigError, match="agent"):
        TrainConfig(agent="dqn")


def test_the_agent_is_a_name_or_its_config_and_options_of_another_agent_are_refused():
    from criticgym.algos.grpo import GRPOConfig

    cfg = TrainConfig(agent=GRPOConfig(k=2, beta=0.0))  # the config alone says which algorithm
    assert (cfg.agent, cfg.grpo, cfg.agent_config) == ("grpo", GRPOConfig(k=2, beta=0.0), GRPOConfig(k=2, beta=0.0))
    assert TrainConfig.from_dict(cfg.to_dict()).agent_config == GRPOConfig(k=2, beta=0.0)  # config.json as before
    assert TrainConfig(agent=ReinforceConfig(baseline="rloo", k=2)).agent == "rloo"  # the name whose preset it meets
    assert TrainConfig(agent=ReinforceConfig()).agent == "reinforce"
    assert TrainConfig(agent=PPOConfig(lr=0.1)).ppo.lr == 0.1
    with pytest.raises(ConfigError, match="give an algorithm's name"):
        TrainConfig(agent=Relc())
    # options typed for an agent the run does not use: an error naming the agent that would read them
    with pytest.raises(ConfigError, match=r"--grpo.k is an option of grpo, but the agent is ppo .*add --agent grpo"):
        config_from_args(["--grpo.k", "8"])
    with pytest.raises(ConfigError, match=r"--ppo.lr is an option of ppo, but the agent is rloo"):
        config_from_args(["--agent", "rloo", "--ppo.lr=0.1"])
    assert config_from_args(["--agent", "grpo", "--grpo.k", "8"]).agent_config.k == 8
    assert TrainConfig(agent="rloo", reinforce=ReinforceConfig(k=2)).agent_config.baseline == "rloo"  # rloo's own


def test_every_command_documents_every_option(capsys):
    for command in ("train", "demo", "eval", "label", "train-rm", "eval-judge", "search", "self-evolve"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    text = capsys.readouterr().out
    options = ("--ppo.kl-target", "--reinforce.k", "--checkpoint", "--batch-pairs", "--val-fraction", "--pairs")
    for option in options + ("--rain.searches", "--filter", "--meta-data"):
        assert option in text
    assert "Target KL per completion" in text  # the doc line of the field


def test_cli_train_runs(tmp_path, capsys):
    args = ["train", "--env", "criticgym/Words-v0", "--model", "tiny", "--iterations", "2"]
    args += ["--num-envs", "4", "--eval-prompts", "4", "--out", str(tmp_path), "--no-progress", "--ppo.epochs", "1"]
    args += ["sparse"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # the table prints the run's own first and last evaluations, to three decimals
    evals = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["evals"]
    row = next(line for line in printed.splitlines() if "mean reward (the training reward)" in line)
    assert [float(x) for x in row.split()[-2:]] == pytest.approx(
        [e["eval/reward"] for e in (evals[0], evals[-1])], abs=5e-4
    )
    assert main(["frobnicate"]) == 2


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n([""], 2) == 0.0


def test_metrics_go_to_tensorboard_when_it_is_installed(tmp_path, monkeypatch):
    from criticgym.train import driver as train_module

    class Board:
        def __init__(self):
            self.scalars, self.closed = [], False

        def add_scalar(self, key, value, step):
            self.scalars.append((key, step))

        def close(self):
            self.closed = True

    board = Board()
    monkeypatch.setattr(train_module, "tensorboard", lambda out: board)
    train(tiny_config(tmp_path, iterations=2, eval_every=0), log=lambda *a: None)
    assert ("charts/episodic_return", 1) in board.scalars and ("charts/kl", 2) in board.scalars
    assert board.closed


def test_train_on_pairwise_ai_preferences(tmp_path):
    """RLOO on rlaif-pairwise: every completion is paid its centered preference over its sibling."""
    cfg = tiny_config(tmp_path, reward=RlaifPairwise(judge_model="tiny"), agent="rloo", iterations=1, num_envs=4)
    result = train(cfg, log=lambda *a: None)
    row = result["history"][0]
    assert abs(row["charts/episodic_return"]) < 1e-6  # centered in each pair, so the batch mean is 0
    assert row["perf/env_s"] > 0 and {"eval/score", "eval/reward"} <= result["evals"][-1].keys()


def test_resume_checks_what_it_resumes(tmp_path):
    from criticgym.train import resume_state

    run = tmp_path / "run"
    train(tiny_config(run, iterations=2, eval_every=0), log=lambda *a: None)
    # the same run continues, also for longer and with other bookkeeping
    assert resume_state(tiny_config(run, iterations=6, eval_every=1, resume=True))["agent"]["iteration"] == 2
    with pytest.raises(
        ConfigError, match=r"other settings: reward \('sparse' -> 'random-lexicon'\).*another --out.*--overwrite"
    ):
        train(tiny_config(run, reward=Relc(critic="random-lexicon"), resume=True), log=lambda *a: None)
    with pytest.raises(ConfigError, match=r"agent \('ppo' -> 'rloo'\)"):
        train(tiny_config(run, agent="rloo", resume=True), log=lambda *a: None)
    with pytest.raises(ConfigError, match=r"ppo.lr \(0.001 -> 0.5\)"):
        resume_state(tiny_config(run, ppo=PPOConfig(lr=0.5, epochs=1, minibatch_size=4), resume=True))
    empty = tmp_path / "empty"
    with pytest.raises(ConfigError, match="no run to resume.*--resume-if-any"):
        train(tiny_config(empty, resume=True), log=lambda *a: None)
    assert not (empty / "config.json").exists()  # it stopped before writing anything
    assert resume_state(tiny_config(empty, resume_if_any=True)) is None  # a new run starts there
    assert resume_state(tiny_config(run, resume_if_any=True))["agent"]["iteration"] == 2


def test_the_vllm_engine_without_vllm_says_how_to_get_it(tmp_path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here (make test-vllm runs the engine itself)")
    with pytest.raises(ConfigError, match="make test-vllm"):
        train(tiny_config(tmp_path, model="tiny-vllm", engine="vllm"), log=lambda *a: None)


def test_the_vllm_engine_plays_in_this_process_not_on_workers(tmp_path):
    with pytest.raises(ConfigError, match="drop --workers"):
        tiny_config(tmp_path, engine="vllm", workers=2)


def test_paths_in_a_run_settings_are_stored_absolute(tmp_path, monkeypatch):
    from criticgym.rewards import Sparse

    (tmp_path / "rm").mkdir()
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(reward=Sparse(scorer="./rm"), model="models/mine")
    assert (cfg.reward.scorer, cfg.model) == (str(tmp_path / "rm"), str(tmp_path / "models" / "mine"))
    assert TrainConfig(reward=Sparse(scorer="vader"), model="tiny").reward.scorer == "vader"  # names stay names
    monkeypatch.chdir("/")  # read back elsewhere (criticgym eval --checkpoint from another folder)
    from dataclasses import asdict

    assert TrainConfig.from_dict(asdict(cfg)).reward.scorer == str(tmp_path / "rm")
