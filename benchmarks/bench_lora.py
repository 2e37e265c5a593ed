"""Peak memory of PPO on smollm2-135m: a LoRA adapter against full fine-tuning, each in a fresh process.

Both runs load the same model, keep a KL penalty (so full fine-tuning holds a frozen copy as its reference, while
LoRA's reference is the same weights with the adapter off), and take the same two PPO iterations. The figure is the
process's peak resident memory (``ru_maxrss``), so everything counts: weights, reference, gradients, Adam's state,
activations.

    python benchmarks/bench_lora.py --out benchmarks/results/lora_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path


def one(mode: str, model_name: str, lora_r: int) -> dict:
    import torch

    import criticgym
    from criticgym.algos.lora import add_lora
    from criticgym.algos.ppo import PPO, PPOConfig
    from criticgym.rollout import load_policy

    torch.manual_seed(0)
    model, tokenizer = load_policy(model_name)
    if mode == "lora":
        model = add_lora(model, r=lora_r, alpha=2 * lora_r)
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=8, autoreset_mode="disabled", model=tokenizer, scorer="vader"
    )
    agent = PPO(model, tokenizer, envs, PPOConfig(lr=1e-4, kl_coef=0.05, minibatch_size=8, epochs=1))
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(2):
        agent.iterate()
    return {
        "mode": mode,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_after_set_up_mib": loaded,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/lora_cpu.md")
    parser.add_argument("--one", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.model, args.lora_r)))
        return
    rows = {}
    for mode in ("full", "lora"):  # a fresh process each: peaks do not mix
        command = [sys.executable, __file__, "--one", mode, "--model", args.model, "--lora-r", str(args.lora_r)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows[mode] = json.loads(output.strip().splitlines()[-1])
    full, lora = rows["full"], rows["lora"]
    lines = [
        f"# LoRA against full fine-tuning: peak memory of PPO on {args.model}",
        "",
        f"Command: `python benchmarks/bench_lora.py --model {args.model} --lora-r {args.lora_r} --out {args.out}`",
        "",
        f"Machine: {platform.machine()}, CPU, float32. Two PPO iterations of 8 completions (SentimentControl, VADER "
        "reward), KL penalty on (full: a frozen copy as the reference; LoRA: the base with the adapter off).",
        "",
        "| run | trainable parameters | peak after set-up (MiB) | peak after 2 iterations (MiB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in (("full fine-tuning", full), (f"LoRA r={args.lora_r}, all linear layers", lora)):
        lines.append(
            f"| {name} | {row['trainable_parameters']:,} | {row['peak_after_set_up_mib']:.0f} | {row['peak_mib']:.0f} |"
        )
    lines += [
        "",
        f"LoRA's peak is {lora['peak_mib'] / full['peak_mib']:.2f}x full fine-tuning's "
        f"({full['peak_mib'] - lora['peak_mib']:.0f} MiB less).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
