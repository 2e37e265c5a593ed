"""vLLM beside our engine and ``model.generate``: throughput, the rollout path, weight sync and the log-prob gap.

All samplers draw the same prompts (SentimentControl's) with the same sampler: temperature 1, no top-k/top-p,
exactly ``--new-tokens`` tokens per row (EOS masked until then: the same work), in one process and one run. Times
are the best of ``--repeats`` after a warm-up. Also measured: a whole rollout as training plays it (the vector env
stepped per token; for vLLM its tokens replayed through the env and re-scored by the learner in one pass), the cost
of one weight sync (every tensor, the trainable ones with 20 of 30 layers frozen, a LoRA adapter), and the gap
between vLLM's log-probs and the learner's.

Needs vLLM (``make bench-vllm`` builds its venv and runs this):

    .venv-vllm/bin/python benchmarks/bench_vllm.py --out benchmarks/results/vllm_cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import criticgym
from criticgym.rollout import RolloutEngine, SamplingParams, left_pad, load_policy
from criticgym.rollout.vllm import VLLMSampler
from criticgym.sources import VLLMRollouts, play, row_seed


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prompts_for(batch: int, model: str) -> list[list[int]]:
    envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=batch, model=model, reward=None)
    obs, _ = envs.reset(seed=0)
    return [obs["input_ids"][r, : obs["attention_mask"][r].sum()].tolist() for r in range(batch)]


def throughput(model, tokenizer, sampler: VLLMSampler, batch: int, new_tokens: int, repeats: int, name: str):
    """Tokens/s of generate, our engine and vLLM on one batch of prompts, the same sampler and work."""
    prompts = prompts_for(batch, name)
    engine = RolloutEngine(model, tokenizer)
    fallback = RolloutEngine(model, tokenizer, path="hf")  # the transformers forward
    ids, mask = left_pad(prompts, engine.pad_id, engine.device)
    seeds = [row_seed(0, r) for r in range(batch)]

    def hf():
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=engine.pad_id,
            )

    def ours(engine=engine):
        engine.generate(
            prompts, max_new_tokens=new_tokens, seed=seeds, sampling=SamplingParams(min_new_tokens=new_tokens)
        )

    def ours_hf():
        ours(fallback)

    def theirs():
        sampler.sample(
            prompts, new_tokens, seeds=seeds, stop_ids=[], sampling=SamplingParams(min_new_tokens=new_tokens)
        )

    tokens = batch * new_tokens
    return {
        method: tokens / best_time(fn, repeats)
        for method, fn in (("generate", hf), ("engine hf", ours_hf), ("engine", ours), ("vllm", theirs))
    }


def rollouts(model, tokenizer, sampler: VLLMSampler, batch: int, repeats: int, name: str):
    """A training rollout (the env stepped per token, values and log-probs recorded): engine+env against vLLM+env.

    As the demo and the ablations train: the lower 20 of 30 layers frozen, so each batch's weight sync sends the
    upper 10 (and the sync is inside the vLLM+env time).
    """
    from criticgym.utils.training import freeze_lower_layers

    freeze_lower_layers(model, min(20, model.config.num_hidden_layers - 1))
    head = torch.nn.Linear(model.config.hidden_size, 1)
    engine = RolloutEngine(model, tokenizer, value_head=head)
    fallback = RolloutEngine(model, tokenizer, value_head=head, path="hf")
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=batch, model=name, reward="sparse", autoreset_mode="disabled"
    )
    source = VLLMRollouts(envs, sampler)
    seeds = [row_seed(0, r) for r in range(batch)]
    lengths = {}

    def builtin(engine=engine, name="engine+env"):
        lengths[name] = float(play(engine, envs, seed=0, row_seeds=seeds).lengths.sum())

    def builtin_hf():
        builtin(fallback, "engine+env hf")

    def vllm():
        lengths["vllm+env"] = float(source.play(engine, seed=0).lengths.sum())

    times = {
        name: best_time(fn, repeats)
        for name, fn in [("engine+env hf", builtin_hf), ("engine+env", builtin), ("vllm+env", vllm)]
    }
    batch_ = source.play(engine, seed=1, sampling=SamplingParams(temperature=1.0))
    gap = (batch_.logprobs - batch_.sampler_logprobs)[batch_.completion_mask.bool()].abs()
    sync = source.perf["perf/weight_sync_s"]
    return {k: lengths[k] / v for k, v in times.items()}, {"mean": float(gap.mean()), "max": float(gap.max())}, sync


def sync_costs(name: str, repeats: int) -> dict[str, float]:
    """Seconds per weight sync: every tensor, the trainable ones (20 of 30 layers frozen), a LoRA adapter (r 16)."""
    from criticgym.algos.lora import add_lora
    from criticgym.utils.training import freeze_lower_layers

    model, _ = load_policy(name)
    full = VLLMSampler(name)
    full.sync(model)  # the first sync sends everything
    out = {
        "every tensor": best_time(
            lambda: full.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": list(model.state_dict().items()), "is_checkpoint_format": True},
            ),
            repeats,
        )
    }
    freeze_lower_layers(model, 20)
    out["trainable tensors (20 of 30 layers frozen)"] = best_time(lambda: full.sync(model), repeats)
    lora_model = add_lora(load_policy(name)[0], r=16)
    lora = VLLMSampler(name, lora_rank=16)
    out["LoRA adapter (r 16, all linear layers)"] = best_time(lambda: lora.sync(lora_model), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/vllm_cpu.md")
    args = parser.parse_args()

    model, tokenizer = load_policy(args.model)
    sampler = VLLMSampler(args.model)
    sampler.sync(model)
    rows, rollout_rows, gaps = [], [], []
    for batch in args.batch_sizes:
        rates = throughput(model, tokenizer, sampler, batch, args.new_tokens, args.repeats, args.model)
        rows.append({"batch": batch, **rates})
        rollout_rates, gap, _ = rollouts(model, tokenizer, sampler, batch, args.repeats, args.model)
        rollout_rows.append({"batch": batch, **rollout_rates})
        gaps.append({"batch": batch, **gap})
        print(rows[-1], rollout_rows[-1], gaps[-1], flush=True)
    del sampler
    syncs = sync_costs(args.model, args.repeats)
    result = {
        "model": args.model,
        "new_tokens": args.new_tokens,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "throughput": rows,
        "rollout": rollout_rows,
        "logprob_gap": gaps,
        "sync_s": syncs,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.write_text(report(result, args))
    print(out.read_text())


def report(result: dict, args) -> str:
    lines = [
        f"# vLLM beside our engine and `generate` ({result['model']}, CPU)",
        "",
        f"Command: `.venv-vllm/bin/python benchmarks/bench_vllm.py --out {args.out}` (`make bench-vllm`); "
        f"{result['machine']}; {args.new_tokens} sampled tokens per row (temperature 1, EOS masked until then), "
        f"best of {args.repeats} after a warm-up, one process.",
        "",
        "Our engine on its fast path (packed oneDNN linears, preallocated cache) and on the transformers forward "
        "(*hf*, the fallback for other architectures):",
        "",
        "| batch | `generate` tok/s | engine hf tok/s | our engine tok/s | vLLM tok/s | engine / vLLM | engine / hf "
        "| vLLM / `generate` |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['batch']} | {r['generate']:.0f} | {r['engine hf']:.0f} | {r['engine']:.0f} | {r['vllm']:.0f} | "
            f"**{r['engine'] / r['vllm']:.2f}x** | {r['engine'] / r['engine hf']:.2f}x | "
            f"{r['vllm'] / r['generate']:.2f}x |"
        )
    lines += [
        "",
        "A training rollout (SentimentControl's vector env stepped per token, the sparse reward, log-probs and values "
        "recorded; for vLLM, the weight sync of the upper 10 layers, its tokens replayed through the env and "
        "re-scored by the learner in one forward pass), completion tokens/s:",
        "",
        "| batch | engine+env hf | engine+env | vLLM+env | engine+env / hf | vLLM+env / engine+env |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rollout"]:
        lines.append(
            f"| {r['batch']} | {r['engine+env hf']:.0f} | {r['engine+env']:.0f} | {r['vllm+env']:.0f} | "
            f"**{r['engine+env'] / r['engine+env hf']:.2f}x** | {r['vllm+env'] / r['engine+env']:.2f}x |"
        )
    lines += ["", "Log-prob gap, |vLLM's - the learner's| per sampled token (float32 both):", ""]
    lines += [f"- batch {g['batch']}: mean {g['mean']:.1e}, max {g['max']:.1e}" for g in result["logprob_gap"]]
    lines += ["", "One weight sync into the running engine (seconds, best of the repeats):", ""]
    lines += [f"- {what}: {s:.3f} s" for what, s in result["sync_s"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
