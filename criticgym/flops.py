"""Estimated FLOPs of the networks a run uses, counted where they run and charged to a phase.

RELC compares rewards at equal compute, the critic's included. A run here spends compute in three places: the
policy (rollout, reference model, update), the reward (critic, judge, scorer networks called by the env) and
evaluation. :func:`track` puts a forward pre-hook on a network that counts the tokens of each call and charges

- forward: ``2 N`` FLOPs per token, N the parameters a token passes through (the input embedding is a lookup and
  is left out; a tied output head is counted, it is a matrix multiply);
- backward, when the call runs with gradients on and the network has trainable parameters: ``2 (T + H) + 2 T``
  per token (activation gradients through the trainable part and the output head, weight gradients of the
  trainable part), T the trainable parameters and H the head;

to the innermost active :func:`phase` ("other" outside any). Phases live in a context variable: a thread started
with a copy of the caller's context (as the overlapped critic's is) charges the caller's phase. Attention-score
FLOPs, which grow with the context, and networks that are not torch modules (lexicons, VADER, the linear toxicity
model) are not counted: for the short texts of these tasks the former is a few percent, and the latter cost
microseconds. Padding tokens are counted: they are computed.

    >>> import torch
    >>> from criticgym import flops
    >>> net = flops.track(torch.nn.Linear(4, 3, bias=False))  # 12 parameters
    >>> _ = flops.take()
    >>> with torch.no_grad(), flops.phase("reward"):
    ...     _ = net(torch.zeros(2, 5, 4))  # 10 tokens
    >>> flops.take()
    {'reward': 240.0}
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_counts: defaultdict[str, float] = defaultdict(float)
_lock = threading.Lock()  # threads (an overlapped critic) count into the same totals
_phase: ContextVar[str] = ContextVar("criticgym_flops_phase", default="other")


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the FLOPs of tracked networks called inside the block (in this context) to ``name``."""
    token = _phase.set(name)
    try:
        yield
    finally:
        _phase.reset(token)


def take() -> dict[str, float]:
    """The FLOPs counted per phase since the last call, then reset."""
    with _lock:
        out = dict(_counts)
        _counts.clear()
    return out


def add(counts: Mapping[str, float]) -> None:
    """Charge FLOPs counted elsewhere (another process's :func:`take`) to their phases."""
    with _lock:
        for name, value in counts.items():
            _counts[name] += value


def _tokens(args: tuple, kwargs: dict) -> int:
    features = args[0] if args and isinstance(args[0], Mapping) else {}  # a sentence-transformers module's input
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), features.get("input_ids"), *args[:1]):
        if isinstance(value, torch.Tensor):
            return value.numel() if value.dtype in (torch.long, torch.int) else value.shape[:-1].numel()
    return 0


def _sizes(module: nn.Module) -> tuple[int, int, int]:
    """(forward parameters, trainable parameters, frozen output head parameters), embeddings as documented."""
    get_in = getattr(module, "get_input_embeddings", None)
    get_out = getattr(module, "get_output_embeddings", None)
    embedding = get_in() if get_in else None
    head = get_out() if get_out else None
    embedding_w = embedding.weight if isinstance(embedding, nn.Embedding) else None
    head_w = head.weight if isinstance(head, nn.Linear) else None
    tied = embedding_w is not None and head_w is embedding_w
    total = trainable = 0
    for p in module.parameters():
        if p is embedding_w and not tied:
            continue
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    frozen_head = head_w.numel() if head_w is not None and not head_w.requires_grad else 0
    return total, trainable, frozen_head


def _count(module: nn.Module, args: tuple, kwargs: dict) -> None:
    tokens = _tokens(args, kwargs)
    if not tokens:
        return
    network = module._criticgym_network or module
    if module._criticgym_sizes is None:  # parameters and freezing are set by now
        module._criticgym_sizes = _sizes(network)
    flops = 2 * module._criticgym_sizes[0] * tokens
    if torch.is_grad_enabled():
        _, trainable, frozen_head = _sizes(network)  # freezing may change between calls; only update passes pay
        if trainable:
            flops += (2 * (trainable + frozen_head) + 2 * trainable) * tokens
    add({_phase.get(): flops})


def track(module: nn.Module, network: nn.Module | None = None) -> nn.Module:
    """Count the FLOPs of ``module``'s calls (idempotent; copies made with ``copy.deepcopy`` stay tracked).

    ``network``: the model whose parameters a call runs through, when ``module`` is a wrapper around it (a
    sentence-transformers module calls its model's ``forward`` directly, which no hook on the model sees).
    """
    if not getattr(module, "_criticgym_tracked", False):
        module._criticgym_tracked = True
        module._criticgym_sizes = None
        module.__dict__["_criticgym_network"] = network  # not a submodule: nn.Module's setattr would register it
        module.register_forward_pre_hook(_count, with_kwargs=True)
    return module
