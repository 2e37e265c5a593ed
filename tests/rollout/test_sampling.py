"""The sampler that scales with the batch draws the tokens the whole-batch, full-sort sampler drew."""

from __future__ import annotations

import pytest
import torch

from criticgym.errors import ConfigError
from criticgym.rollout import GREEDY, SamplingParams
from criticgym.rollout.sampling import filter_logits, sample_next


def reference_filter(logits, top_k=0, top_p=1.0, dtype=torch.float32):
    """The sampler as it was: a full-vocabulary sort for top-p, the whole batch at once (its sums in ``dtype``)."""
    drop = torch.zeros_like(logits, dtype=torch.bool)
    if top_k and top_k < logits.size(-1):
        drop |= logits < torch.topk(logits, top_k, dim=-1).values[..., -1:]
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits.masked_fill(drop, float("-inf")), dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1).to(dtype)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop |= drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def reference_sample(logits, temperature, top_k, top_p, generator):
    logits = reference_filter(logits / temperature, top_k, top_p)
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    u = torch.rand((logits.size(0), 1), generator=generator, dtype=torch.float64)
    tokens = torch.searchsorted(cdf, (1.0 - u) * cdf[:, -1:]).squeeze(1).clamp_(max=logits.size(-1) - 1)
    return tokens, logits.log_softmax(dim=-1).gather(1, tokens[:, None]).squeeze(1)


def logits_like_a_model(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Peaked rows and flat rows (a flat row's nucleus holds thousands of tokens: the widening path)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 6.0, rows)[:, None]
    return torch.randn(rows, vocab, generator=g) * scale


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.9, 0, 0.9), (1.3, 50, 0.95), (0.7, 0, 0.5)]
)
def test_blocked_sampler_draws_the_reference_tokens_for_fixed_seeds(temperature, top_k, top_p):
    logits = logits_like_a_model(37, 20_000, seed=1)  # 37 rows: blocks of 8 and a ragged last one
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    tokens, logprobs = sample_next(logits, sampling, generator=torch.Generator().manual_seed(5))
    expected, expected_logprobs = reference_sample(logits, temperature, top_k, top_p, torch.Generator().manual_seed(5))
    assert torch.equal(tokens, expected)
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.95])
def test_nucleus_without_a_full_sort_is_the_sorted_nucleus(top_p):
    logits = logits_like_a_model(24, 49_152, seed=2)
    kept = torch.isfinite(filter_logits(logits, top_p=top_p))
    expected = torch.isfinite(reference_filter(logits, top_p=top_p, dtype=torch.float64))
    # equal but where rounding decides: at most a row's boundary token, whose more likely tokens cover top_p to
    # within float32's rounding of a softmax over 49,152 tokens (1.5e-5 seen on an AVX2 CPU, whose sums run in
    # another order than AVX-512's), in a few rows only: a nucleus off by one token would differ in every row
    probs = logits.double().softmax(dim=-1)
    differ = (kept != expected).nonzero().tolist()
    rows = [row for row, _ in differ]
    assert len(rows) == len(set(rows)) and len(rows) <= 4  # 2-3 of the 24 rows seen
    for row, token in differ:
        covered_before = probs[row][probs[row] > probs[row, token]].sum()
        assert abs(covered_before - top_p) < 1e-4
    assert kept.sum(dim=1).max() > 256  # some rows needed the widened search


def test_keep_survives_the_nucleus():
    logits = torch.tensor([[5.0, 4.0, 0.0, -3.0]])
    kept = torch.isfinite(filter_logits(logits, top_p=0.5, keep=torch.tensor([3])))
    assert kept.tolist() == [[True, False, False, True]]


def test_sampling_params_refuse_what_cannot_be_sampled_and_name_the_fix():
    with pytest.raises(ConfigError, match="use greedy=True"):
        SamplingParams(temperature=0.0)
    with pytest.raises(ConfigError, match="0 < top_p <= 1"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ConfigError, match="top_k >= 0"):
        SamplingParams(top_k=-1)
    with pytest.raises(ConfigError, match="min_new_tokens >= 0"):
        SamplingParams(min_new_tokens=-2)
    assert SamplingParams(temperature=0.0, greedy=True).scoring_temperature == 1.0  # greedy ignores the temperature
    assert SamplingParams(temperature=0.5, top_k=3).scoring_temperature == 0.5


def test_greedy_sampling_takes_the_argmax_whatever_the_other_settings():
    logits = logits_like_a_model(10, 500, seed=2)
    tokens, logprobs = sample_next(logits, SamplingParams(temperature=3.0, top_k=5, greedy=True))
    assert torch.equal(tokens, logits.argmax(-1))
    torch.testing.assert_close(logprobs, logits.log_softmax(-1).max(-1).values)
    assert torch.equal(sample_next(logits, GREEDY)[0], tokens)
