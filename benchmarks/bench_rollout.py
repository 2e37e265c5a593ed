"""Rollout throughput: our engine driving the vector env, against ``model.generate`` and a naive loop.

All three sample the same prompts (SentimentControl), exactly ``--new-tokens`` tokens per row (EOS is masked
until then, so every method does the same work), temperature 1, no top-k/top-p, measured in one run on the
same machine. Times are the best of ``--repeats`` after a warm-up.

    python benchmarks/bench_rollout.py --out benchmarks/results/rollout_cpu.md
    python benchmarks/bench_rollout.py --models tiny --batch-sizes 1 32 --device cuda --out rollout_gpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import criticgym
from criticgym.rollout import RolloutEngine, SamplingParams, left_pad, load_policy, sample_from_logits
from criticgym.sources import play

# 2 x 134.5M parameters is the forward cost of a token for smollm2-135m; the same rule for tiny.
OFFLINE_MATMUL_GFLOPS = 170.0  # OFFLINE.md, fp32 on the project's 2-core machines


def measure_matmul_gflops(device: torch.device, size: int = 1024, repeats: int = 20) -> float:
    """The machine's float32 matmul peak: the fastest of ``a @ b`` (MKL on a CPU) and oneDNN's packed product on a
    small model's shapes (:func:`packed_gemm_gflops`), so that a share of it does not flatter us."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = _best_seconds(lambda: a @ b, device, repeats)
    plain = 2 * size**3 / best / 1e9
    return max(plain, packed_gemm_gflops(device, repeats))


# (rows, in, out) of SmolLM2-135M's fused products at 128 rows: q/k/v, o, gate/up, down, the LM head
MODEL_SHAPES = ((128, 576, 960), (128, 576, 576), (128, 576, 3072), (128, 1536, 576), (128, 576, 49152))


def packed_gemm_gflops(device: torch.device, repeats: int = 20) -> float:
    """GFLOP/s of oneDNN's packed linear (the fast path's) on the model's shapes, the best shape (0 without it)."""
    from criticgym.rollout.packed import onednn_packing

    if device.type != "cpu" or not onednn_packing():
        return 0.0
    best = 0.0
    for rows, inp, out in MODEL_SHAPES:
        x, weight = torch.randn(rows, inp), torch.ops.mkldnn._reorder_linear_weight(torch.randn(out, inp))

        def product(x=x, weight=weight):
            return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

        best = max(best, 2 * rows * inp * out / _best_seconds(product, device, repeats) / 1e9)
    return best


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def naive_loop(model, ids, mask, new_tokens, eos_id, generator):
    """Re-run the whole sequence every step, no KV cache (how RL4LMs-style code generated).

    It samples with the engine's sampler, so that the comparison isolates the cache.
    """
    for _ in range(new_tokens):
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        logits[:, eos_id] = float("-inf")
        token = sample_from_logits(logits, generator)[:, None]
        ids = torch.cat([ids, token], 1)
        mask = torch.cat([mask, torch.ones_like(token)], 1)
    return ids


def methods(
    model_name: str,
    batch_size: int,
    new_tokens: int,
    device: torch.device,
    env: str = "criticgym/SentimentControl-v0",
    compiled: bool = False,
) -> tuple[dict, object]:
    """The ways to sample ``new_tokens`` per row from the same prompts of ``env`` (closures), and the model.

    ``compiled``: also the engine with its decode step compiled (``engine+env compiled``).
    """
    model, tokenizer = load_policy(model_name, device=device)
    engine = RolloutEngine(model, tokenizer)
    fallback = RolloutEngine(model, tokenizer, path="hf")  # the transformers forward: the fast path's baseline
    envs = criticgym.make_vec(
        env,
        num_envs=batch_size,
        model=tokenizer,
        reward=None,
        max_new_tokens=new_tokens,
        autoreset_mode="disabled",
    )
    obs, _ = envs.reset(seed=0)
    prompts = [row[: int(m.sum())].tolist() for row, m in zip(obs["input_ids"], obs["attention_mask"], strict=True)]
    ids, mask = left_pad(prompts, tokenizer.pad_token_id, device)
    eos = tokenizer.eos_token_id
    generator = torch.Generator(device=device).manual_seed(0)

    def ours(engine=engine):
        batch = play(engine, envs, seed=0, sampling=SamplingParams(min_new_tokens=new_tokens))
        assert int(batch.completion_mask.sum()) == batch_size * new_tokens

    def ours_hf():
        ours(fallback)

    def hf_generate():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        assert out.shape[1] - ids.shape[1] == new_tokens

    def naive():
        naive_loop(model, ids, mask, new_tokens, eos, generator)

    methods = {"engine+env": ours, "engine+env hf": ours_hf, "generate": hf_generate, "naive": naive}
    if compiled:
        compiled_engine = RolloutEngine(model, tokenizer, compile=True)
        methods["engine+env compiled"] = lambda: ours(compiled_engine)
    return methods, model


