"""From character spans to tokens: which generated token covers which characters of the decoded text.

Offsets come from decoding the generated ids incrementally (one pass of ``tokenizers``' ``DecodeStream``, with
the decoding of growing prefixes as the reference and the fallback), not from re-tokenizing the text and not from
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
    ends = _stream_ends(tokenizer, ids, text)
    if ends is None:
        ends = prefix_ends(tokenizer, ids, text)
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return text, np.stack([starts, ends], axis=1) if len(ids) else np.zeros((0, 2), dtype=np.int64)


def _stream_ends(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> np.ndarray | None:
    """Each token's end offset from one incremental decode.

    None when the stream's text is not ``text`` (a slow tokenizer, or a decoder that rewrites what came before).
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return None
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:  # tokenizers older than 0.21
        return None
    stream = DecodeStream(skip_special_tokens=True)
    chunks = [stream.step(backend, token) for token in ids]
    if "".join(c or "" for c in chunks) != text:
        return None
    ends = np.cumsum([len(c or "") for c in chunks], dtype=np.int64)
    # A token that ends inside a character gets no chunk from the stream; what it completes (a leading space
    # before half an emoji) is read off its prefix, as the reference does. Rare, so the pass stays linear.
    for i in (i for i, c in enumerate(chunks) if c is None):
        prefix = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        ends[i] = len(os.path.commonprefix([prefix, text]))
    return np.maximum.accumulate(ends)


def prefix_ends(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> np.ndarray:
    """Each token's end offset by decoding every prefix (quadratic in the length; the reference)."""
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))], skip_special_tokens=True)
    ends = np.array([len(os.path.commonprefix([p, text])) for p in prefixes], dtype=np.int64)
    return np.maximum.accumulate(ends) if len(ends) else ends


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
