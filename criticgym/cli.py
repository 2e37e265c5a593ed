"""The ``criticgym`` command line.

criticgym demo                      # sentiment control with smollm2-135m and critic span rewards, on a CPU
criticgym train --env criticgym/SentimentControl-v0 --reward relc --agent ppo --iterations 30 --out runs/x
criticgym train --help              # every option
criticgym bench ablation --arms sparse,relc-lexicon,random --seeds 3   # reward ablation
criticgym label --judge smollm2-135m --prompts 256 --out prefs.jsonl      # AI preference labels (RLAIF)
criticgym train-rm --data prefs.jsonl --out rm                           # reward model on the soft labels
criticgym eval-judge --judge smollm2-135m --pairs 200                    # judge agreement and position bias
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEMO = {
    "env": "criticgym/SentimentControl-v0",
    "reward": "relc",
    "critic": "lexicon",
    "agent": "ppo",
    "model": "smollm2-135m",
    "iterations": 40,
    "num_envs": 16,
    "lr": 5e-5,
    "kl_coef": 0.1,
    "kl_target": 6.0,  # RELC's target; the controller starts once the KL reaches it,
    "kl_horizon": 16,  # then moves kl_coef by up to 20% per iteration of 16 completions
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
    print(f"\nHeld-out evaluation ({first.get('prompts', 'held-out')} test prompts, top-p 0.9):")
    print(f"  {'metric':<36}{'before':>10}{'after':>10}")
    for key in keys:
        print(f"  {key:<36}{first[key]:>10.3f}{last[key]:>10.3f}")
    for title, result_ in (("before", first), ("after", last)):
        print(f"\nSamples {title} training:")
        for sample in result_["samples"][:4]:
            print(f"  [{sample['reward']:+.2f}] {sample['prompt']}\033[1m{sample['completion']}\033[0m")
    out = result["out"]
    print(f"\nWrote {out}/metrics.csv, {out}/samples.md, {out}/curves.png and {out}/checkpoint.pt")


def label(argv: list[str]) -> int:
    """``criticgym label``: sample pairs and write a soft-label preference dataset."""
    from criticgym.agents.distill import label_pairs, write_jsonl
    from criticgym.critics.judge import make_judge
    from criticgym.envs import get_task
    from criticgym.registration import ENV_IDS

    parser = argparse.ArgumentParser(prog="criticgym label", description=label.__doc__)
    parser.add_argument("--env", default="criticgym/SentimentControl-v0")
    parser.add_argument("--policy", default="smollm2-135m", help="the model that writes both completions")
    parser.add_argument("--judge", default="smollm2-135m", help="a judge model, or a scorer name (lexicon, ...)")
    parser.add_argument("--prompts", type=int, default=256, help="pairs to label (one prompt each)")
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="prefs.jsonl")
    args = parser.parse_args(argv)
    task = get_task(ENV_IDS.get(args.env, args.env)).name
    records = label_pairs(
        args.env,
        args.policy,
        make_judge(args.judge, task),
        args.prompts,
        args.batch_pairs,
        args.temperature,
        args.seed,
        args.split,
        args.device,
    )
    n = write_jsonl(args.out, records)
    labels = [r["label"] for r in records]
    print(f"Wrote {n} labelled pairs to {args.out} (mean |label - 0.5| = {sum(abs(x - 0.5) for x in labels) / n:.3f}).")
    return 0


def train_rm(argv: list[str]) -> int:
    """``criticgym train-rm``: train a reward model on a preference dataset."""
    from criticgym.agents.distill import read_jsonl, train_reward_model

    parser = argparse.ArgumentParser(prog="criticgym train-rm", description=train_rm.__doc__)
    parser.add_argument("--data", required=True, help="a JSONL file written by criticgym label")
    parser.add_argument("--backbone", default="minilm", help="minilm, or a causal LM (smollm2-135m, tiny, a folder)")
    parser.add_argument("--train-layers", type=int, default=0, help="causal LM: fine-tune this many top layers")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="rm")
    args = parser.parse_args(argv)
    model, metrics = train_reward_model(
        read_jsonl(args.data),
        args.backbone,
        args.train_layers,
        args.epochs,
        args.lr,
        args.batch_size,
        args.val_fraction,
        args.seed,
        args.device,
    )
    out = model.save(args.out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"Saved the reward model to {out}; use it with --reward sparse --scorer {out}")
    return 0


def eval_judge(argv: list[str]) -> int:
    """``criticgym eval-judge``: agreement with known labels, position bias and consistency of a judge."""
    from criticgym.critics.judge import evaluate_judge, make_judge

    parser = argparse.ArgumentParser(prog="criticgym eval-judge", description=eval_judge.__doc__)
    parser.add_argument("--judge", action="append", help="a judge model or scorer name; repeat to compare")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON (and .md beside it)")
    args = parser.parse_args(argv)
    results = [
        evaluate_judge(make_judge(name, "sentiment"), args.pairs, args.seed) for name in args.judge or ["smollm2-135m"]
    ]
    table = judge_table(results)
    print(table)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        command = "criticgym eval-judge " + shlex.join(argv)
        path.with_suffix(".md").write_text(f"# Judge quality\n\nCommand: `{command}`\n\n{table}\n")
    return 0


def judge_table(results: list[dict]) -> str:
    """Judge metrics as a markdown table."""
    lines = [
        "| judge | pairs | agreement (95% CI) | one order only | position bias | consistency | s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        low, high = r["agreement_ci95"]
        lines.append(
            f"| {r['judge']} | {r['pairs']} | {r['agreement']:.3f} ({low:.3f}-{high:.3f}) "
            f"| {r['agreement_one_order']:.3f} | {r['position_bias_rate']:.3f} (first {r['prefers_first']:.2f}, "
            f"second {r['prefers_second']:.2f}) | {r['consistency']:.3f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


COMMANDS = {"label": label, "train-rm": train_rm, "eval-judge": eval_judge}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``criticgym`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    from criticgym.agents.train import config_from_args, train

    if command == "bench":
        if rest[:1] != ["ablation"]:
            print("Usage: criticgym bench ablation [options]  (make bench runs the performance suite)", file=sys.stderr)
            return 2
        from criticgym.ablation import ablation

        ablation(rest[1:])
        return 0
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
