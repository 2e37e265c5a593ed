"""The ``criticgym`` command line.

criticgym demo                      # sentiment control with smollm2-135m and critic span rewards, on a CPU
criticgym train --env criticgym/SentimentControl-v0 --reward relc --agent ppo --iterations 30 --out runs/x
criticgym train --help              # every option
"""

from __future__ import annotations

import sys

DEMO = {
    "env": "criticgym/SentimentControl-v0",
    "reward": "relc",
    "critic": "lexicon",
    "agent": "ppo",
    "model": "smollm2-135m",
    "iterations": 40,
    "num_envs": 16,
    "lr": 5e-5,
    "kl_coef": 0.05,
    "epochs": 2,
    "minibatch_size": 8,
    "freeze_layers": 20,
    "eval_every": 10,
    "eval_prompts": 32,
    "checkpoint_every": 5,
    "out": "runs/demo",
}


def _report(result: dict) -> None:
    first, last = result["evals"][0], result["evals"][-1]
    keys = [k for k in first if k.startswith("eval/")]
    print("\nHeld-out evaluation (32 test prompts, top-p 0.9):")
    print(f"  {'metric':<36}{'before':>10}{'after':>10}")
    for key in keys:
        print(f"  {key:<36}{first[key]:>10.3f}{last[key]:>10.3f}")
    for title, result_ in (("before", first), ("after", last)):
        print(f"\nSamples {title} training:")
        for sample in result_["samples"][:4]:
            print(f"  [{sample['reward']:+.2f}] {sample['prompt']}\033[1m{sample['completion']}\033[0m")
    out = result["out"]
    print(f"\nWrote {out}/metrics.csv, {out}/samples.md, {out}/curves.png and {out}/checkpoint.pt")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``criticgym`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    from criticgym.agents.train import config_from_args, train

    if command == "train":
        cfg = config_from_args(rest)
    elif command == "demo":
        cfg = config_from_args(rest, **DEMO)
        print(
            f"criticgym demo: {cfg.agent.upper()} on {cfg.env} with reward={cfg.reward} (critic={cfg.critic}), "
            f"model {cfg.model}, {cfg.iterations} iterations of {cfg.num_envs} completions.\n"
            "The first run converts the model and trains the evaluation classifier once (about a minute).",
            flush=True,
        )
    else:
        print(f"Unknown command {command!r}.\n{__doc__}", file=sys.stderr)
        return 2
    result = train(cfg)
    _report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
