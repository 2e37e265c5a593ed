"""Decoding with explicit state: prefill once, then step, fork, select, repeat and crop the KV cache.

A :class:`DecodeState` is everything a causal LM needs to continue B sequences: the KV cache (a transformers
``DynamicCache``), the token ids and attention mask so far (positions follow from the mask), and the next-token
logits (and, on request, the last hidden state). :class:`Decoder` makes one from prompts (:meth:`Decoder.prefill`)
and advances it by a column of tokens (:meth:`Decoder.step`). The state can be

- ``select``-ed: keep some rows (finished episodes dropped, the best candidates kept);
- ``repeat``-ed: each row k times in a row, sharing one prefill (RLOO's k completions, pairwise siblings);
- ``fork``-ed: an independent copy to explore a branch;
- ``crop``-ped: back to an earlier length, with the logits of that point, without re-running the prefix;
- ``rewind``-ed: stepping a state extends its cache in place, and ``rewind`` drops what was added, so the state is
  usable again with no copy at all (a search explores from one committed prefix this way: step, look, rewind).

Every operation gives the logits a fresh prefill of the same tokens gives (tested).

Example:
    >>> from criticgym.rollout import load_policy
    >>> model, tokenizer = load_policy("tiny")
    >>> decoder = Decoder(model, tokenizer.pad_token_id)
    >>> state = decoder.prefill([[1, 2, 3], [4, 5]])
    >>> state = decoder.step(state, torch.tensor([7, 8]))
    >>> state.length, tuple(state.logits.shape)
    (4, (2, 49152))
    >>> state.crop(3).length
    3
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING

import torch

from criticgym.errors import ConfigError
from criticgym.rollout.kvcache import HFCache, KVCache
from criticgym.rollout.llama import LlamaForward, expects_forward, fast_forward_for, fast_path_refusal

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class DecodeState:
    """B sequences ready for their next token.

    :meth:`Decoder.step` extends the cache in place, so the state it was given is used up; ``select``,
    ``repeat``, ``fork`` and ``crop`` copy the cache and leave their source usable.
    """

    cache: KVCache | HFCache  # keys and values of every position fed so far
    ids: torch.Tensor  # (B, L) long: prompt (left-padded) and generated tokens so far
    mask: torch.Tensor  # (B, L) long: 1 on real tokens
    logits: torch.Tensor  # (B, V) float32: the next-token logits
    hidden: torch.Tensor | None  # (B, H): the last hidden state that produced the logits (when asked for)
    decoder: Decoder

    @property
    def batch_size(self) -> int:
        """Number of rows."""
        return self.ids.size(0)

    @property
    def length(self) -> int:
        """Positions so far (prompt width plus generated tokens), the same for every row."""
        return self.ids.size(1)

    def select(self, rows: torch.Tensor | Sequence[int]) -> DecodeState:
        """Keep ``rows`` (indices, in the given order; repeats allowed). The cache is copied, not shared."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.ids.device)
        return replace(
            self,
            cache=self.cache.select(rows),
            ids=self.ids[rows],
            mask=self.mask[rows],
            logits=self.logits[rows],
            hidden=None if self.hidden is None else self.hidden[rows],
        )

    def repeat(self, k: int) -> DecodeState:
        """Each row ``k`` times in a row (rows 0..k-1 continue row 0): k continuations of one prefill."""
        if k < 1:
            raise ConfigError(f"repeat() needs k >= 1, got {k}.")
        return replace(
            self,
            cache=self.cache.repeat(k),
            ids=self.ids.repeat_interleave(k, dim=0),
            mask=self.mask.repeat_interleave(k, dim=0),
            logits=self.logits.repeat_interleave(k, dim=0),
            hidden=None if self.hidden is None else self.hidden.repeat_interleave(k, dim=0),
        )

    def fork(self) -> DecodeState:
        """An independent copy: stepping either leaves the other as it was."""
        return replace(self, cache=self.cache.copy())

    def crop(self, length: int) -> DecodeState:
        """Back to the first ``length`` positions (at least one), with that point's next-token logits.

        The cache keeps ``length - 1`` positions and the token at ``length - 1`` is fed again: one step of one
        token instead of re-running the prefix. The cache is copied, so the longer state stays usable.
        """
        if not 1 <= length <= self.length:
            raise ConfigError(f"crop() needs 1 <= length <= {self.length}, got {length}.")
        if length == self.length:
            return self.fork()
        cache = self.cache.copy()
        cache.truncate(length - 1)
        shorter = replace(self, cache=cache, ids=self.ids[:, : length - 1], mask=self.mask[:, : length - 1])
        return self.decoder.step(shorter, self.ids[:, length - 1], self.mask[:, length - 1])

    def rewind(self) -> DecodeState:
        """Undo, in place, every step taken from this state: the cache drops the positions beyond ``length``.

        States stepped from this one share its cache and are invalid afterwards. No copy, no forward pass.
        """
        self.cache.truncate(self.length)
        return self


