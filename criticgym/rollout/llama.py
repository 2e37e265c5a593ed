"""The fast forward pass for the Llama family (Llama, SmolLM2, Mistral, Qwen2, Qwen3), in the nanoGPT style.

:class:`LlamaForward` runs a transformers Llama-family model with the model's own parameters (nothing is copied
but the packed weights): packed, fused linears (:mod:`criticgym.rollout.packed`), a preallocated
:class:`~criticgym.rollout.kvcache.KVCache` written in place, grouped-query attention without repeating the keys,
and the LM head on the positions asked for only. The model's own norms, activation and rotary embedding modules
are called as they are, so every RoPE variant transformers knows works unchanged.

:func:`fast_path_refusal` says why a model cannot take this path (None when it can); the decoder then uses the
transformers forward. Logits equal transformers' up to float rounding (tested within 1e-4 over a prefill and
20 steps).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch

from criticgym.rollout.kvcache import KVCache
from criticgym.rollout.packed import PackedLinear, refresh_all

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def fast_path_refusal(model: PreTrainedModel) -> str | None:
    """Why ``model`` cannot use :class:`LlamaForward` (None: it can)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        return f"its architecture {kind!r} is not one of {', '.join(FAMILIES)}"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", kind == "mistral"):
        return "it uses sliding-window attention"
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None or not isinstance(getattr(model, "lm_head", None), torch.nn.Linear):
        return "it does not have the layout model.layers / lm_head"
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    for layer in layers:
        linears = [getattr(layer.self_attn, n) for n in names]
        linears += [getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
        if any(type(m) is not torch.nn.Linear for m in linears):
            return "its linear layers are wrapped (LoRA adapters or quantized layers)"
    return None


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fast_forward_for(model: PreTrainedModel) -> LlamaForward | None:
    """The model's :class:`LlamaForward` (one per model: its packed weights exist once), or None if refused."""
    if model not in _FORWARDS:
        _FORWARDS[model] = LlamaForward(model) if fast_path_refusal(model) is None else None
    return _FORWARDS[model]


def expects_forward(model: torch.nn.Module) -> bool:
    """Whether a hook expects the transformers forward: a forward hook anywhere, or a pre-hook below the top.

    Pre-hooks on the model itself, like the FLOP meter's, see the fast path's calls too.
    """
    return any(m._forward_hooks or (name and m._forward_pre_hooks) for name, m in model.named_modules())


class _Layer:
    """The packed linears of one decoder layer."""

    def __init__(self, layer: torch.nn.Module, pack: bool | None) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.module = layer
        self.qkv = PackedLinear([attn.q_proj, attn.k_proj, attn.v_proj], pack)
        self.o = PackedLinear([attn.o_proj], pack)
        self.gate_up = PackedLinear([mlp.gate_proj, mlp.up_proj], pack)
        self.down = PackedLinear([mlp.down_proj], pack)
        self.q_norm = getattr(attn, "q_norm", None)  # Qwen3 normalizes queries and keys per head
        self.k_norm = getattr(attn, "k_norm", None)


class LlamaForward:
    """A Llama-family model's forward pass over a :class:`KVCache` (no gradients).

    Args:
        model: a transformers model that :func:`fast_path_refusal` accepts.
        pack: pack the weights for oneDNN (None: where the machine has it; False: fused ``F.linear`` weights, which
            ``torch.compile`` can trace).
    """

    def __init__(self, model: PreTrainedModel, pack: bool | None = None) -> None:
        reason = fast_path_refusal(model)
        if reason is not None:
            raise ValueError(f"The fast path cannot run this model: {reason}.")
        config = model.config
        self.model = model
        self.base = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim**-0.5
        self.layers = [_Layer(layer, pack) for layer in self.base.layers[: config.num_hidden_layers]]
        self.lm_head = PackedLinear([model.lm_head], pack)
        self.repacks = 0  # packed products rebuilt because their weights changed
        self.repack_seconds = 0.0

    def linears(self) -> list[PackedLinear]:
        """Every packed product, the LM head last."""
        return [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [self.lm_head]

    def refresh(self) -> None:
        """Repack the weights an optimizer step or a weight sync changed (cheap when none did)."""
        count, seconds = refresh_all(self.linears())
        if count:
            self.repacks += count
            self.repack_seconds += seconds

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache for ``batch`` rows and ``capacity`` positions."""
        like = self.base.embed_tokens.weight
        return KVCache.empty(len(self.layers), batch, self.kv_heads, capacity, self.head_dim, like)

    @torch.no_grad()
    def __call__(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        logits_to_keep: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``ids`` (B, n) at the cache's next positions: (logits, hidden) of the last ``logits_to_keep``.

        Shapes (B, k, V) and (B, k, H), the hidden state after the final norm.

        ``mask`` (B, cache.length + n) marks real tokens (padding is never attended to); ``positions`` (B, n) are
        the rotary positions.
        """
        _pre_hooks(self.model, ids, mask, positions)
        batch, n = ids.shape
        start = cache.length
        end = start + n
        cache.reserve(end)
        x = self.base.embed_tokens(ids)
        cos, sin = self.base.rotary_emb(x, positions)  # (B, n, D) each
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads: (B, n, 1, D)
        bias = _attention_bias(mask[:, :end], start, n, x.dtype)  # (B, 1, 1, n, end)
        for i, layer in enumerate(self.layers):
            x = self._layer(layer, x, cos, sin, cache.keys[i], cache.values[i], bias, start, end)
        cache.length = end
        hidden = self.base.norm(x[:, -logits_to_keep:])
        return self.lm_head(hidden), hidden

    def static_step(
        self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, index: torch.Tensor, *buffers
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode column with static shapes, for ``torch.compile``: (logits (B, V), hidden (B, H)).

        ``ids``, ``positions`` (B, 1); ``valid`` (B, capacity) bool, the keys a row may see (its real tokens up
        to and including this one); ``index`` (1,) long, the cache position written; ``buffers``: every layer's
        key buffer, then every layer's value buffer, written in place. Attention runs over the whole capacity
        (the invalid part masked), so no shape depends on how far decoding has gone: one graph serves every step.
        """
        x = self.base.embed_tokens(ids)
        cos, sin = self.base.rotary_emb(x, positions)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        bias = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~valid, torch.finfo(x.dtype).min / 2
        )
        bias = bias[:, None, None, None, :]
        count = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = self._layer(layer, x, cos, sin, buffers[i], buffers[count + i], bias, index, None)
        hidden = self.base.norm(x[:, -1])
        return self.lm_head(hidden), hidden

    def _layer(self, layer, x, cos, sin, keys, values, bias, start, end: int | None) -> torch.Tensor:
        """One decoder layer.

        ``start`` is an int (eager: attend to ``[:end]``) or a (1,) index tensor (static: write there with
        ``index_copy_`` and attend to the whole buffer).
        """
        module = layer.module
        batch, n, _ = x.shape
        q, k, v = layer.qkv.split(layer.qkv(module.input_layernorm(x)))
        q = q.view(batch, n, self.heads, self.head_dim)
        k = k.view(batch, n, self.kv_heads, self.head_dim)
        if layer.q_norm is not None:
            q, k = layer.q_norm(q), layer.k_norm(k)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        v = v.view(batch, n, self.kv_heads, self.head_dim).transpose(1, 2)
        if end is None:  # static shapes: one position, given as a tensor
            keys.index_copy_(2, start, k.transpose(1, 2))
            values.index_copy_(2, start, v)
        else:
            keys[:, :, start:end] = k.transpose(1, 2)
            values[:, :, start:end] = v
            keys, values = keys[:, :, :end], values[:, :, :end]
        end = keys.size(2)
        group = self.heads // self.kv_heads
        # queries grouped by the key head they share: (B, H_kv, group * n, D), no repeated keys
        q = q.view(batch, n, self.kv_heads, group, self.head_dim).permute(0, 2, 3, 1, 4)
        q = q.reshape(batch, self.kv_heads, group * n, self.head_dim)
        scores = torch.matmul(q, keys.transpose(2, 3)) * self.scale  # (B, H_kv, group * n, end)
        scores = scores.view(batch, self.kv_heads, group, n, end) + bias
        probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype).view(batch, self.kv_heads, group * n, end)
        out = torch.matmul(probs, values)  # (B, H_kv, group * n, D)
        out = out.view(batch, self.kv_heads, group, n, self.head_dim).permute(0, 3, 1, 2, 4)
        x = x + layer.o(out.reshape(batch, n, self.heads * self.head_dim))
        gate, up = layer.gate_up.split(layer.gate_up(module.post_attention_layernorm(x)))
        return x + layer.down(module.mlp.act_fn(gate) * up)


def _pre_hooks(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> None:
    """Call the model's forward pre-hooks (the FLOP meter's among them) as its own forward would."""
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    for key, hook in model._forward_pre_hooks.items():
        if key in model._forward_pre_hooks_with_kwargs:
            hook(model, (), kwargs)
        else:
            hook(model, (ids,))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attention_bias(mask: torch.Tensor, start: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, n, end) additive bias: 0 where query i (cache index start + i) may see key j, else very negative.

    Keys that are padding or in the future are hidden. Finite, so a padding query's row stays a number.
    """
    end = mask.size(1)
    keys = torch.arange(end, device=mask.device)
    queries = torch.arange(start, start + n, device=mask.device)
    allowed = (keys[None, :] <= queries[:, None])[None] & mask[:, None, :].bool()  # (B, n, end)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min / 2)  # / 2: adding a score stays finite
    return bias[:, None, None]
