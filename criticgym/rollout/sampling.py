"""The sampler: how tokens are drawn (:class:`SamplingParams`), filtering, and one uniform draw per row (inverse CDF).

Drawing one random number per row, not one per vocabulary entry as ``torch.multinomial`` does, is most of the
engine's speed at small models; a row's own seed gives it its own stream (``row_uniforms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from criticgym.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn: one value for every sampler and re-scorer (engine, rollout sources, agents, vLLM).

    Attributes:
        temperature: softmax temperature (> 0).
        top_k: keep only the k most likely tokens (0: all).
        top_p: keep the smallest set of tokens whose probability reaches ``top_p`` (1.0: all).
        greedy: take the most likely token (temperature, top-k and top-p are then ignored).
        min_new_tokens: EOS is masked out before this many tokens (as in ``model.generate``).

    The token budget is not here: an env's episode decides it (``max_new_tokens`` of the env, or of
    :meth:`~criticgym.rollout.RolloutEngine.generate`).

    Example:
        >>> SamplingParams(temperature=0.7, top_p=0.9).scoring_temperature
        0.7
        >>> SamplingParams(greedy=True).scoring_temperature
        1.0
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.greedy and not self.temperature > 0:
            raise ConfigError(
                f"temperature must be > 0, got {self.temperature}; for the most likely token use greedy=True."
            )
        if self.top_k < 0 or not 0 < self.top_p <= 1 or self.min_new_tokens < 0:
            raise ConfigError(
                f"Sampling needs top_k >= 0 (0: off), 0 < top_p <= 1 (1: off) and min_new_tokens >= 0; got "
                f"top_k={self.top_k}, top_p={self.top_p}, min_new_tokens={self.min_new_tokens}."
            )

    @property
    def scoring_temperature(self) -> float:
        """The temperature of the distribution the tokens' log-probs are taken under (1 for greedy decoding)."""
        return 1.0 if self.greedy else self.temperature


GREEDY = SamplingParams(greedy=True)
"""Greedy decoding."""


def filter_logits(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Set to -inf the logits outside the top-k tokens and outside the top-p nucleus. Shape (..., V) kept.

    ``keep`` (shape ``logits.shape[:-1]``, token ids) names one token per row that stays whatever its rank:
    re-scoring a sampled token under an updated policy then never gives it probability 0.

    The nucleus is found among the most likely tokens first (a partial ``topk``, widened only for the rows whose
    nucleus is larger), not by sorting the whole vocabulary: the same set, at a fraction of the cost.
    """
    if not (top_k and top_k < logits.size(-1)) and top_p >= 1.0:
        return logits  # nothing to filter (the common case: no copy on the hot path)
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])
    drop = torch.zeros_like(flat, dtype=torch.bool)
    if top_k and top_k < flat.size(-1):
        kth = torch.topk(flat, top_k, dim=-1).values[:, -1:]
        drop |= flat < kth
    if top_p < 1.0:
        drop |= _outside_nucleus(flat.masked_fill(drop, float("-inf")), top_p)
    if keep is not None:
        drop.scatter_(-1, keep.reshape(-1, 1), False)
    return flat.masked_fill(drop, float("-inf")).view(shape)


def _outside_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(N, V) bool: the tokens outside the smallest set, taken in order of probability, that reaches ``top_p``.

    A token is dropped when the tokens ranked above it already cover ``top_p`` (the top token always stays). The
    tokens are first put in buckets by powers of two of their probability; only the buckets that reach ``top_p``
    (and one more, against rounding) are sorted, a few hundred tokens where the whole vocabulary used to be.
    """
    probs = logits.softmax(dim=-1)
    bucket = (-torch.log2(probs)).floor_().clamp_(0, _BUCKETS - 1).long()  # probability 0 lands in the last
    mass = torch.zeros(probs.size(0), _BUCKETS, dtype=probs.dtype, device=probs.device)
    mass.scatter_add_(1, bucket, probs)
    last = (mass.double().cumsum(dim=1) < top_p).sum(dim=1) + 1  # the bucket reaching top_p, and one more
    candidates = bucket <= last[:, None]
    drop = torch.ones_like(probs, dtype=torch.bool)
    for row in range(probs.size(0)):
        index = candidates[row].nonzero().squeeze(1)
        ranked, order = probs[row, index].double().sort(descending=True)
        drop[row, index[order[(ranked.cumsum(dim=0) - ranked) < top_p]]] = False
    return drop


_BUCKETS = 128  # powers of two of a probability: 2^-127 is below float32's smallest normal number


def sample_from_logits(
    logits: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits)`` by inverting the CDF: (B, V) -> (B,).

    Exact, and needs one uniform number per row (``uniform``, (B,) float64 in [0, 1), else drawn from
    ``generator``). ``torch.multinomial`` and the Gumbel-max trick draw a random number per vocabulary entry,
    which on a CPU costs more than a small model's forward pass. Tokens whose logit is -inf are never drawn.
    """
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)  # float64: no drift over a 50k vocabulary
    if uniform is None:
        u = torch.rand((logits.size(0), 1), generator=generator, dtype=torch.float64, device=logits.device)
    else:
        u = uniform.to(torch.float64).view(-1, 1)
    u = (1.0 - u) * cdf[:, -1:]  # in (0, total]: a zero-width interval is never hit
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=logits.size(-1) - 1)


def row_uniforms(seeds: Sequence[int], batch_size: int, steps: int) -> torch.Tensor:
    """(B, steps) float64 uniforms, row b drawn from a generator seeded with ``seeds[b]`` alone (on the CPU)."""
    if len(seeds) != batch_size:
        raise ConfigError(f"Got {len(seeds)} seeds for {batch_size} prompts; give one seed, or one per prompt.")
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in seeds]
    return torch.stack(rows)


_BLOCK = 8  # rows sampled together: a block's float64 CDF (8 x V) stays in the CPU's cache


def sample_next(
    logits: torch.Tensor,
    sampling: SamplingParams = SamplingParams(),
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row, and its log-probability under the distribution it was drawn from: (B, V) -> (B,), (B,).

    Greedy takes the argmax (log-prob of the untempered distribution); otherwise the logits are tempered, cut
    by top-k and top-p (:func:`filter_logits`) and sampled by :func:`sample_from_logits` (``uniform``: each row's
    random number, else drawn from ``generator``). Rows are processed in blocks of eight: every operation is
    row-wise, so the tokens are those of the whole batch at once, and a block's work stays in the cache.
    """
    if sampling.greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, logits.log_softmax(dim=-1).gather(1, tokens[:, None]).squeeze(1)
    if uniform is None:
        uniform = torch.rand((logits.size(0), 1), generator=generator, dtype=torch.float64, device=logits.device)
    uniform = uniform.reshape(-1)
    tokens = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
    logprobs = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)
    step = _BLOCK if logits.device.type == "cpu" else logits.size(0)  # a GPU takes the batch in one launch
    for start in range(0, logits.size(0), step):
        block = slice(start, start + step)
        filtered = filter_logits(logits[block] / sampling.temperature, sampling.top_k, sampling.top_p)  # sampled from
        tokens[block] = sample_from_logits(filtered, uniform=uniform[block])
        logprobs[block] = filtered.log_softmax(dim=-1).gather(1, tokens[block, None]).squeeze(1)
    return tokens, logprobs