def run(model_name: str, batch_size: int, new_tokens: int, device: torch.device, repeats: int) -> dict:
    fns, model = methods(model_name, batch_size, new_tokens, device)
    times = {name: best_time(fn, device, repeats) for name, fn in fns.items()}
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": model_name,
        "params": params,
        "batch": batch_size,
        "tokens": batch_size * new_tokens,
        "tokens_per_s": {k: batch_size * new_tokens / v for k, v in times.items()},
    }


def write_report(out: Path, lines: list[str], data: dict) -> None:
    """Write a markdown report and its raw numbers (a .json beside it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="markdown report to write (a .json beside it)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    gflops = measure_matmul_gflops(device)
    print(f"matmul peak measured now: {gflops:.0f} GFLOP/s (OFFLINE.md: {OFFLINE_MATMUL_GFLOPS:.0f})", flush=True)
    rows = []
    for model_name in args.models:
        for batch_size in args.batch_sizes:
            row = run(model_name, batch_size, args.new_tokens, device, args.repeats)
            tps = row["tokens_per_s"]
            limit = gflops * 1e9 / (2 * row["params"])  # tokens/s if every FLOP went to the forward pass
            row["compute_limit_tokens_per_s"] = limit
            row["engine_vs_generate"] = tps["engine+env"] / tps["generate"]
            row["engine_vs_naive"] = tps["engine+env"] / tps["naive"]
            rows.append(row)
            print(
                f"{model_name:>13} B={batch_size:<3} engine+env {tps['engine+env']:8.0f} tok/s | generate "
                f"{tps['generate']:8.0f} | naive {tps['naive']:8.0f} | x{row['engine_vs_generate']:.2f} generate, "
                f"x{row['engine_vs_naive']:.1f} naive | {tps['engine+env'] / limit:.0%} of compute limit",
                flush=True,
            )

    if args.out:
        lines = [
            "# Rollout throughput",
            "",
            f"Command: `python benchmarks/bench_rollout.py --out {args.out}`  ",
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"device {device}, torch {torch.__version__}. Matmul peak measured in the same run: {gflops:.0f} GFLOP/s.",
            "",
            f"Sampling {args.new_tokens} new tokens per row from SentimentControl prompts (4-10 tokens), best of "
            f"{args.repeats}. *compute limit* = measured matmul peak / (2 x parameters) tokens/s.",
            "",
            "| model | batch | engine+env tok/s | generate tok/s | naive tok/s | vs generate | vs naive "
            "| % of compute limit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            t = r["tokens_per_s"]
            lines.append(
                f"| {r['model']} | {r['batch']} | {t['engine+env']:.0f} | {t['generate']:.0f} | {t['naive']:.0f} "
                f"| {r['engine_vs_generate']:.2f}x | {r['engine_vs_naive']:.1f}x "
                f"| {t['engine+env'] / r['compute_limit_tokens_per_s']:.0%} |"
            )
        write_report(args.out, lines, {"matmul_gflops": gflops, "rows": rows})


if __name__ == "__main__":
    main()
