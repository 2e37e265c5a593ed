"""Fault injection on the built-in tiny model: each fault ends in one paragraph and exit code 2, and loses nothing.

After every fault the run folder is compared with what it held before (byte for byte, or its checkpoint and its
metrics), so that "refused" also means "untouched".
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from criticgym.cli import main
from criticgym.errors import CheckpointError, ConfigError

TRAIN = ["train", "--env", "criticgym/Words-v0", "--model", "tiny", "--num-envs", "4", "--eval-prompts", "2"]
TRAIN += ["--eval-every", "0", "--checkpoint-every", "1", "--no-progress", "--ppo.epochs", "1"]
TRAIN += ["--ppo.minibatch-size", "4", "--ppo.lr", "1e-3"]


def train_argv(out, *options, iterations=2, reward=("sparse",)):
    return [*TRAIN, "--iterations", str(iterations), "--out", str(out), *options, *reward]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (not the lock, whose holder changes) and its bytes."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".criticgym.lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def failure(argv, capsys) -> str:
    """Run the command line; it must fail with exit code 2 and one paragraph (no traceback). Returns the message."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # an option's own check, reported by tyro
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-iteration run (a checkpoint after each iteration)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_argv(out)) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, to break."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def rows(folder: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (folder / "metrics.csv").read_text().splitlines()[1:]]


# -- one guarded run folder ------------------------------------------------------------------------------------


def test_a_new_run_in_a_folder_that_holds_one_is_refused_and_loses_nothing(run, capsys):
    before = snapshot(run)
    message = failure(train_argv(run, iterations=1), capsys)
    assert f"--out {run} holds a run" in message and "--resume" in message and "--overwrite" in message
    assert snapshot(run) == before


def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(run, capsys):
    from tests.utils.test_runfolder import hold_in_subprocess

    holder = hold_in_subprocess(run)
    try:
        before = snapshot(run)
        message = failure(train_argv(run, "--resume", iterations=3), capsys)
        assert f"is in use by process {holder.pid}" in message and "criticgym train --out held" in message
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--engine", "vllm"], "make test-vllm"),
        (["--device", "cuda"], "CUDA"),
        (["--ppo.freeze-layers", "99"], "--ppo.freeze-layers 99: tiny has 2 layers; freeze at most 2."),
    ],
)
def test_a_run_refused_at_start_leaves_no_folder(tmp_path, capsys, option, message):
    if option[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    if option[-1] == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("vLLM is installed here")
    assert message in failure(train_argv(tmp_path / "new", *option), capsys)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["label", "--prompts", "0"], "--prompts must be at least 1, got 0"),
        (["label", "--batch-pairs", "-2"], "--batch-pairs must be at least 1, got -2"),
        (["label", "--temperature", "0"], "--temperature must be more than 0, got 0.0"),
        (["train-rm", "--data", "prefs.jsonl", "--lr", "-1e-3"], "--lr must be more than 0, got -0.001"),
        (["train-rm", "--data", "prefs.jsonl", "--train-layers", "-1"], "--train-layers must be at least 0, got -1"),
        (["train-rm", "--data", "prefs.jsonl", "--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1.0"),
        (["search", "--rain.searches", "0"], "--rain.searches must be at least 1, got 0"),
        (["search", "--rain.root-prior-mix", "1.5"], "--rain.root-prior-mix must be in [0, 1], got 1.5"),
        (["search", "--rain.candidates", "0"], "--rain.candidates must be at least 1, got 0"),
        (["search", "--rain.set-lengths", "1", "0"], "--rain.set-lengths must all be at least 1, got (1, 0)"),
        (["bench", "frontier", "--rain.c", "-1"], "--rain.c must be at least 0, got -1.0"),
    ],
)
def test_every_commands_numeric_options_are_checked_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / ("prefs.jsonl" if argv[0] == "label" else "new")
    assert message in failure([*argv, "--out", str(out)], capsys)
    assert not out.exists()


