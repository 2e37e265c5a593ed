"""vLLM as the rollout engine (``make test-vllm``: vLLM's CPU build in its own venv).

The replayed batch must be the one the env would give for vLLM's tokens, the learner's log-probs must be those it
would have sampled them with, and weights (full or a LoRA adapter) synced after an update must show in the next
generations exactly as a fresh engine on the new weights generates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import criticgym

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="make test-vllm installs vLLM's CPU build")

from criticgym.rewards import Sparse  # noqa: E402
from criticgym.rollout import GREEDY, RolloutEngine, SamplingParams, load_policy  # noqa: E402
from criticgym.rollout.vllm import VLLMSampler  # noqa: E402
from criticgym.sources import VLLMRollouts, row_seed  # noqa: E402

MODEL = "tiny-vllm"


@pytest.fixture(scope="module")
def sampler():
    return VLLMSampler(MODEL)


@pytest.fixture
def policy():
    return load_policy(MODEL)


def greedy(sampler: VLLMSampler, prompts: list[list[int]], n: int = 8) -> list[list[int]]:
    return sampler.sample(prompts, n, seeds=[0] * len(prompts), stop_ids=[], sampling=GREEDY).tokens


def prompts_of(tokenizer) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("The movie was", "I think", "A")]


def test_the_replayed_batch_has_vllms_tokens_and_the_rewards_the_env_pays(sampler, policy):
    model, tokenizer = policy
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=6,
        model=MODEL,
        reward=Sparse(scorer="vader"),
        autoreset_mode="disabled",
    )
    head = torch.nn.Linear(model.config.hidden_size, 1)
    engine = RolloutEngine(model, tokenizer, ref_model=model, value_head=head)
    source = VLLMRollouts(envs, sampler)
    batch = source.play(engine, seed=3, sampling=SamplingParams(temperature=0.9, top_p=0.9))

    # the same prompts and seeds, sampled again by vLLM alone: the tokens the batch holds, cut where the env ended
    obs, _ = envs.reset(seed=3)
    prompts = [obs["input_ids"][r, : obs["attention_mask"][r].sum()].tolist() for r in range(6)]
    again = sampler.sample(
        prompts,
        envs.unwrapped.max_new_tokens,
        seeds=[row_seed(3, r) for r in range(6)],
        stop_ids=envs.unwrapped.eos_token_ids,
        sampling=SamplingParams(temperature=0.9, top_p=0.9),
    )
    for row, info in enumerate(batch.infos):
        n = int(batch.lengths[row])
        assert batch.completion_ids[row, :n].tolist() == again.tokens[row][:n] == list(info["completion_ids"])
    # the env's reward is VADER's score of each completion (the sparse reward), paid on its last token
    from criticgym.critics import as_scorer

    expected = as_scorer("vader").score([i["prompt"] for i in batch.infos], [i["completion"] for i in batch.infos])
    np.testing.assert_allclose(batch.rewards.sum(1).numpy(), expected, atol=1e-5)
    # the learner's log-probs (re-scored) and vLLM's agree to float rounding; the batch carries both
    mask = batch.completion_mask.bool()
    assert float((batch.logprobs - batch.sampler_logprobs)[mask].abs().max()) < 1e-3
    assert batch.values is not None and batch.ref_logprobs is not None
    assert source.perf["perf/weight_sync_s"] > 0


def test_a_full_weight_sync_shows_in_the_next_generations_as_a_fresh_engine_on_the_new_weights(policy, tmp_path):
    model, tokenizer = policy
    prompts = prompts_of(tokenizer)
    sampler = VLLMSampler(MODEL)
    sampler.sync(model)
    before = greedy(sampler, prompts)
    assert (
        before
        == RolloutEngine(model, tokenizer).generate(prompts, max_new_tokens=8, sampling=GREEDY).completion_ids.tolist()
    )
    # an "update" of the upper layer and the (tied) embedding: after the first sync only trainable tensors travel,
    # and the tied lm_head must travel with the embedding
    with torch.no_grad():
        for name, p in model.named_parameters():
            trained = "layers.1." in name or "embed_tokens" in name
            p.requires_grad_(trained)
            if trained:
                p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(1)) * 0.5)
    sampler.sync(model)
    after = greedy(sampler, prompts)
    assert after != before
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert after == greedy(VLLMSampler(str(tmp_path)), prompts)


def test_a_lora_sync_sends_the_adapter_alone_and_shows_in_the_next_generations(policy):
    from criticgym.algos.lora import add_lora

    model, tokenizer = policy
    model = add_lora(model, r=4)
    prompts = prompts_of(tokenizer)
    sampler = VLLMSampler(MODEL, lora_rank=4)
    sampler.sync(model)  # B = 0: the adapter changes nothing yet
    base = greedy(sampler, prompts)
    for seed in (1, 2):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(seed)) * 0.5)
        sampler.sync(model)
        ours = (
            RolloutEngine(model, tokenizer).generate(prompts, max_new_tokens=8, sampling=GREEDY).completion_ids.tolist()
        )
        assert greedy(sampler, prompts) == ours != base
    assert sampler.syncs == 3