class Decoder:
    """Prefill and one-column steps of a causal LM, on explicit :class:`DecodeState` objects (no gradients).

    Two paths run the model. The fast one (:class:`~criticgym.rollout.llama.LlamaForward`, the Llama family:
    SmolLM2, Llama, Mistral, Qwen2/3) packs the weights for oneDNN, fuses the linears that share an input and
    writes a preallocated cache in place; the transformers forward with its ``DynamicCache`` runs every other
    model. Both give the same logits up to float rounding.

    Args:
        model: any transformers causal LM.
        pad_id: the id used for left padding of prompts.
        hidden: also keep the last hidden state of each step (for a value head).
        path: ``"auto"`` (the fast path where the model allows it), ``"fast"`` (an error where it does not) or
            ``"hf"`` (the transformers forward, always).
        compile: run each one-token step of the fast path as one ``torch.compile``-d graph with static shapes
            (``fullgraph``, one graph per batch size and cache size; CUDA graphs on CUDA). A backend name instead of
            True picks that ``torch.compile`` backend. On a CPU the packed eager path is faster (``make bench``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        pad_id: int,
        hidden: bool = False,
        path: str = "auto",
        compile: bool | str = False,
    ) -> None:
        self.model = model
        self.pad_id = pad_id
        self.hidden = hidden
        self.device = next(model.parameters()).device
        self.fast = choose_forward(model, path)
        self.path = "fast" if self.fast is not None else "hf"
        self.compiled = _compiled_step(self.fast, compile, self.device)
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model  # peft
        self.cache_keyword = _cache_keyword(type(base))

    @torch.no_grad()
    def prefill(
        self,
        prompts: Sequence[Sequence[int]] | torch.Tensor,
        mask: torch.Tensor | None = None,
        capacity: int | None = None,
    ) -> DecodeState:
        """Run the prompts (token-id lists, or left-padded ``(ids, mask)`` tensors) in one pass.

        Vocabulary logits are computed for the last position only. ``capacity``: the positions the state will
        reach (prompt and new tokens), so that the fast path's cache never grows (it grows by doubling if it must).
        """
        if isinstance(prompts, torch.Tensor):
            ids = prompts.to(self.device)
            mask = torch.ones_like(ids) if mask is None else mask.to(self.device)
        else:
            ids, mask = left_pad(prompts, self.pad_id, self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        if self.fast is not None and not expects_forward(self.model):
            self.fast.refresh()  # weights an optimizer step or a sync changed since the last rollout
            capacity = max(capacity or ids.size(1) + _GROWTH, ids.size(1))
            if self.compiled is not None:
                capacity = -(-capacity // _GROWTH) * _GROWTH  # a few cache sizes: a few compiled graphs
            cache = self.fast.new_cache(ids.size(0), capacity)
        else:
            from transformers import DynamicCache

            cache = HFCache(DynamicCache(config=self.model.config))
        return self._forward(cache, ids, mask, positions, ids, mask)

    def step(self, state: DecodeState, tokens: torch.Tensor, real: torch.Tensor | None = None) -> DecodeState:
        """Feed one token per row; ``real`` (B,) marks rows whose token counts (0: padding, masked out)."""
        tokens = torch.as_tensor(tokens)
        return self.extend(state, tokens[:, None], None if real is None else torch.as_tensor(real)[:, None])

    @torch.no_grad()
    def extend(self, state: DecodeState, tokens: torch.Tensor, real: torch.Tensor | None = None) -> DecodeState:
        """Feed several tokens per row in one forward pass.

        ``tokens`` is (B, n); ``real`` (B, n) marks the ones that count (0: padding, masked out; pad at the start
        of a row's chunk so that its last position is real).

        The cache grows in place, as with :meth:`step`; the logits are those after each row's last token.
        """
        tokens = tokens.to(self.device).long()
        if tokens.dim() != 2 or tokens.size(0) != state.batch_size:
            raise ConfigError(f"extend() needs tokens of shape ({state.batch_size}, n), got {tuple(tokens.shape)}.")
        real = torch.ones_like(tokens) if real is None else real.to(self.device).long()
        mask = torch.cat([state.mask, real], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -tokens.size(1) :]
        return self._forward(state.cache, tokens, mask, positions, torch.cat([state.ids, tokens], dim=1), mask)

    def _forward(self, cache, tokens, mask, positions, ids, full_mask) -> DecodeState:
        """Feed ``tokens`` into ``cache`` (extended in place) and wrap the result as the state of ``ids``."""
        if isinstance(cache, KVCache) and self.compiled is not None and tokens.size(1) == 1:
            logits, hidden = self._static_step(cache, tokens, mask, positions)
            return DecodeState(cache, ids, full_mask, logits.float(), hidden if self.hidden else None, self)
        if isinstance(cache, KVCache):
            logits, hidden = self.fast(tokens, mask, positions, cache)
            hidden = hidden[:, -1, :] if self.hidden else None
            return DecodeState(cache, ids, full_mask, logits[:, -1, :].float(), hidden, self)
        out = self.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=self.hidden,
            logits_to_keep=1,
            **{self.cache_keyword: cache.hf},
        )
        hf = getattr(out, "cache", None)
        cache.hf = hf if hf is not None else out.past_key_values
        hidden = out.hidden_states[-1][:, -1, :] if self.hidden else None
        return DecodeState(cache, ids, full_mask, out.logits[:, -1, :].float(), hidden, self)

    def _static_step(self, cache: KVCache, tokens, mask, positions) -> tuple[torch.Tensor, torch.Tensor]:
        start = cache.length
        cache.reserve(start + 1)
        valid = torch.zeros((tokens.size(0), cache.capacity), dtype=torch.bool, device=self.device)
        valid[:, : start + 1] = mask.bool()
        index = torch.tensor([start], device=self.device)
        out = self.compiled(tokens.contiguous(), positions.contiguous(), valid, index, *cache.keys, *cache.values)
        cache.length = start + 1
        return out


def _compiled_step(fast: LlamaForward | None, compile: bool | str, device: torch.device):
    """The fast forward's static step compiled, or None when not compiling.

    The graph calls each packed product as one opaque operator (:mod:`criticgym.rollout.packed`), so it runs on
    the same packed weights as the eager path and reads them as they are after a repack.
    """
    if not compile:
        return None
    if fast is None:
        raise ConfigError("compile=True needs the fast decode path (a Llama-family model); use compile=False.")
    backend = compile if isinstance(compile, str) else "inductor"
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    return torch.compile(fast.static_step, fullgraph=True, dynamic=False, backend=backend, mode=mode)


_GROWTH = 64  # room a prefill leaves for new tokens when the caller does not say how many


def choose_forward(model: PreTrainedModel, path: str) -> LlamaForward | None:
    """The fast path for ``model``, or None for the transformers forward (see :class:`Decoder`).

    ``auto`` defers to ``$CRITICGYM_DECODE`` when it is set: ``CRITICGYM_DECODE=hf`` runs any program (a training
    run, a benchmark's baseline) on the transformers forward without changing its code.
    """
    if path == "auto":
        path = os.environ.get("CRITICGYM_DECODE", "auto")
    if path not in ("auto", "fast", "hf"):
        raise ConfigError(f"Unknown decode path {path!r} (path= or $CRITICGYM_DECODE); use auto, fast or hf.")
    if path == "hf":
        return None
    fast = fast_forward_for(model)
    if fast is None and path == "fast":
        reason = fast_path_refusal(model)
        raise ConfigError(f"The fast decode path cannot run this model: {reason}. Use path='auto' or 'hf'.")
    return fast


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token-id lists into a left-padded ``(ids, mask)`` pair of shape (B, max_len)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


@cache
def _cache_keyword(forward_type: type) -> str:
    """The keyword of a model's forward for the KV cache: ``cache``, or ``past_key_values`` before the rename."""
    parameters = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
