"""Critic throughput: critiques per second for the offline critics and the LLM critic, at batch 1 and 32.

Completions are real review snippets (Rotten Tomatoes test split), so the critics see realistic text. The LLM
critic runs the packaged sentiment template (about 330 prompt tokens) and writes up to 96 tokens per answer,
greedily, through the rollout engine.

    python benchmarks/bench_critics.py --out benchmarks/results/critics_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from criticgym.critics import LexiconCritic, LLMCritic, LocalBackend, ToxicityCritic
from criticgym.data import load_rotten_tomatoes


def critiques_per_second(critic, completions, repeats: int) -> float:
    prompts = [""] * len(completions)
    critic.critique(prompts, completions)  # warm-up (loads lexicons and models)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        critic.critique(prompts, completions)
        best = min(best, time.perf_counter() - start)
    return len(completions) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--llm-models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    texts = [e.text for e in load_rotten_tomatoes("test")]

    critics = {"LexiconCritic": LexiconCritic(), "ToxicityCritic": ToxicityCritic()}
    for name in args.llm_models:
        critics[f"LLMCritic({name})"] = LLMCritic(LocalBackend(name, batch_size=32), template="sentiment")
    rows = []
    for name, critic in critics.items():
        for batch in args.batch_sizes:
            repeats = 1 if name.startswith("LLMCritic(smollm2") else args.repeats
            rate = critiques_per_second(critic, texts[:batch], repeats)
            rows.append({"critic": name, "batch": batch, "critiques_per_s": rate})
            print(f"{name:>24} batch {batch:>3}: {rate:10.1f} critiques/s", flush=True)

    if args.out:
        lines = [
            "# Critic throughput",
            "",
            f"Command: `python benchmarks/bench_critics.py --out {args.out}`  ",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU.",
            "",
            "Completions: Rotten Tomatoes test snippets (about 110 characters). LLM critics: packaged sentiment "
            "template, greedy, up to 96 answer tokens; `tiny` is random weights (speed only, its answers are noise).",
            "",
            "| critic | batch | critiques/s |",
            "| --- | ---: | ---: |",
            *[f"| {r['critic']} | {r['batch']} | {r['critiques_per_s']:.1f} |" for r in rows],
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
