"""The trainers' optimizer: fused where torch has it, the same update as the per-tensor loop up to rounding."""

from __future__ import annotations

import pytest
import torch

from criticgym.utils.training import adam


@pytest.mark.parametrize("decoupled", [False, True])
def test_the_fused_optimizer_takes_the_steps_of_the_per_tensor_loop(decoupled):
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32), torch.randn(7, 5, 3)]
    fused = [w.clone().requires_grad_() for w in weights]
    loop = [w.clone().requires_grad_() for w in weights]
    optimizer = adam(fused, lr=1e-2, decoupled=decoupled)
    reference = (torch.optim.AdamW if decoupled else torch.optim.Adam)(loop, lr=1e-2, foreach=False)
    assert type(optimizer) is type(reference) and optimizer.defaults["fused"]
    for _ in range(5):
        for a, b in zip(fused, loop, strict=True):
            a.grad = b.grad = torch.randn_like(a)
        optimizer.step()
        reference.step()
    for a, b, w in zip(fused, loop, weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        assert float((a - w).abs().max()) > 1e-2  # the steps moved the weights


def test_a_fused_step_marks_the_weights_changed_so_packed_copies_are_repacked():
    """torch's fused kernel leaves version counters alone; the packed weights of the fast path go by them."""
    from criticgym.rollout.packed import PackedLinear

    layer = torch.nn.Linear(8, 4)
    packed = PackedLinear([layer])
    optimizer = adam(layer.parameters(), lr=1e-2)
    versions = [p._version for p in layer.parameters()]
    layer(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    assert all(p._version > v for p, v in zip(layer.parameters(), versions, strict=True))
    assert packed.refresh()
    x = torch.randn(2, 8)
    torch.testing.assert_close(packed(x), layer(x).detach())


def test_weights_the_fused_kernel_does_not_take_go_through_the_loop():
    weights = [torch.zeros(3, requires_grad=True), torch.zeros(2, dtype=torch.complex64, requires_grad=True)]
    assert not adam(weights, lr=1e-3).defaults["fused"]
