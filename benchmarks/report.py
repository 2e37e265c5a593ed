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
        "| model | batch | device | engine+env tok/s | generate tok/s | naive tok/s | vs generate | vs naive |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rollout = defaultdict(dict)
    for r in rows_of(data, "rollout"):
        rollout[(r["model"], r["batch"], r["device"])][r["method"]] = r["tokens"] / r["best_s"]
    for (model, batch, device), tps in rollout.items():
        ours, gen, naive = (tps.get(k, float("nan")) for k in ("engine+env", "generate", "naive"))
        lines.append(
            f"| {model} | {batch} | {device} | {ours:.0f} | {gen:.0f} | {naive:.0f} | {ours / gen:.2f}x "
            f"| {ours / naive:.1f}x |"
        )
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
        "| device | engine+env MiB | generate MiB | engine / generate | KV cache MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    memory = defaultdict(dict)
    for r in rows_of(data, "memory"):
        memory[r["device"]][r["method"]] = r
    for device, by in memory.items():
        ours, gen = by.get("engine+env"), by.get("generate")
        if ours and gen:
            ratio = ours["peak_mib"] / gen["peak_mib"] if gen["peak_mib"] else float("nan")
            cells = f"{ours['peak_mib']:.0f} | {gen['peak_mib']:.0f} | {ratio:.2f} | {ours['kv_cache_mib']:.0f}"
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
