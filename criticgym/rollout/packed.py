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


@cache
def layers_gain_from_packing() -> bool:
    """Whether a decoder layer's products run faster packed on this CPU, not only the LM head's.

    Measured (docs/ROLLOUT.md): with AVX-512 the layers' products gain 1.1-2.5x; with AVX2 alone they run level
    or up to 17% slower, and only the LM head's wide product gains. Decided from the CPU's instruction set, not
    from a timing, so one machine always takes the same path.
    """
    return torch.backends.cpu.get_cpu_capability() != "AVX2"


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
        fuse: unpacked, keep the layers' weights concatenated (one product, a copy of the weights); False: each
            layer's own weight, the outputs concatenated (no copy). A packed product is always fused.
    """

    def __init__(self, layers: Sequence[torch.nn.Linear], pack: bool | None = None, fuse: bool = True) -> None:
        self.layers = list(layers)
        self.sizes = [layer.out_features for layer in self.layers]
        first = self.layers[0].weight
        self.pack = pack if pack is not None else (first.device.type == "cpu" and onednn_packing(first.dtype))
        self.fuse = fuse
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
        packable = self.pack and onednn_packing(dtype)
        if not packable and not self.fuse and dtype == self.layers[0].weight.dtype:
            self.weight = self.bias = None  # each layer's own weight: nothing held
        else:
            with torch.no_grad():
                weights = [layer.weight.detach() for layer in self.layers]
                weight = (torch.cat(weights) if len(weights) > 1 else weights[0]).to(dtype)
                biases = [layer.bias for layer in self.layers]
                if all(b is None for b in biases):
                    self.bias = None
                else:
                    parts = [torch.zeros(n, dtype=weight.dtype, device=weight.device) if b is None else b.detach()
                             for b, n in zip(biases, self.sizes, strict=True)]  # fmt: skip
                    self.bias = torch.cat(parts).to(dtype)
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
        if self.weight is None:
            outs = [F.linear(x, layer.weight, layer.bias) for layer in self.layers]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return F.linear(x, self.weight, self.bias)

    def held_bytes(self) -> int:
        """The memory this product holds beyond the layers' own weights (a packed or concatenated copy)."""
        own = {p.data_ptr() for p in self.parameters()}
        held = [t for t in (self.weight, self.bias) if t is not None and (t.is_mkldnn or t.data_ptr() not in own)]
        return sum(t.numel() * t.element_size() for t in held)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the packed weight behind; the next :meth:`refresh` packs the copy's own.

        oneDNN's opaque tensors neither deep-copy nor pickle. A copy takes a handle of its own.
        """
        return {**self.__dict__, "weight": None, "bias": None, "signature": ()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, handle=next(_HANDLES))
        _LIVE[self.handle] = self

    def frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The product with gradients for ``x`` alone, for weights that hold none (a frozen LM head in an update).

        Forward through the packed weight; backward through the layers' own weights (``grad @ W``).
        """
        if any(p.requires_grad for p in self.parameters()):
            raise ValueError("PackedLinear.frozen computes no weight gradients; these weights require them.")
        return _FrozenProduct.apply(x, self)

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output of each layer, from the fused output."""
        return torch.split(y, self.sizes, dim=-1)


class _FrozenProduct(torch.autograd.Function):
    """A :class:`PackedLinear`'s product, differentiable in its input only."""

    @staticmethod
    def forward(x: torch.Tensor, linear: PackedLinear) -> torch.Tensor:
        return linear(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.linear, ctx.dtype = inputs[1], inputs[0].dtype

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weights = [layer.weight.detach() for layer in ctx.linear.layers]
        parts = ctx.linear.split(grad)
        grad_x = sum(g.to(w.dtype) @ w for g, w in zip(parts, weights, strict=True))
        return grad_x.to(ctx.dtype), None


def refresh_all(linears: Sequence[PackedLinear], dtype: torch.dtype | None = None) -> tuple[int, float]:
    """Repack the linears whose weights (or compute dtype) changed: (how many were repacked, seconds spent)."""
    start = time.perf_counter()
    repacked = sum(linear.refresh(dtype) for linear in linears)
    return repacked, time.perf_counter() - start
