"""The GPU report of ``benchmarks/gpu_check.sh``: rollout against ``generate``, bandwidth share, PPO update speed.

Everything here runs without a model hub or large files: ``tiny`` and ``smollm2-135m-random`` (SmolLM2-135M's
architecture with random weights, built on the spot) on the Words task (built-in prompts). Every figure has its
baseline measured in the same run:

- rollout tokens/s of the engine driving the env (``play``) against ``model.generate`` with the same sampler
  (temperature 1, no top-k or top-p) and exactly ``new_tokens`` tokens per row, at each batch size;
- at batch 1, the share of the memory-bandwidth limit: every decoding step reads all weights once, so the limit
  is (bytes of weights) / (device-to-device copy bandwidth measured now) seconds per token;
- PPO from the float32 weights it trains, with float32 forward passes and under bfloat16 autocast: rollout
  tokens/s, and update tokens/s (one pass over a batch, forward and backward) against the training compute limit
  from a bf16 matmul peak measured now (6 N FLOPs per token).

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu/report.md                 # on CUDA
    python benchmarks/bench_gpu.py --device cpu --models tiny --batches 1,4 --new-tokens 8  # a dry run
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from bench_rollout import best_time, methods

import criticgym
from criticgym.rollout import load_policy

ENV = "criticgym/Words-v0"


def copy_bandwidth(device: torch.device, size_mib: int = 1024, repeats: int = 10) -> float:
    """Device memory bandwidth in bytes/s: a copy reads and writes ``size_mib`` MiB."""
    x = torch.empty(size_mib * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    seconds = best_time(lambda: y.copy_(x), device, repeats)
    return 2 * x.numel() / seconds


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 4096, repeats: int = 10) -> float:
    """Dense matmul FLOP/s at ``dtype`` (the compute peak that training can approach)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / best_time(lambda: a @ b, device, repeats)


def rollout(model_name: str, batch: int, new_tokens: int, device: torch.device, repeats: int) -> dict:
    """Engine + env against ``generate`` (bench_rollout's closures): the same prompts, sampler and token count."""
    fns, model = methods(model_name, batch, new_tokens, device, env=ENV, compiled=True)
    names = ("engine+env", "engine+env hf", "engine+env compiled", "generate")
    times = {name: best_time(fns[name], device, repeats) for name in names}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "model": model_name,
        "batch": batch,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "weight_bytes": weight_bytes,
        **{f"{k}_tokens_per_s": batch * new_tokens / t for k, t in times.items()},
    }


def ppo_update(model_name: str, batch: int, device: torch.device, repeats: int, precision: str) -> dict:
    """PPO's rollout and one update pass over its batch (minibatch = batch), from the float32 weights it trains.

    ``precision`` is the agent's: ``bf16`` runs the forward passes under bfloat16 autocast, ``fp32`` does not.
    """
    from criticgym.algos.base import token_rewards
    from criticgym.algos.ppo import PPO, PPOConfig, gae, masked_whiten

    model, tokenizer = load_policy(model_name, device=device, dtype=torch.float32)  # as criticgym train loads it
    envs = criticgym.make_vec(ENV, num_envs=batch, model=tokenizer, autoreset_mode="disabled")
    agent = PPO(model, tokenizer, envs, PPOConfig(epochs=1, minibatch_size=batch, lr=1e-7), precision=precision)
    rollout_s = best_time(agent.rollout, device, repeats)  # the same seed each time: the same batch
    rolled = agent.rollout()
    mask = rolled.completion_mask.float()
    rewards = token_rewards(rolled) - agent.kl_coef * (rolled.logprobs - rolled.ref_logprobs) * mask
    advantages, returns = gae(rewards, rolled.values, mask, agent.config.gamma, agent.config.lam)
    advantages = masked_whiten(advantages, mask)
    seconds = best_time(lambda: agent._update(rolled, advantages, returns, mask), device, repeats)
    tokens = int(rolled.prompt_mask.sum() + rolled.completion_mask.sum())
    return {
        "model": model_name,
        "batch": batch,
        "precision": precision,
        "rollout_tokens_per_s": float(mask.sum()) / rollout_s,
        "tokens_per_s": tokens / seconds,
        "params": model.num_parameters(),
    }


def report(results: dict) -> str:
    bandwidth, peak = results["copy_bandwidth"], results["matmul_flops"]
    lines = [
        "# GPU check",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Device: {results['device_name']}; torch {results['torch']}, transformers {results['transformers']}. "
        f"Measured in this run: copy bandwidth {bandwidth / 1e9:.0f} GB/s, matmul peak "
        f"{peak / 1e12:.3g} TFLOP/s ({results['matmul_dtype']}).",
        "",
        f"## Rollout ({results['new_tokens']} new tokens per row, temperature 1, the same prompts)",
        "",
        "*eager*: the fast path's eager step; *compiled*: its static step under `torch.compile` "
        '(`mode="reduce-overhead"`, CUDA graphs); *hf*: the transformers forward.',
        "",
        "| model | dtype | batch | eager tok/s | compiled tok/s | hf tok/s | `generate` tok/s | compiled / eager "
        "| best / `generate` | share of bandwidth limit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["rollout"]:
        ours, theirs = r["engine+env_tokens_per_s"], r["generate_tokens_per_s"]
        compiled, hf = r["engine+env compiled_tokens_per_s"], r["engine+env hf_tokens_per_s"]
        best = max(ours, compiled)
        share = f"{best * r['weight_bytes'] / bandwidth:.0%}" if r["batch"] == 1 else ""
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['batch']} | {ours:,.0f} | {compiled:,.0f} | {hf:,.0f} | "
            f"{theirs:,.0f} | {compiled / ours:.2f}x | {best / theirs:.2f}x | {share} |"
        )
    lines += [
        "",
        "Share of the bandwidth limit: at batch 1 every step reads every weight once, so no decoder can beat "
        "(bytes of weights) / (copy bandwidth) seconds per token; the share is our tokens/s times that time.",
        "",
        "## PPO: rollout and update from float32 weights",
        "",
        "`fp32`: float32 forward passes; `bf16`: the same weights under bfloat16 autocast (`--precision`, the "
        "default on CUDA). Update tokens/s count prompt and completion tokens of one pass, forward and backward.",
        "",
        "| model | batch | precision | rollout tok/s | update tok/s | update share of the compute limit (peak / 6N) |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results["ppo"]:
        limit = peak / (6 * r["params"])
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['precision']} | {r['rollout_tokens_per_s']:,.0f} "
            f"| {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / limit:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="tiny,smollm2-135m-random")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--ppo-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/gpu/report.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    models, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    import transformers

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {
        "command": "python benchmarks/bench_gpu.py " + " ".join(argv if argv is not None else []),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "new_tokens": args.new_tokens,
        "copy_bandwidth": copy_bandwidth(device, 1024 if device.type == "cuda" else 64),
        "matmul_flops": matmul_flops(device, dtype, 8192 if device.type == "cuda" else 512),
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "rollout": [],
        "ppo": [],
    }
    for name in models:
        for batch in batches:
            results["rollout"].append(rollout(name, batch, args.new_tokens, device, args.repeats))
            print(json.dumps(results["rollout"][-1]), flush=True)
        for precision in ("fp32", "bf16"):
            results["ppo"].append(ppo_update(name, args.ppo_batch, device, args.repeats, precision))
            print(json.dumps(results["ppo"][-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