# -- checked settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, message",
    [
        (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
        (["--ppo.minibatch-size", "0"], "--ppo.minibatch-size must be at least 1, got 0"),
        (["--eval-prompts", "0"], "--eval-prompts must be at least 1, got 0"),
        (["--ppo.top-p", "1.5"], "--ppo.top-p must be in (0, 1], got 1.5"),
        (["--reinforce.lr", "0"], "--reinforce.lr must be more than 0, got 0.0"),
    ],
)
def test_numeric_options_are_checked_before_anything_loads_naming_the_option(tmp_path, capsys, option, message):
    assert message in failure(train_argv(tmp_path / "new", *option), capsys)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--prompts", "0"], "criticgym search: --prompts must be at least 1, got 0."),
        (["self-evolve", "--epochs", "0"], "criticgym self-evolve: --epochs must be positive, got 0."),
        (["bench", "frontier", "--n", "0"], "criticgym bench: --n must be at least 1, got 0."),
        (["bench", "ablation", "--ppo.epochs", "0"], "criticgym bench: --ppo.epochs must be at least 1, got 0."),
        (["bench", "toxic-start", "--target", "0"], "criticgym bench: --target is a percent in (0, 100], got 0.0."),
    ],
)
def test_every_command_checks_its_options_in_its_own_paragraph(capsys, argv, message):
    assert failure(argv, capsys).startswith(message)  # not tyro's box


@pytest.mark.parametrize(
    "argv, message",
    [
        (["relc", "--iterations", "2"], "The reward subcommand comes last, after the run's options"),
        (["--iterations", "2", "sparse", "--critic", "lexicon"], "--critic is an option of the relc reward"),
    ],
)
def test_options_on_the_wrong_side_of_the_reward_say_where_they_go(capsys, argv, message):
    text = failure(["train", *argv], capsys)
    assert message in text and "criticgym train" in text


def test_a_run_of_other_settings_is_not_resumed(run, capsys):
    before = snapshot(run)
    message = failure(train_argv(run, "--resume", "--seed", "1", iterations=3), capsys)
    assert "was made with other settings: seed (0 -> 1)" in message and "--overwrite" in message
    assert snapshot(run) == before


# -- unreadable checkpoints ---------------------------------------------------------------------------------------

BROKEN = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "random": lambda data: bytes(random.Random(0).randrange(256) for _ in range(4096)),
    "random-pickle": lambda data: b"\x80\x02" + bytes(random.Random(1).randrange(256) for _ in range(4096)),
    "foreign": None,  # a torch file of another program
}


@pytest.mark.parametrize("how", sorted(BROKEN))
@pytest.mark.parametrize("command", ["--resume", "--resume-if-any", "eval"])
def test_a_broken_checkpoint_is_named_with_how_to_start_over(run, capsys, how, command):
    checkpoint = run / "checkpoint.pt"
    if BROKEN[how] is None:
        torch.save({"weights": torch.zeros(2)}, checkpoint)
    else:
        checkpoint.write_bytes(BROKEN[how](checkpoint.read_bytes()))
    before = snapshot(run)
    if command == "eval":
        message = failure(["eval", "--checkpoint", str(run), "--prompts", "2"], capsys)
        assert "Train the run again" in message
    else:
        message = failure(train_argv(run, command, iterations=3), capsys)
        assert "--overwrite" in message
    assert str(checkpoint) in message
    assert ("not a checkpoint of this command" if how == "foreign" else "cannot be read") in message
    assert snapshot(run) == before


# -- a full disk --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("[enforce fail] unexpected pos 512")]
)
def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary_file(run, capsys, monkeypatch, error):
    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise error

    before = snapshot(run)
    monkeypatch.setattr(torch, "save", full)
    message = failure(train_argv(run, "--resume", iterations=3), capsys)
    assert "No space left on the device to write" in message and "its previous version is intact" in message
    assert not list(run.glob("*.tmp"))
    monkeypatch.undo()
    assert (run / "checkpoint.pt").read_bytes() == before["checkpoint.pt"]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["agent"]["iteration"] == 2
    assert rows(run)[:2] == [1, 2]


