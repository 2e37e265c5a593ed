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
HERE = Path(__file__).parent
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


@pytest.mark.parametrize("method", ["engine+env", "engine+env hf", "generate", "naive"])
@pytest.mark.parametrize(
    "model_name,batch", [("tiny", 32), ("smollm2-135m", 1), ("smollm2-135m", 32), ("smollm2-135m", 128)]
)
def test_rollout_tokens_per_s(benchmark, device, model_name, batch, method):
    if method == "naive" and batch > 32:
        pytest.skip("the no-cache loop at batch 128 takes minutes; its ratio is known from batch 32")
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
    from criticgym.rollout import RolloutEngine, SamplingParams

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
        engine.generate(prompts, max_new_tokens=NEW_TOKENS, seed=0, sampling=SamplingParams(min_new_tokens=NEW_TOKENS))
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


_logits: dict = {}


def model_logits(batch: int) -> torch.Tensor:
    """smollm2-135m's next-token logits after SentimentControl prompts and 4 sampled tokens: a real sampler input."""
    if batch not in _logits:
        from criticgym.rollout import RolloutEngine

        engine = RolloutEngine(*load_policy("smollm2-135m"))
        envs = criticgym.make_vec("criticgym/SentimentControl-v0", num_envs=batch, model="smollm2-135m", reward=None)
        obs, _ = envs.reset(seed=0)
        prompts = [row[: int(m.sum())].tolist() for row, m in zip(obs["input_ids"], obs["attention_mask"], strict=True)]
        done = engine.generate(prompts, max_new_tokens=4, seed=0)
        state = engine.decoder.prefill(done.prompt_ids, done.prompt_mask)
        for t in range(3):
            state = engine.decoder.step(state, done.completion_ids[:, t])
        _logits[batch] = state.logits
    return _logits[batch]


def full_sort_sampler(logits, temperature, top_p, generator):
    """The sampler before the blocked one: the whole batch at once, top-p by sorting the whole vocabulary."""
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    u = torch.rand((logits.size(0), 1), generator=generator, dtype=torch.float64)
    tokens = torch.searchsorted(cdf, (1.0 - u) * cdf[:, -1:]).squeeze(1).clamp_(max=logits.size(-1) - 1)
    return tokens, logits.log_softmax(dim=-1).gather(1, tokens[:, None]).squeeze(1)


@pytest.mark.parametrize("method", ["blocked", "full sort"])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
@pytest.mark.parametrize("batch", [32, 128])
def test_sampler_per_step(benchmark, batch, top_p, method):
    """One sampling step on smollm2-135m's logits: the blocked sampler (top-p from probability buckets) against
    the whole-batch sampler that sorts the vocabulary; the same tokens (tests/rollout/test_sampling.py)."""
    from criticgym.rollout.sampling import SamplingParams, sample_next

    logits = model_logits(batch)
    if method == "blocked":
        sampling = SamplingParams(top_p=top_p)
        fn = lambda: sample_next(logits, sampling, generator=torch.Generator().manual_seed(0))  # noqa: E731
    else:
        fn = lambda: full_sort_sampler(logits, 1.0, top_p, torch.Generator().manual_seed(0))  # noqa: E731
    benchmark.group = f"sampler B={batch} top_p={top_p}"
    benchmark.extra_info.update(kind="sampler", batch=batch, top_p=top_p, method=method)
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("path", ["fast", "hf"])
def test_ppo_iteration(benchmark, path):
    """One PPO iteration as ``make demo`` runs it (smollm2-135m, RELC with the lexicon critic, 16 completions,
    20 of 30 layers frozen): rollout, reference and value scoring, then the update; the fast path against the
    transformers forward (``CRITICGYM_DECODE=hf``)."""
    from criticgym.algos.ppo import PPO, PPOConfig

    os.environ["CRITICGYM_DECODE"] = path if path == "hf" else "auto"
    try:
        model, tokenizer = load_policy("smollm2-135m")
        envs = criticgym.make_vec(
            "criticgym/SentimentControl-v0", num_envs=16, model=tokenizer, reward="relc", critic="lexicon",
            scorer="vader", autoreset_mode="disabled",
        )  # fmt: skip
        agent = PPO(model, tokenizer, envs, PPOConfig(freeze_layers=20))
        metrics = []
        benchmark.group = "PPO iteration smollm2-135m (16 completions, 20 of 30 layers frozen)"
        benchmark.pedantic(lambda: metrics.append(agent.iterate()), rounds=3, warmup_rounds=1)
        best = min(metrics[1:], key=lambda m: m["perf/rollout_s"] + m["perf/update_s"])
        benchmark.extra_info.update(kind="ppo_iteration", path=path, engine_path=agent.engine.decoder.path)
        benchmark.extra_info.update(rollout_s=best["perf/rollout_s"], update_s=best["perf/update_s"])
    finally:
        os.environ.pop("CRITICGYM_DECODE", None)


def test_rain_vs_official_strategy(benchmark):
    """RAIN with its prefix cache kept and rewound against the official strategy (the prefix re-run for every
    forward pass): the same search (same completions and statistics), smollm2-135m, 2 prompts, 10 searches."""
    from criticgym.search.compare import SearchConfig, held_out_prompts
    from criticgym.search.rain import RAIN, RAINConfig
    from criticgym.search.values import make_value

    model, tokenizer = load_policy("smollm2-135m")
    ids, prompts, envs = held_out_prompts(SearchConfig(env="criticgym/SentimentControl-v0", prompts=2), tokenizer, 0)
    budget, eos = envs.unwrapped.max_new_tokens, tuple(envs.unwrapped.eos_token_ids)
    config = RAINConfig(searches=10, min_new_searches=5)
    evaluator = make_value("vader")
    rains = {"ours": RAIN(model, tokenizer, evaluator, config)}
    rains["official"] = RAIN(model, tokenizer, evaluator, RAINConfig(**{**config.__dict__, "reuse_cache": False}))
    rains["ours"].search(ids[0], prompts[0], seed=0, budget=4, eos_ids=eos)  # warm-up: MiniLM, VADER, packing
    results, seconds = {}, {}
    for name, rain in rains.items():
        start = time.perf_counter()
        results[name] = [
            rain.search(i, p, seed=k, budget=budget, eos_ids=eos)
            for k, (i, p) in enumerate(zip(ids, prompts, strict=True))
        ]
        seconds[name] = time.perf_counter() - start
    same = all(a.completion_ids == b.completion_ids for a, b in zip(results["ours"], results["official"], strict=True))
    benchmark.group = "RAIN"
    benchmark.extra_info.update(kind="rain", ours_s=seconds["ours"], official_s=seconds["official"], same=same)
    benchmark.pedantic(lambda: None, rounds=1, warmup_rounds=0)


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
    from criticgym.rollout.llama import fast_forward_for

    fast = fast_forward_for(model) if method == "engine+env" else None
    packed = sum(p.held_bytes() for p in fast.linears()) / 2**20 if fast else 0.0
    benchmark.extra_info.update(kind="memory", method=method, device=device, peak_mib=peak, kv_cache_mib=kv_cache)
    benchmark.extra_info["packed_weights_mib"] = packed  # held for the model's life, not per rollout
    benchmark.pedantic(fn, rounds=1, warmup_rounds=0)
