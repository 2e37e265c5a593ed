"""From character spans to tokens: which generated token covers which characters of the decoded text.

Offsets come from decoding growing prefixes of the generated ids, not from re-tokenizing the text and not from
matching token strings (the RELC reference code tests whether a token's text occurs in the span text, so every
"the" and "," of a completion shares the reward of any span containing one). A character belongs to the token
that completes it: a byte-level token holding half of an emoji covers nothing, the next one covers the emoji.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from criticgym.critics.base import Span

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def token_char_offsets(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """The decoded text of ``ids`` (special tokens dropped) and each token's ``[start, end)`` in it.

    Returns:
        ``(text, offsets)`` with ``offsets`` of shape (T, 2); special tokens and partial characters get
        empty ranges.
    """
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))], skip_special_tokens=True)
    ends = np.array([len(os.path.commonprefix([p, text])) for p in prefixes], dtype=np.int64)
    ends = np.maximum.accumulate(ends) if len(ends) else ends
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return text, np.stack([starts, ends], axis=1) if len(ids) else np.zeros((0, 2), dtype=np.int64)


def tokens_in_span(offsets: np.ndarray, start: int, end: int) -> np.ndarray:
    """Boolean (T,): the tokens whose characters overlap ``[start, end)``; an empty span covers none."""
    if end <= start or not len(offsets):
        return np.zeros(len(offsets), dtype=bool)
    return (offsets[:, 0] < end) & (offsets[:, 1] > start) & (offsets[:, 1] > offsets[:, 0])


def span_token_rewards(
    spans: Sequence[Span], offsets: np.ndarray, positive: float = 0.5, negative: float = -0.5
) -> np.ndarray:
    """Per-token intrinsic rewards (T,): ``positive`` for tokens in good spans, ``negative`` in bad ones.

    A token inside several spans gets the sum of their rewards; spans with value 0 give nothing.
    """
    rewards = np.zeros(len(offsets), dtype=np.float64)
    for span in spans:
        if span.value:
            rewards[tokens_in_span(offsets, span.start, span.end)] += positive if span.value > 0 else negative
    return rewards