# -- Ctrl-C and kill -9 -------------------------------------------------------------------------------------------


def test_ctrl_c_says_where_the_run_stopped_and_resume_continues(tmp_path, capsys, monkeypatch):
    from criticgym.train import driver

    real = driver.iterate

    def interrupted_in_2(agent):
        if agent.iteration == 1:
            raise KeyboardInterrupt
        return real(agent)

    monkeypatch.setattr(driver, "iterate", interrupted_in_2)
    message = failure(train_argv(tmp_path / "run", iterations=3), capsys)
    assert "interrupted at iteration 2 of 3" in message and "checkpoint.pt holds iteration 1" in message
    assert "the same command with --resume continues" in message
    monkeypatch.setattr(driver, "iterate", real)
    assert main(train_argv(tmp_path / "run", "--resume", iterations=2)) == 0
    assert rows(tmp_path / "run") == [1, 2]


KILLABLE = """
import sys
from criticgym.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start(argv) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", KILLABLE, *argv], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )


def wait_for(condition, process, timeout=300):
    waited = 0.0
    while not condition():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
        waited += 0.05
        assert waited < timeout, "the run never got there"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.parametrize("after_rows", [0, 2])
def test_a_signalled_run_keeps_every_checkpointed_iteration_and_resumes(tmp_path, sig, after_rows):
    """SIGINT or SIGKILL before the first iteration ends, or after the second: nothing checkpointed is lost."""
    out = tmp_path / "run"
    process = start(train_argv(out, iterations=50))
    metrics = out / "metrics.csv"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) > after_rows, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert process.returncode == 2 and "interrupted" in err and "Traceback" not in err
        assert not list(out.glob("*.tmp"))
    saved = 0
    if (out / "checkpoint.pt").exists():  # never half-written: it loads, and its rows are in metrics.csv
        saved = torch.load(out / "checkpoint.pt", weights_only=False)["agent"]["iteration"]
        assert rows(out)[:saved] == list(range(1, saved + 1))
    resume = "--resume" if saved else "--overwrite"
    assert main(train_argv(out, resume, iterations=saved + 1)) == 0  # the lock of a killed run is taken over
    assert rows(out) == list(range(1, saved + 2))
    assert not list(out.glob("*.tmp"))  # what a kill -9 left half-written is gone


# -- stale benchmark results -------------------------------------------------------------------------------------


def test_a_frontier_refuses_results_of_other_settings_and_replaces_them_on_request(tmp_path, monkeypatch):
    import tyro

    from criticgym.bench import frontier as fr

    argv = ["--arms", "untrained,best-of-n,sparse", "--seeds", "1", "--prompts", "4", "--n", "2", "--judges", "vader"]
    argv += ["--model", "tiny", "--ppo.freeze-layers", "0", "--iterations", "1", "--out", str(tmp_path)]
    old = tyro.cli(fr.FrontierConfig, args=argv)
    for arm in ("untrained", "best-of-n", "sparse"):  # finished records, as an earlier frontier left them
        folder = tmp_path / "runs" / arm / "seed-0"
        folder.mkdir(parents=True)
        (folder / "settings.json").write_text(json.dumps(fr.arm_settings(old, arm)))
        (folder / "frontier.json").write_text(json.dumps({"arm": arm, "seed": 0}))
    before = snapshot(tmp_path)
    for changed, difference in (
        (["--n", "3"], "The best-of-n arm of seed 0"),
        (["--iterations", "3"], "train.iterations (1 -> 3)"),
        (["--ppo.lr", "1e-3", "--prompts", "3"], "prompts (4 -> 3)"),
    ):
        with pytest.raises(ConfigError, match=r"made with other settings: .*--overwrite") as refused:
            fr.frontier(argv + changed, log=lambda *_: None)
        assert difference in str(refused.value)
        assert snapshot(tmp_path) == before  # nothing re-run, nothing rewritten
    # the untrained arm did not change with --n: only the stale best-of-n record is replaced on request
    new = tyro.cli(fr.FrontierConfig, args=argv + ["--n", "3", "--overwrite"])
    fr.check_arm(new, "untrained", 0, tmp_path / "runs" / "untrained" / "seed-0", lambda *_: None)
    fr.check_arm(new, "best-of-n", 0, tmp_path / "runs" / "best-of-n" / "seed-0", lambda *_: None)
    assert (tmp_path / "runs" / "untrained" / "seed-0" / "frontier.json").exists()
    assert not (tmp_path / "runs" / "best-of-n" / "seed-0").exists()


def test_an_ablation_refuses_a_stale_initial_evaluation_and_partial_run(tmp_path):
    from dataclasses import asdict, replace

    from criticgym.bench import ablation as ab
    from criticgym.rewards import Sparse

    argv = ["--arms", "sparse", "--seeds", "1", "--model", "tiny", "--iterations", "1", "--out", str(tmp_path)]
    _, base = ab.parse_args(argv)
    settings = asdict(replace(base, reward=Sparse(), seed=0))
    (tmp_path / "initial.json").write_text(json.dumps({"eval/score": 0.5, "config": settings}))
    assert ab.initial_evaluation(base, tmp_path) == {"eval/score": 0.5}
    with pytest.raises(ConfigError, match=r"initial evaluation .* other settings: model \('tiny' -> 'smollm2"):
        ab.initial_evaluation(replace(base, model="smollm2-135m"), tmp_path)
    partial = tmp_path / "runs" / "sparse" / "seed-0"
    partial.mkdir(parents=True)
    cfg = replace(base, reward=Sparse(), seed=0, out=str(partial), resume_if_any=True, eval_every=0)
    (partial / "config.json").write_text(json.dumps(asdict(cfg)))
    other = replace(cfg, num_envs=8)
    with pytest.raises(ConfigError, match=r"The sparse run of seed 0 .* num_envs \(16 -> 8\)"):
        ab.stale(partial, other, False, "The sparse run of seed 0")
    assert ab.stale(partial, other, True, "") and not partial.exists()  # replaced on request


# -- SELF, label, train-rm ----------------------------------------------------------------------------------------


def test_self_evolve_resumes_only_its_own_settings_and_names_a_broken_checkpoint(tmp_path):
    from dataclasses import asdict

    from criticgym.selfevolve.driver import SelfConfig, resume_state

    cfg = SelfConfig(model="tiny", out=str(tmp_path), rounds=1)
    (tmp_path / "config.json").write_text(json.dumps(asdict(cfg)))
    torch.save({"model": {}, "history": [], "stage": 0}, tmp_path / "checkpoint.pt")
    assert resume_state(SelfConfig(model="tiny", out=str(tmp_path), rounds=3))["stage"] == 0  # more rounds: fine
    with pytest.raises(ConfigError, match=r"other settings: lr \(5e-05 -> 0.001\).*--overwrite"):
        resume_state(SelfConfig(model="tiny", out=str(tmp_path), lr=1e-3))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read"):
        resume_state(cfg)


def test_label_and_train_rm_do_not_replace_their_output_unless_asked(tmp_path, capsys):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "x"}\n')
    argv = ["label", "--policy", "tiny", "--judge", "lexicon", "--prompts", "2", "--out", str(prefs)]
    assert "prefs.jsonl exists; replace it with --overwrite" in failure(argv, capsys)
    assert prefs.read_text() == '{"prompt": "x"}\n'
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "reward_model.json").write_text("{}")
    argv = ["train-rm", "--data", str(prefs), "--out", str(rm)]
    assert f"--out {rm} holds a run (reward_model.json)" in failure(argv, capsys)
    assert (rm / "reward_model.json").read_text() == "{}"


def test_eval_and_eval_judge_do_not_replace_their_output_unless_asked(tmp_path, capsys, monkeypatch):
    import criticgym.cli.train as cli

    results = tmp_path / "eval.json"
    results.write_text("{}")
    monkeypatch.setattr(cli, "evaluate", lambda cfg: pytest.fail("evaluated before the output was checked"))
    argv = ["eval", "--model", "tiny", "--env", "criticgym/Words-v0", "--prompts", "2", "--out", str(results)]
    assert "eval.json exists; replace it with --overwrite" in failure(argv, capsys)
    assert results.read_text() == "{}"
    monkeypatch.undo()
    assert main([*argv, "--overwrite"]) == 0 and set(json.loads(results.read_text())) == {"tiny"}

    judged = tmp_path / "judges.json"
    argv = ["eval-judge", "--judge", "lexicon", "--pairs", "4", "--out", str(judged)]
    for existing in (judged, judged.with_suffix(".md")):  # the table beside the JSON is guarded too
        existing.write_text("kept")
        assert f"{existing.name} exists; replace it with --overwrite" in failure(argv, capsys)
        assert existing.read_text() == "kept"
        existing.unlink()
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(judged.read_text())[0]["pairs"] == 4 and "Judge quality" in judged.with_suffix(".md").read_text()
    assert "give a .json name" in failure([*argv[:-1], str(tmp_path / "judges.md")], capsys)


@pytest.mark.parametrize(
    "argv, option",
    [
        (train_argv("OUT", "--ppo.freeze-layers", "99"), "--ppo.freeze-layers"),
        (["self-evolve", "--model", "MODEL", "--freeze-layers", "99", "--out", "OUT"], "--freeze-layers"),
        (["bench", "toxic-start", "--model", "MODEL", "--freeze-layers", "99", "--out", "OUT"], "--freeze-layers"),
        (["bench", "ablation", "--model", "MODEL", "--ppo.freeze-layers", "99", "--out", "OUT"], "--ppo.freeze-layers"),
        (
            ["bench", "frontier", "--arms", "untrained,sparse", "--judges", "vader", "--model", "MODEL"]
            + ["--ppo.freeze-layers", "99", "--out", "OUT"],
            "--ppo.freeze-layers",
        ),
    ],
)
def test_freezing_more_layers_than_a_hub_model_has_is_refused_before_the_folder_or_weights(
    tmp_path, capsys, monkeypatch, argv, option
):
    from huggingface_hub import constants

    from tests.rollout.test_models import hub_cache_with

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id in the local hub cache, as on a machine without the hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_cache_with(tmp_path / "hub", "someone/two-layers", {"model_type": "llama", "num_hidden_layers": 2})
    out = tmp_path / "new"  # the cache holds no weights: a load would fail with another message
    argv = [str(out) if a == "OUT" else "someone/two-layers" if a in ("MODEL", "tiny") else a for a in argv]
    message = failure(argv, capsys)
    assert f"{option} 99: someone/two-layers has 2 layers; freeze at most 2." in message
    assert not out.exists()


def test_freezing_more_layers_than_the_model_has_is_an_error(tiny):
    from criticgym.utils.training import freeze_lower_layers

    with pytest.raises(ConfigError, match=r"freeze_layers is 3, but the model has 2 layers.*--freeze-layers"):
        freeze_lower_layers(tiny[0], 3)
    assert all(p.requires_grad for p in tiny[0].parameters())  # checked before anything froze


def test_an_unreachable_ray_cluster_is_one_paragraph_naming_how_to_start_one(monkeypatch):
    from criticgym.distributed import actors

    class NoCluster:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(actors, "ray_module", NoCluster)
    with pytest.raises(ConfigError, match=r"--ray-address auto: no Ray cluster answers there .*ray start --head"):
        actors.init_ray("auto")
