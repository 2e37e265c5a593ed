"""The ``criticgym`` command line.

Every subcommand's options come from a typed dataclass or function (tyro); ``criticgym <command> --help`` lists
them with their doc lines.

criticgym demo                      # sentiment control with smollm2-135m and critic span rewards, on a CPU
criticgym train --env criticgym/SentimentControl-v0 --agent ppo --iterations 30 --out runs/x --reward relc-lexicon
criticgym train --agent rloo --reinforce.k 4 --reinforce.lr 2e-5        # nested agent options
criticgym eval --model smollm2-135m --env criticgym/SentimentControl-v0 --reward relc-lexicon  # a model's table
criticgym eval --checkpoint runs/x                                       # a trained run against its base model
criticgym bench ablation --arms sparse,relc-lexicon,random --seeds 3     # reward ablation: one run per --reward
criticgym search --method vanilla,best-of-n,rain --evaluator vader --prompts 16  # inference-time search (RAIN)
criticgym label --judge smollm2-135m --prompts 256 --out prefs.jsonl     # AI preference labels (RLAIF)
criticgym train-rm --data prefs.jsonl --out rm                           # reward model on the soft labels
criticgym eval-judge --judge smollm2-135m --pairs 200                    # judge agreement and position bias
criticgym self-evolve --env criticgym/Arithmetic-v0 --rounds 2 --out runs/self  # SELF: learn from feedback in words
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

import tyro

from criticgym.cli.rlaif import eval_judge_command, label, train_rm
from criticgym.cli.train import demo_command, eval_command, train_command
from criticgym.errors import CriticGymError
from criticgym.utils.files import disk_full
from criticgym.utils.options import parsed


def bench_command(argv: list[str]) -> int:
    """``criticgym bench ablation`` and ``criticgym bench toxic-start`` (:func:`criticgym.bench.command`)."""
    from criticgym.bench import command

    return command(argv)


def search_command(argv: list[str]) -> int:
    """``criticgym search``: vanilla, best-of-N and RAIN on a task's held-out prompts (see search/compare.py)."""
    from criticgym.search.compare import SearchConfig, run_search

    run_search(parsed(SearchConfig, argv, "criticgym search"))
    return 0


def self_evolve_command(argv: list[str]) -> int:
    """``criticgym self-evolve``: meta-skill learning, then self-evolution rounds (see selfevolve/driver.py)."""
    from criticgym.selfevolve.driver import SelfConfig, self_evolve

    result = self_evolve(parsed(SelfConfig, argv, "criticgym self-evolve"))
    out = result["out"]
    print(f"Wrote {out}/metrics.csv, {out}/curves.png, {out}/checkpoint.pt and the samples of each stage in {out}/")
    return 0


# One entry per subcommand: train, demo and eval live in cli/train.py, label, train-rm and eval-judge in cli/rlaif.py,
# the others in their own rooms (bench, search, selfevolve)
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "demo": demo_command,
    "eval": eval_command,
    "bench": bench_command,
    "search": search_command,
    "label": lambda argv: tyro.cli(label, args=argv, prog="criticgym label"),
    "train-rm": lambda argv: tyro.cli(train_rm, args=argv, prog="criticgym train-rm"),
    "eval-judge": eval_judge_command,
    "self-evolve": self_evolve_command,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``criticgym`` command.

    The package's own errors (a wrong option, a missing file or package) end the command with their message and exit
    code 2, without a traceback; ``--debug`` (anywhere on the line) or ``CRITICGYM_DEBUG=1`` shows it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CRITICGYM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"Unknown command {command!r}; use one of {', '.join(COMMANDS)}.\n\n{__doc__}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except (CriticGymError, KeyboardInterrupt, OSError) as error:
        if isinstance(error, OSError) and not disk_full(error):
            raise
        if debug:
            traceback.print_exc()
        print(f"criticgym {command}: {failure_message(error)}", file=sys.stderr)
        if not debug:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return 2


def failure_message(error: BaseException) -> str:
    """One paragraph for a failure the command line reports itself (Ctrl-C, a full disk, the package's errors)."""
    if isinstance(error, KeyboardInterrupt):
        return str(error) or "interrupted (Ctrl-C)."
    if isinstance(error, OSError):
        return f"no space left on the device ({error}). Free some space and run the same command again."
    return str(error)
