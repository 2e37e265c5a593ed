"""Turn the performance suite's pytest-benchmark JSON into one markdown report (ratios against same-run baselines).

python benchmarks/report.py benchmarks/results/bench.json --out benchmarks/results/bench_cpu.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def rows_of(data: dict, kind: str) -> list[dict]:
    return [
        {**b["extra_info"], "best_s": b["stats"]["min"]} for b in data["benchmarks"] if b["extra_info"]["kind"] == kind
    ]


def report(data: dict, command: str) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or machine.get("machine", "")
    cores, python = machine.get("cpu", {}).get("count", "?"), machine.get("python_version", "?")
    lines = [
        "# Performance suite",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu}, {cores} cores, Python {python}; "
        f"run {data.get('datetime', '')}. Times are the best of the rounds; every ratio's baseline ran in the same "
        "session.",
        "",
        "## Rollout (20 new tokens per row, equal work)",
        "",
        "The engine drives the vector env (the training rollout); *hf* is the same engine on the transformers "
        'forward (`path="hf"`, the fallback for other architectures), *fast* the packed Llama path.',
        "",
        "| model | batch | device | engine+env tok/s | engine+env hf tok/s | generate tok/s | naive tok/s "
        "| fast vs hf | vs generate | vs naive |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rollout = defaultdict(dict)
    for r in rows_of(data, "rollout"):
        rollout[(r["model"], r["batch"], r["device"])][r["method"]] = r["tokens"] / r["best_s"]
    for (model, batch, device), tps in rollout.items():
        ours, hf, gen, naive = (tps.get(k, float("nan")) for k in ("engine+env", "engine+env hf", "generate", "naive"))
        lines.append(
            f"| {model} | {batch} | {device} | {ours:.0f} | {hf:.0f} | {gen:.0f} | {naive:.0f} | {ours / hf:.2f}x "
            f"| {ours / gen:.2f}x | {ours / naive:.1f}x |"
        )
    lines += [
        "",
        "## Sampling step (smollm2-135m's logits, vocabulary 49,152)",
        "",
        "The blocked sampler (8 rows at a time, top-p from probability buckets) against the whole-batch sampler "
        "that sorts the vocabulary for top-p; the same tokens (tests/rollout/test_sampling.py).",
        "",
        "| batch | top-p | blocked ms | full sort ms | speed-up |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    sampler = defaultdict(dict)
    for r in rows_of(data, "sampler"):
        sampler[(r["batch"], r["top_p"])][r["method"]] = r["best_s"] * 1e3
    for (batch, top_p), ms in sampler.items():
        ours, old = ms.get("blocked", float("nan")), ms.get("full sort", float("nan"))
        lines.append(f"| {batch} | {top_p} | {ours:.1f} | {old:.1f} | {old / ours:.1f}x |")
    iterations = {r["path"]: r for r in rows_of(data, "ppo_iteration")}
    if iterations:
        lines += [
            "",
            "## One PPO iteration (smollm2-135m, RELC lexicon, 16 completions, 20 of 30 layers frozen)",
            "",
            "Rollout (engine, env, value head, reference scoring) and update (forward, backward, step) of the best "
            "round; the fast path against the transformers forward (`CRITICGYM_DECODE=hf`).",
            "",
            "| path | iteration s | rollout s | update s |",
            "| --- | ---: | ---: | ---: |",
        ]
        for path, r in iterations.items():
            lines.append(f"| {path} | {r['best_s']:.2f} | {r['rollout_s']:.2f} | {r['update_s']:.2f} |")
        if {"fast", "hf"} <= iterations.keys():
            fast, hf = iterations["fast"], iterations["hf"]
            lines += [
                "",
                f"Iteration {hf['best_s'] / fast['best_s']:.2f}x faster on the fast path; its rollout "
                f"{hf['rollout_s'] / fast['rollout_s']:.2f}x.",
            ]
    for r in rows_of(data, "rain"):
        lines += [
            "",
            "## RAIN: the prefix cache kept and rewound, against re-running the prefix (the official strategy)",
            "",
            f"smollm2-135m, 2 SentimentControl prompts, 10 searches per step, VADER: ours {r['ours_s']:.1f} s, the "
            f"official strategy {r['official_s']:.1f} s, **{r['official_s'] / r['ours_s']:.1f}x**; the same "
            f"completions: {r['same']}.",
        ]
    lines += [
        "",
        "## Group rollouts (8 Summarize prompts x k = 4 completions, 20 new tokens, same seed and completions)",
        "",
        "| model | device | shared prefill s | prefill each copy s | speed-up |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    groups = defaultdict(dict)
    for r in rows_of(data, "group"):
        groups[(r["model"], r["device"])][r["method"]] = r["best_s"]
    for (model, device), by in groups.items():
        shared, each = by.get("shared prefill", float("nan")), by.get("prefill each copy", float("nan"))
        lines.append(f"| {model} | {device} | {shared:.3f} | {each:.3f} | {each / shared:.2f}x |")
    lines += ["", "## Critics (batch 32)", "", "| critic | critiques/s |", "| --- | ---: |"]
    for r in rows_of(data, "critic"):
        lines.append(f"| {r['critic']} | {r['items'] / r['best_s']:.1f} |")
    lines += [
        "",
        "## PPO update (16 completions, one epoch, one minibatch, forward + backward + step)",
        "",
        "The limit: the machine's fastest float32 product (`a @ b` or oneDNN's packed GEMM on the model's shapes, "
        "measured now) over 6 FLOPs per parameter and token.",
        "",
        "| model | device | update tok/s | training compute limit tok/s | share of limit |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows_of(data, "ppo_update"):
        tps = r["tokens"] / r["best_s"]
        limit = r["train_limit_tokens_per_s"]
        lines.append(f"| {r['model']} | {r['device']} | {tps:.0f} | {limit:.0f} | {tps / limit:.0%} |")
    lines += [
        "",
        "## Peak memory of a 64 x 20-token rollout, smollm2-135m",
        "",
        "Extra memory over the loaded model while the rollout runs (CPU: process RSS polled every 0.5 ms; CUDA: "
        "allocator peak). The KV cache alone is the lower bound.",
        "",
        "The fast path also holds its packed weights (a second copy of the linear layers' weights, or of the LM "
        "head's alone on a CPU with AVX2 only, made at the first rollout and kept for the model's life): the last "
        "columns add them.",
        "",
        "| device | engine+env MiB | generate MiB | engine / generate | KV cache MiB | packed weights MiB "
        "| engine + packed / generate |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    memory = defaultdict(dict)
    for r in rows_of(data, "memory"):
        memory[r["device"]][r["method"]] = r
    for device, by in memory.items():
        ours, gen = by.get("engine+env"), by.get("generate")
        if ours and gen:
            ratio = ours["peak_mib"] / gen["peak_mib"] if gen["peak_mib"] else float("nan")
            cells = f"{ours['peak_mib']:.0f} | {gen['peak_mib']:.0f} | {ratio:.2f} | {ours['kv_cache_mib']:.0f}"
            packed = ours.get("packed_weights_mib", 0.0)
            total = (ours["peak_mib"] + packed) / gen["peak_mib"] if gen["peak_mib"] else float("nan")
            cells += f" | {packed:.0f} | {total:.2f}"
            lines.append(f"| {device} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", default="make bench")
    args = parser.parse_args()
    args.out.write_text(report(json.loads(args.json.read_text()), args.command))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
