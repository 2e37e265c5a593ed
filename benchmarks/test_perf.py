"""The performance suite (pytest-benchmark): ``make bench`` runs it and writes one report.

Every figure has its baseline measured in the same run: rollout tokens/s of the engine against ``generate`` and
the naive no-cache loop (equal work: exactly 20 new tokens per row), group rollouts that share one prefill per
prompt against prefilling every copy, critic throughput, PPO update tokens/s
against the training compute limit from a matmul peak measured now, and the peak memory of a 64 x 20-token
rollout on smollm2-135m against ``generate``'s. CPU always; CUDA too when there is a GPU.

    .venv/bin/pytest benchmarks -o addopts="" --benchmark-json benchmarks/results/bench.json
    .venv/bin/python benchmarks/report.py benchmarks/results/bench.json --out benchmarks/results/bench_cpu.md
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from bench_rollout import measure_matmul_gflops
from bench_rollout import methods as rollout_methods

import criticgym
from criticgym.rollout import load_policy

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NEW_TOKENS = 20


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module")
def matmul_gflops(device):
    return measure_matmul_gflops(torch.device(device))


_methods: dict = {}


def methods(name: str, batch: int, device: str) -> dict:
    """bench_rollout's three samplers (engine+env, generate, naive), built once per model, batch and device."""
    if (name, batch, device) not in _methods:
        _methods[(name, batch, device)] = rollout_methods(name, batch, NEW_TOKENS, torch.device(device))
    return _methods[(name, batch, device)]


@pytest.mark.parametrize("method", ["engine+env", "generate", "naive"])
@pytest.mark.parametrize("model_name,batch", [("tiny", 32), ("smollm2-135m", 1), ("smollm2-135m", 32)])
def test_rollout_tokens_per_s(benchmark, device, model_name, batch, method):
    fn = methods(model_name, batch, device)[0][method]

    def run():
        fn()
        sync(device)

    benchmark.group = f"rollout {model_name} B={batch} {device}"
    benchmark.extra_info.update(kind="rollout", model=model_name, batch=batch, device=device, method=method)
    benchmark.extra_info["tokens"] = batch * NEW_TOKENS
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


_group_engines: dict = {}


@pytest.mark.parametrize("method", ["shared prefill", "prefill each copy"])
@pytest.mark.parametrize("model_name", ["tiny", "smollm2-135m"])
def test_group_rollout(benchmark, device, model_name, method):
    """RLOO-style groups: 8 Summarize prompts (about 180 tokens each) x k = 4 completions = 32 rows, 20 new tokens.

    The engine prefills each distinct prompt once and repeats its cache; the baseline prefills every copy.
    Same sampler, same seed, the same completions (tested in tests/rollout/test_engine.py).
    """
    from criticgym.rollout import RolloutEngine

    if (model_name, device) not in _group_engines:
        model, tokenizer = load_policy(model_name, device=device)
        envs = criticgym.make_vec("criticgym/Summarize-v0", num_envs=8, model=tokenizer, reward=None)
        obs, _ = envs.reset(seed=0)
        rows = zip(obs["input_ids"], obs["attention_mask"], strict=True)
        prompts = [ids[mask.astype(bool)].tolist() for ids, mask in rows]
        _group_engines[(model_name, device)] = (model, tokenizer, [p for p in prompts for _ in range(4)])
    model, tokenizer, prompts = _group_engines[(model_name, device)]
    engine = RolloutEngine(model, tokenizer, share_prefill=method == "shared prefill")

    def run():
        engine.generate(prompts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, seed=0)
        sync(device)

    benchmark.group = f"group rollout {model_name} 8 prompts x 4 {device}"
    benchmark.extra_info.update(kind="group", model=model_name, device=device, method=method, rows=len(prompts))
    benchmark.extra_info["prompt_tokens"] = sum(len(p) for p in prompts)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("critic_name", ["lexicon", "toxicity", "llm-tiny"])
