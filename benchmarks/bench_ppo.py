"""PPO throughput: rollout and update tokens per second, as fractions of the machine's compute limit.

One PPO iteration on SentimentControl (VADER reward, cheap) with no frozen layers, after a warm-up iteration.
Rollout tokens are generated tokens; update tokens are prompt + completion tokens re-scored per epoch (forward and
backward). Limits come from a matmul peak measured in the same run: ``peak / (2 * params)`` tokens/s for
generation, ``peak / (6 * params)`` for training (forward + backward).

    python benchmarks/bench_ppo.py --out benchmarks/results/ppo_cpu.md
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from bench_rollout import measure_matmul_gflops, write_report

import criticgym
from criticgym.algos.ppo import PPO, PPOConfig
from criticgym.rollout import load_policy


def run(model_name: str, num_envs: int, minibatch: int, device: torch.device) -> dict:
    model, tokenizer = load_policy(model_name, device=device)
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=num_envs, model=model_name, scorer="vader", autoreset_mode="disabled"
    )
    agent = PPO(model, tokenizer, envs, PPOConfig(epochs=1, minibatch_size=minibatch, lr=1e-6))
    agent.iterate()  # warm-up
    metrics = [agent.iterate() for _ in range(2)]
    best = {k: max(m[k] for m in metrics) for k in ("perf/rollout_tokens_per_s", "perf/update_tokens_per_s")}
    return {"model": model_name, "params": sum(p.numel() for p in model.parameters()), "batch": num_envs, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    gflops = measure_matmul_gflops(device)
    print(f"matmul peak measured now: {gflops:.0f} GFLOP/s", flush=True)
    rows = []
    for name in args.models:
        row = run(name, args.num_envs, args.minibatch_size, device)
        row["rollout_limit"] = gflops * 1e9 / (2 * row["params"])
        row["train_limit"] = gflops * 1e9 / (6 * row["params"])
        rows.append(row)
        print(
            f"{name:>13}: rollout {row['perf/rollout_tokens_per_s']:7.0f} tok/s "
            f"({row['perf/rollout_tokens_per_s'] / row['rollout_limit']:.0%} of limit), update "
            f"{row['perf/update_tokens_per_s']:7.0f} tok/s ({row['perf/update_tokens_per_s'] / row['train_limit']:.0%}"
            " of the training limit)",
            flush=True,
        )
    if args.out:
        lines = [
            "# PPO throughput",
            "",
            f"Command: `python benchmarks/bench_ppo.py --out {args.out}`  ",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, torch "
            f"{torch.__version__}; matmul peak measured in the same run: {gflops:.0f} GFLOP/s.",
            "",
            f"One PPO iteration of {args.num_envs} SentimentControl completions (20 tokens), minibatches of "
            f"{args.minibatch_size}, no frozen layers; best of 2 after a warm-up.",
            "",
            "| model | rollout tok/s | % of generation limit | update tok/s | % of training limit |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            rollout, update = r["perf/rollout_tokens_per_s"], r["perf/update_tokens_per_s"]
            lines.append(
                f"| {r['model']} | {rollout:.0f} | {rollout / r['rollout_limit']:.0%} "
                f"| {update:.0f} | {update / r['train_limit']:.0%} |"
            )
        write_report(args.out, lines, {"matmul_gflops": gflops, "rows": rows})


if __name__ == "__main__":
    main()
