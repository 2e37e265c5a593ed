"""The KV cache a :class:`~criticgym.rollout.decoder.DecodeState` carries, behind one small interface.

:class:`KVCache` is the fast path's: one preallocated key buffer and one value buffer per layer, (B, H_kv, capacity,
D), valid up to ``length``. A forward pass writes its positions in place (an indexed copy, no ``cat``), ``truncate``
moves ``length`` back (crop and rewind cost nothing), and ``select`` / ``repeat`` / ``copy`` gather or copy rows.
When a forward pass needs more room than the buffers have, they grow by doubling (amortized, so a search that keeps
extending one state pays for the copy a logarithmic number of times).

:class:`HFCache` gives transformers' own ``DynamicCache`` (the fallback path, any architecture) the same interface.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class KVCache:
    """Keys and values of every layer in preallocated buffers indexed by position.

    Args:
        keys, values: one (B, H_kv, capacity, D) buffer per layer.
        length: how many positions hold valid entries (the same for every row; padding is masked, not skipped).
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0) -> None:
        self.keys = keys
        self.values = values
        self.length = length

    @classmethod
    def empty(cls, layers: int, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor) -> KVCache:
        """Buffers for ``layers`` layers of ``batch`` rows, room for ``capacity`` positions, ``like``'s dtype."""
        shape = (batch, heads, max(capacity, 1), head_dim)

        def buffer() -> torch.Tensor:  # zeros: the compiled step attends over the whole buffer, masked
            return torch.zeros(shape, dtype=like.dtype, device=like.device)

        return cls([buffer() for _ in range(layers)], [buffer() for _ in range(layers)], 0)

    @property
    def capacity(self) -> int:
        """Positions the buffers hold before they must grow."""
        return self.keys[0].size(2)

    @property
    def batch_size(self) -> int:
        """Rows."""
        return self.keys[0].size(0)

    def reserve(self, length: int) -> None:
        """Make room for ``length`` positions, doubling the buffers (their valid part copied) when they are short."""
        if length <= self.capacity:
            return
        capacity = max(length, 2 * self.capacity)
        self.keys = [_grown(k, capacity, self.length) for k in self.keys]
        self.values = [_grown(v, capacity, self.length) for v in self.values]

    def truncate(self, length: int) -> None:
        """Forget the positions from ``length`` on, in place (nothing is copied or cleared)."""
        self.length = min(self.length, length)

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache of these rows (indices, repeats allowed), with the same capacity."""
        return KVCache(
            [k.index_select(0, rows) for k in self.keys], [v.index_select(0, rows) for v in self.values], self.length
        )

    def repeat(self, k: int) -> KVCache:
        """Each row ``k`` times in a row, in a new cache."""
        rows = torch.arange(self.batch_size, device=self.keys[0].device).repeat_interleave(k)
        return self.select(rows)

    def copy(self) -> KVCache:
        """An independent copy."""
        return KVCache([k.clone() for k in self.keys], [v.clone() for v in self.values], self.length)

    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def _grown(buffer: torch.Tensor, capacity: int, length: int) -> torch.Tensor:
    bigger = buffer.new_zeros((*buffer.shape[:2], capacity, buffer.size(3)))
    bigger[:, :, :length] = buffer[:, :, :length]
    return bigger


class HFCache:
    """transformers' ``DynamicCache`` with :class:`KVCache`'s interface (the fallback path)."""

    def __init__(self, cache: Any) -> None:
        self.hf = cache

    @property
    def length(self) -> int:
        """Positions held."""
        return self.hf.get_seq_length()

    def truncate(self, length: int) -> None:
        """Forget the positions from ``length`` on, in place."""
        extra = self.hf.get_seq_length() - length
        if extra > 0:
            self.hf.crop(-extra)  # a negative count removes tokens (every version)

    def select(self, rows: torch.Tensor) -> HFCache:
        """A new cache of these rows."""
        cache = copy.deepcopy(self.hf)
        cache.batch_select_indices(rows)
        return HFCache(cache)

    def repeat(self, k: int) -> HFCache:
        """Each row ``k`` times in a row, in a new cache."""
        cache = copy.deepcopy(self.hf)
        cache.batch_repeat_interleave(k)
        return HFCache(cache)

    def copy(self) -> HFCache:
        """An independent copy."""
        return HFCache(copy.deepcopy(self.hf))
