"""RAIN speed: our search (KV cache of the committed prefix, rewound in place) against the official strategy
(re-run the whole prefix for every forward pass), on the same prompts, settings and seeds, and against vanilla
sampling of the same prompts.

Both RAIN runs make the same search (same completions, searches, evaluations and additions: checked below), so the
time ratio is the cost of re-running prefixes alone. The evaluator is VADER (microseconds), so model time
dominates; the MiniLM embeddings of the similarity update are the same work in both runs.

    python benchmarks/bench_rain.py --out benchmarks/results/rain_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from criticgym.rollout import RolloutEngine, load_policy
from criticgym.search.compare import SearchConfig, held_out_prompts
from criticgym.search.rain import RAIN, RAINConfig
from criticgym.search.values import make_value


def run(rain: RAIN, ids, prompts, budget, eos):
    start = time.perf_counter()
    results = [
        rain.search(i, p, seed=index, budget=budget, eos_ids=eos)
        for index, (i, p) in enumerate(zip(ids, prompts, strict=True))
    ]
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--env", default="criticgym/SentimentControl-v0")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--min-new-searches", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    model, tokenizer = load_policy(args.model, device=args.device)
    ids, prompts, envs = held_out_prompts(SearchConfig(env=args.env, prompts=args.prompts), tokenizer, seed=0)
    budget, eos = envs.unwrapped.max_new_tokens, tuple(envs.unwrapped.eos_token_ids)
    evaluator = make_value("vader")
    config = RAINConfig(searches=args.searches, min_new_searches=args.min_new_searches)
    ours = RAIN(model, tokenizer, evaluator, config)
    official = RAIN(model, tokenizer, evaluator, RAINConfig(**{**config.__dict__, "reuse_cache": False}))
    run(ours, ids[:1], prompts[:1], budget, eos)  # warm-up: loads MiniLM and VADER

    cached, cached_s = run(ours, ids, prompts, budget, eos)
    rerun, rerun_s = run(official, ids, prompts, budget, eos)
    same = [a.completion_ids == b.completion_ids for a, b in zip(cached, rerun, strict=True)]
    keys = ("searches", "evaluations", "additions")
    same_stats = [all(a.stats[k] == b.stats[k] for k in keys) for a, b in zip(cached, rerun, strict=True)]

    engine = RolloutEngine(model, tokenizer)
    start = time.perf_counter()
    vanilla_tokens = 0
    for index, prompt_ids in enumerate(ids):
        batch = engine.generate([prompt_ids], max_new_tokens=budget, seed=index)
        vanilla_tokens += int(batch.lengths.sum())
    vanilla_s = time.perf_counter() - start

    def total(results, key):
        return sum(r.stats[key] for r in results)

    result = {
        "model": args.model,
        "env": args.env,
        "device": args.device,
        "prompts": args.prompts,
        "searches": args.searches,
        "min_new_searches": args.min_new_searches,
        "identical_completions": f"{sum(same)}/{len(same)}",
        "identical_search_statistics": f"{sum(same_stats)}/{len(same_stats)}",
        "ours_s": cached_s,
        "official_strategy_s": rerun_s,
        "speedup": rerun_s / cached_s,
        "vanilla_s": vanilla_s,
        "ours_vs_vanilla": cached_s / vanilla_s,
        "searches_total": total(cached, "searches"),
        "forward_tokens_ours": total(cached, "forward_tokens"),
        "forward_tokens_official": total(rerun, "forward_tokens"),
        "committed_tokens": total(cached, "committed_tokens"),
        "vanilla_tokens": vanilla_tokens,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        command = "python benchmarks/bench_rain.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None
        )
        lines = [
            "# RAIN speed: KV-cache reuse against re-running the prefix",
            "",
            f"Command: `{command} --out {args.out}`  ",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{args.device}.",
            "",
            f"{args.prompts} test prompts of {args.env}, {args.model}, VADER as the evaluator, "
            f"{args.searches} searches per committed step (at least {args.min_new_searches} new ones), the other "
            "constants the paper's. Both RAIN runs make the same search (the same completions and search "
            "statistics, counted below); only how the model is run differs.",
            "",
            "| | seconds | forward tokens | vs ours |",
            "| --- | ---: | ---: | ---: |",
            f"| RAIN, ours (prefix cache kept, rewound in place) | {cached_s:.1f} | {result['forward_tokens_ours']} "
            "| 1.0x |",
            "| RAIN, official strategy (prefix re-run for every simulation and candidate; candidates one at a time) "
            f"| {rerun_s:.1f} "
            f"| {result['forward_tokens_official']} | {rerun_s / cached_s:.1f}x |",
            f"| vanilla sampling (same prompts, batch 1) | {vanilla_s:.1f} | {vanilla_tokens} "
            f"| {vanilla_s / cached_s:.2f}x |",
            "",
            f"Identical completions: {result['identical_completions']}; identical search statistics (searches, "
            f"evaluations, additions): {result['identical_search_statistics']}. Speed-up of ours over the official "
            f"strategy: **{result['speedup']:.1f}x**. Time of RAIN relative to vanilla sampling: "
            f"**{result['ours_vs_vanilla']:.0f}x** ({result['searches_total']} searches for "
            f"{result['committed_tokens']} committed tokens).",
            "",
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