def test_critic_throughput(benchmark, critic_name):
    from criticgym.critics import LexiconCritic, LLMCritic, LocalBackend, ToxicityCritic
    from criticgym.data import load_rotten_tomatoes

    critic = {
        "lexicon": LexiconCritic,
        "toxicity": ToxicityCritic,
        "llm-tiny": lambda: LLMCritic(LocalBackend("tiny", batch_size=32), template="sentiment"),
    }[critic_name]()
    texts = [e.text for e in load_rotten_tomatoes("test")[:32]]
    benchmark.group = "critics (batch 32, cpu)"
    benchmark.extra_info.update(kind="critic", critic=critic_name, items=len(texts), device="cpu")
    benchmark.pedantic(critic.critique, args=([""] * len(texts), texts), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("model_name", ["tiny", "smollm2-135m"])
def test_ppo_update_tokens_per_s(benchmark, device, matmul_gflops, model_name):
    from criticgym.algos.base import token_rewards
    from criticgym.algos.ppo import PPO, PPOConfig, gae, masked_whiten

    model, tokenizer = load_policy(model_name, device=device)  # its own copy: the update changes the weights
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0", num_envs=16, model=tokenizer, scorer="vader", autoreset_mode="disabled"
    )
    agent = PPO(model, tokenizer, envs, PPOConfig(epochs=1, minibatch_size=16, lr=1e-7))
    batch = agent.rollout()
    mask = batch.completion_mask.float()
    kl = (batch.logprobs - batch.ref_logprobs) * mask
    rewards = token_rewards(batch) - agent.kl_coef * kl
    advantages, returns = gae(rewards, batch.values, mask, agent.config.gamma, agent.config.lam)
    advantages = masked_whiten(advantages, mask)

    def update():
        agent._update(batch, advantages, returns, mask)
        sync(device)

    params = sum(p.numel() for p in model.parameters())
    benchmark.group = f"PPO update {device}"
    benchmark.extra_info.update(kind="ppo_update", model=model_name, device=device, params=params)
    benchmark.extra_info["tokens"] = int(batch.prompt_mask.sum() + batch.completion_mask.sum())
    benchmark.extra_info["train_limit_tokens_per_s"] = matmul_gflops * 1e9 / (6 * params)
    benchmark.pedantic(update, rounds=3, warmup_rounds=1)


def peak_memory_mib(fn, device: str) -> float:
    """Peak extra memory while ``fn`` runs: CUDA's allocator peak, or the process RSS polled every 0.5 ms.

    On CPU, freed memory is first returned to the OS (``malloc_trim``), so the RSS grows again with what ``fn``
    allocates (glibc; elsewhere the figure can read low).
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    statm = Path("/proc/self/statm")
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    # Freed memory stays in malloc's pools and would hide the next run's peak: hand it back to the OS first.
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    base, peak, running = rss(), [0], [True]

    def poll():
        while running[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        running[0] = False
        thread.join()
    return max(peak[0] - base, 0) / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS polling needs Linux /proc")
@pytest.mark.parametrize("method", ["engine+env", "generate"])
def test_rollout_peak_memory_64x20(benchmark, device, method):
    fns, model = methods("smollm2-135m", 64, device)
    fn = fns[method]
    fn()  # warm-up: allocator pools and lazy initialisation are not the rollout's memory
    peak = peak_memory_mib(fn, device)
    cfg = model.config
    kv_heads = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    bytes_per = next(model.parameters()).element_size()
    kv_cache = 2 * cfg.num_hidden_layers * 64 * (16 + NEW_TOKENS) * kv_heads * head_dim * bytes_per / 2**20
    benchmark.group = f"rollout peak memory smollm2-135m 64x20 {device}"
    benchmark.extra_info.update(kind="memory", method=method, device=device, peak_mib=peak, kv_cache_mib=kv_cache)
    benchmark.pedantic(fn, rounds=1, warmup_rounds=0)
