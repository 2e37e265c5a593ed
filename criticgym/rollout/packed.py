"""Linear layers with their weights packed once for the fastest matmul the machine has.

On a CPU, torch's ``F.linear`` in float32 runs through MKL; oneDNN with a weight reordered once into its blocked
layout (``torch.ops.mkldnn._reorder_linear_weight`` + ``_linear_pointwise``, the call vLLM's CPU backend makes) is
1.2-2.5x faster on a small model's shapes, and equal up to float rounding. Layers that read the same input are fused
into one product (q, k and v; gate and up).

A :class:`PackedLinear` remembers the version counter and storage of every weight it packed: an optimizer step, a
``load_state_dict`` or a weight sync bumps them, and :meth:`PackedLinear.refresh` repacks just those before the
next rollout. Frozen layers are never repacked. Where oneDNN's packed path is missing or fails (another CPU, CUDA,
a dtype it does not take), the fused weight is used through ``F.linear``.

Inside ``torch.compile`` a packed product is one opaque operator (``criticgym::packed_linear``): Inductor fuses the
norms, rotary embedding, attention and residual adds around it and calls the product as it is, reading the packed
weight current at call time, so a repack after an optimizer step needs no new graph.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F


@cache
def onednn_packing(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build and CPU run oneDNN's packed linear for ``dtype``, checked once on a small product."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.randn(16, 8).to(dtype)
        x = torch.randn(3, 8).to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    return bool(torch.allclose(y.float(), F.linear(x, weight).float(), atol=tolerance, rtol=tolerance))


_LIVE: weakref.WeakValueDictionary[int, PackedLinear] = weakref.WeakValueDictionary()
_HANDLES = itertools.count()


@torch.library.custom_op("criticgym::packed_linear", mutates_args=())
def packed_linear(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """The product of the live :class:`PackedLinear` ``handle`` (the opaque operator compiled graphs call)."""
    return _LIVE[handle].product(x)


@packed_linear.register_fake
def _(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


class PackedLinear:
    """One or more ``nn.Linear`` layers that read the same input, as one packed product.

    Args:
        layers: the layers, whose outputs are concatenated in this order.
        pack: use oneDNN's packed weight (None: when the weights are on the CPU and :func:`onednn_packing` holds).
    """

    def __init__(self, layers: Sequence[torch.nn.Linear], pack: bool | None = None) -> None:
        self.layers = list(layers)
        self.sizes = [layer.out_features for layer in self.layers]
        first = self.layers[0].weight
        self.pack = pack if pack is not None else (first.device.type == "cpu" and onednn_packing(first.dtype))
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.dtype = first.dtype  # what the product computes in: the weights', or bfloat16 under CPU autocast
        self.signature: tuple = ()
        self.handle = next(_HANDLES)
        _LIVE[self.handle] = self
        self.refresh()

    def _current(self, dtype: torch.dtype) -> tuple:
        return (dtype, *((p._version, p.data_ptr(), p.dtype) for p in self.parameters()))

    def parameters(self) -> list[torch.Tensor]:
        """The weights and biases packed."""
        params = [layer.weight for layer in self.layers]
        return params + [layer.bias for layer in self.layers if layer.bias is not None]

    def refresh(self, dtype: torch.dtype | None = None) -> bool:
        """Repack if any weight changed since the last packing, or to compute in another dtype; True if it did.

        ``dtype``: what the product computes in (None: the weights' dtype).
        """
        dtype = dtype or self.layers[0].weight.dtype
        signature = self._current(dtype)
        if signature == self.signature:
            return False
        with torch.no_grad():
            weight = torch.cat([layer.weight.detach() for layer in self.layers]) if len(self.layers) > 1 else None
            weight = (self.layers[0].weight.detach() if weight is None else weight).to(dtype)
            biases = [layer.bias for layer in self.layers]
            if all(b is None for b in biases):
                self.bias = None
            else:
                parts = [torch.zeros(n, dtype=weight.dtype, device=weight.device) if b is None else b.detach()
                         for b, n in zip(biases, self.sizes, strict=True)]  # fmt: skip
                self.bias = torch.cat(parts).to(dtype)
            packable = self.pack and onednn_packing(dtype)
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight) if packable else weight
        self.dtype, self.packed = dtype, packable
        self.signature = signature
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The fused product of ``x`` (..., in_features) -> (..., sum of out_features), in :attr:`dtype`."""
        x = x.to(self.dtype)
        if self.packed and torch.compiler.is_compiling():  # oneDNN's opaque weight: one operator to the compiler
            return packed_linear(x, self.handle, sum(self.sizes))
        return self.product(x)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """The fused product of ``x``, already in :attr:`dtype`."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the packed weight behind; the next :meth:`refresh` packs the copy's own.

        oneDNN's opaque tensors neither deep-copy nor pickle. A copy takes a handle of its own.
        """
        return {**self.__dict__, "weight": None, "bias": None, "signature": ()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, handle=next(_HANDLES))
        _LIVE[self.handle] = self

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output of each layer, from the fused output."""
        return torch.split(y, self.sizes, dim=-1)


def refresh_all(linears: Sequence[PackedLinear], dtype: torch.dtype | None = None) -> tuple[int, float]:
    """Repack the linears whose weights (or compute dtype) changed: (how many were repacked, seconds spent)."""
    start = time.perf_counter()
    repacked = sum(linear.refresh(dtype) for linear in linears)
    return repacked, time.perf_counter() - start
