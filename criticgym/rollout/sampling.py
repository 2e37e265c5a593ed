"""The sampler: temperature, top-k and top-p filtering, and one uniform draw per row (inverse CDF).

Drawing one random number per row, not one per vocabulary entry as ``torch.multinomial`` does, is most of the
engine's speed at small models; a row's own seed gives it its own stream (``row_uniforms``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from criticgym.errors import ConfigError


def filter_logits(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Set to -inf the logits outside the top-k tokens and outside the top-p nucleus. Shape (..., V) kept.

    ``keep`` (shape ``logits.shape[:-1]``, token ids) names one token per row that stays whatever its rank:
    re-scoring a sampled token under an updated policy then never gives it probability 0.
    """
    if not (top_k and top_k < logits.size(-1)) and top_p >= 1.0:
        return logits  # nothing to filter (the common case: no copy on the hot path)
    drop = torch.zeros_like(logits, dtype=torch.bool)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        drop |= logits < kth
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits.masked_fill(drop, float("-inf")), dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already cover top_p; the top token always stays
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop |= drop_sorted.scatter(-1, order, drop_sorted)
    if keep is not None:
        drop.scatter_(-1, keep.unsqueeze(-1), False)
    return logits.masked_fill(drop, float("-inf"))


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


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row, and its log-probability under the distribution it was drawn from: (B, V) -> (B,), (B,).

    Greedy takes the argmax (log-prob of the untempered distribution); otherwise the logits are tempered, cut
    by top-k and top-p (:func:`filter_logits`) and sampled by :func:`sample_from_logits` (``uniform``: each row's
    random number, else drawn from ``generator``).
    """
    if greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, logits.log_softmax(dim=-1).gather(1, tokens[:, None]).squeeze(1)
    logits = filter_logits(logits / temperature, top_k, top_p)  # what is sampled from
    tokens = sample_from_logits(logits, generator, uniform)
    return tokens, logits.log_softmax(dim=-1).gather(1, tokens[:, None]).squeeze(1)
