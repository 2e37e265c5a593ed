from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from criticgym.errors import ConfigError, FolderInUseError
from criticgym.utils.runfolder import LOCK, differences, output_file, refuse_other_settings, run_folder

HOLD = """
import sys, time
from criticgym.utils.runfolder import run_folder
with run_folder(sys.argv[1], resume=True, command="criticgym train --out held") as folder:
    (folder / "metrics.csv").exists() or (folder / "metrics.csv").write_text("iteration\\n1\\n")
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_subprocess(folder):
    """A process that holds ``folder`` until it is killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    run = tmp_path / "run"
    with run_folder(run) as folder:
        (folder / "metrics.csv").write_text("iteration\n1\n2\n")
    with pytest.raises(ConfigError, match=r"--out .*run holds a run \(metrics.csv\).*--resume.*--overwrite"):
        with run_folder(run):
            pytest.fail("entered a folder that holds a run")
    assert (run / "metrics.csv").read_text() == "iteration\n1\n2\n"  # nothing lost
    with run_folder(run, resume=True) as folder:
        assert (folder / "metrics.csv").exists()  # continued as it is
    with run_folder(run, overwrite=True) as folder:
        assert not (folder / "metrics.csv").exists()  # replaced on request


def test_overwrite_deletes_only_what_a_criticgym_run_wrote(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="no criticgym run wrote"):
        with run_folder(tmp_path, overwrite=True):
            pass
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_failed_start_leaves_no_folder_and_a_file_is_not_a_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path / "new"):
            raise RuntimeError("the model failed to load")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        with run_folder(tmp_path / "file"):
            pass


def test_a_second_process_is_refused_at_once_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    holder = hold_in_subprocess(tmp_path / "run")
    try:
        with pytest.raises(FolderInUseError, match=rf"in use by process {holder.pid} on .*criticgym train --out held"):
            with run_folder(tmp_path / "run", resume=True):
                pytest.fail("two processes hold one folder")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run" / "metrics.csv").read_text() == "iteration\n1\n"  # the refusal touched nothing
    assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == holder.pid  # a stale lock stays behind
    with run_folder(tmp_path / "run", resume=True):  # and is taken over
        assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == os.getpid()


def test_one_process_holds_a_folder_once(tmp_path):
    with run_folder(tmp_path / "run"):
        with pytest.raises(FolderInUseError, match=f"process {os.getpid()}"):
            with run_folder(tmp_path / "run", resume=True):
                pass


def test_an_output_file_is_replaced_only_on_request(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"prefs.jsonl exists; replace it with --overwrite"):
        with output_file(path):
            pass
    with output_file(path, overwrite=True) as held:
        assert held == path
    assert path.read_text() == "{}\n" and sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl"]


def test_differences_name_each_changed_setting_and_missing_keys_count_as_their_defaults():
    old = {"lr": 0.1, "ppo": {"epochs": 2}}
    new = {"lr": 0.1, "ppo": {"epochs": 4}, "n": 16, "out": "b"}
    assert differences(old, new, defaults={"n": 16}, ignored=("out",)) == ["ppo.epochs (2 -> 4)"]
    assert differences(old, new, ignored=("out",)) == ["ppo.epochs (2 -> 4)", "n (None -> 16)"]
    refuse_other_settings("x", [], "fine")
    with pytest.raises(ConfigError, match=r"x was made with other settings: a \(1 -> 2\); b. Fix it."):
        refuse_other_settings("x", ["a (1 -> 2)", "b"], "Fix it.")
    assert time  # (imported for the holder script's sleep)


def test_a_tuple_setting_equals_the_list_its_json_file_gives_back():
    stored = json.loads(json.dumps({"rain": {"set_lengths": (1, 2, 4, 10)}}))
    assert differences(stored, {"rain": {"set_lengths": (1, 2, 4, 10)}}) == []
    assert differences(stored, {"rain": {"set_lengths": (1, 2)}}) == ["rain.set_lengths ([1, 2, 4, 10] -> [1, 2])"]


def test_an_interrupted_series_of_runs_says_how_many_are_kept():
    from criticgym.errors import Interrupted
    from criticgym.utils.runfolder import each_kept

    def stopped():
        raise KeyboardInterrupt

    assert each_kept([lambda: 1, lambda: 2], "out") == [1, 2]
    with pytest.raises(Interrupted, match="interrupted after 1 of 3 runs; the finished ones are kept in out"):
        each_kept([lambda: 1, stopped, lambda: 3], "out")

    def said_where():
        raise Interrupted("interrupted at iteration 2 of 3")

    with pytest.raises(Interrupted, match="^interrupted at iteration 2 of 3$"):  # a training run's own message
        each_kept([said_where], "out")
