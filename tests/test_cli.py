from __future__ import annotations

import json

import pytest
import torch

from criticgym.cli import main
from criticgym.distill.pairs import read_jsonl


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
    assert "Held-out evaluation (4 test prompts" in text and "task score" in text and "perplexity" in text
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"tiny"}

    run = tmp_path / "run"
    train = ["train", *env, "--model", "tiny", "--iterations", "2", "--num-envs", "4"]
    train += ["--eval-prompts", "4", "--out", str(run), "--no-progress", "--ppo.epochs", "1", "--ppo.lr", "1e-3"]
    train += ["sparse"]
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


TINY_TRAIN = ["train", "--model", "tiny", "--iterations", "1", "--num-envs", "2", "--no-progress"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (TINY_TRAIN + ["--env", "criticgym/Nope-v0"], "Unknown environment id 'criticgym/Nope-v0'"),
        (TINY_TRAIN + ["relc", "--critic", "nope"], "Unknown critic 'nope'"),
        (TINY_TRAIN + ["--num-envs", "3", "rlaif-pairwise", "--judge-model", "tiny"], "num_envs must be even"),
        (TINY_TRAIN + ["--reward", "sparse", "relc"], "The reward is given twice, as --reward sparse and as the"),
        (TINY_TRAIN + ["--reward", "relc-nope"], "Unknown critic 'nope'"),
        (["eval", "--reward", "nope"], "Unknown reward set-up 'nope'; use one of ['sparse', 'relc', 'relc-<critic>'"),
        (["bench", "ablation", "--reward", "relc-lexicon"], "write the rewards as --arms sparse,relc-lexicon,random"),
        (["bench", "frontier", "--reward=sparse"], "each arm a --reward FORM"),
        (["train", "--model", "nope-model", "--no-progress"], "Cannot load the model 'nope-model'"),
        (TINY_TRAIN + ["--device", "cuda"], "asks for CUDA"),
        (["bench", "ablation", "--arms", "sparse,foo"], "Unknown reward set-up 'foo'"),
        (["eval", "--checkpoint", "/does-not-exist"], "--checkpoint /does-not-exist: no run there"),
        (["train-rm", "--data", "missing.jsonl"], "--data missing.jsonl: no such file"),
    ],
)
def test_the_command_line_reports_its_own_errors_in_one_paragraph_with_exit_code_2(argv, message, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv[:1] + ["--out", str(tmp_path / "run")] + argv[1:]  # before a reward subcommand
    try:
        code = main(argv)
    except SystemExit as exit_:  # an option's own check fails while tyro parses: tyro reports it the same way
        code = exit_.code
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())  # tyro wraps its message in a box
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "backbone, message",
    [("tiny", "--train-layers 99: tiny has 2 layers; train at most 2"), ("minilm", "needs a causal-LM backbone")],
)
def test_train_rm_refuses_more_layers_than_the_backbone_has_before_its_folder(backbone, message, tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "p", "a": "x", "b": "y", "p": 0.7}\n')
    out = tmp_path / "rm"
    argv = ["train-rm", "--data", str(data), "--backbone", backbone, "--train-layers", "99", "--out", str(out)]
    assert main(argv) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()  # refused before the run folder (or any weights)


def test_debug_shows_the_traceback(capsys):
    assert main(["eval", "--checkpoint", "/does-not-exist", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "no run there" in err


def test_the_command_line_does_not_import_torch_to_print_its_help():
    import subprocess
    import sys

    code = "import sys, criticgym.cli as c; c.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "criticgym demo" in out and out.strip().endswith("False")


def test_held_out_tables_name_metrics_for_people_and_stay_plain_when_redirected(capsys):
    from criticgym.cli.train import _samples, held_out_table, metric_label

    assert metric_label("eval/percent_positive_vader") == "% positive (vader)"
    assert metric_label("eval/perplexity") == "perplexity under the reference"
    table = held_out_table({"before": {"eval/score": 0.1, "eval/percent_toxic_profanity-list": 2.0}})
    assert "task score" in table and "% toxic (profanity-list)" in table and "eval/" not in table
    text = _samples("after", {"samples": [{"reward": 0.5, "prompt": "The film", "completion": " was fine"}]})
    assert "The film was fine" in text and "\033[" not in text  # capsys is not a terminal


def test_demo_promises_the_one_time_set_up_only_when_it_is_to_come(monkeypatch, capsys):
    from criticgym.rollout import models
    from criticgym.train import driver as train_module

    result = {"evals": [{"prompts": 1, "eval/score": 0.0, "samples": []}] * 2, "out": "runs/demo"}
    monkeypatch.setattr(train_module, "train", lambda cfg: result)
    monkeypatch.setattr(models, "is_built", lambda name: True)
    assert main(["demo"]) == 0
    assert "first run" not in capsys.readouterr().out
    monkeypatch.setattr(models, "is_built", lambda name: name != "smollm2-135m")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "first run converts the model once" in out and "Held-out evaluation" in out


def test_demo_run_again_continues_its_own_folder_and_says_so(tmp_path, monkeypatch, capsys):
    from criticgym.train import driver as train_module

    seen = []
    result = {"evals": [{"prompts": 1, "eval/score": 0.0, "samples": []}] * 2, "out": "runs/demo"}
    monkeypatch.setattr(train_module, "train", lambda cfg: seen.append(cfg) or result)
    out = ["--out", str(tmp_path)]
    assert main(["demo", *out]) == 0 and seen[-1].resume_if_any and not seen[-1].overwrite
    assert "holds a demo run from before" not in capsys.readouterr().out
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert main(["demo", *out]) == 0
    assert "holds a demo run from before: this continues it" in " ".join(capsys.readouterr().out.split())
    assert main(["demo", *out, "--overwrite"]) == 0 and seen[-1].overwrite and not seen[-1].resume_if_any


def test_self_evolve_says_what_it_wrote(monkeypatch, capsys):
    from criticgym.selfevolve import driver as self_evolve

    monkeypatch.setattr(self_evolve, "self_evolve", lambda cfg: {"out": cfg.out})
    assert main(["self-evolve", "--out", "runs/x"]) == 0
    assert "Wrote runs/x/metrics.csv" in capsys.readouterr().out
