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
from criticgym.rollout.packed import PackedLinear, layers_gain_from_packing, refresh_all

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
_TRUNK_FLOATS = 2**26  # what train_forward keeps of frozen layers' outputs at most (256 MiB in float32)


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

    Pre-hooks on the model itself, like the FLOP meter's, see the fast path's calls too; transformers' own hooks
    (it installs them to capture hidden states on the first call that asks for them) expect nothing of us.
    """
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *(module._forward_pre_hooks.values() if name else ())]
        if any(not getattr(hook, "__module__", "").startswith("transformers.") for hook in hooks):
            return True
    return False


class _Layer:
    """The packed linears of one decoder layer."""

    def __init__(self, layer: torch.nn.Module, pack: bool | None, fuse: bool) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.module = layer
        self.qkv = PackedLinear([attn.q_proj, attn.k_proj, attn.v_proj], pack, fuse)
        self.o = PackedLinear([attn.o_proj], pack, fuse)
        self.gate_up = PackedLinear([mlp.gate_proj, mlp.up_proj], pack, fuse)
        self.down = PackedLinear([mlp.down_proj], pack, fuse)
        self.q_norm = getattr(attn, "q_norm", None)  # Qwen3 normalizes queries and keys per head
        self.k_norm = getattr(attn, "k_norm", None)


class LlamaForward:
    """A Llama-family model's forward pass over a :class:`KVCache` (no gradients).

    Args:
        model: a transformers model that :func:`fast_path_refusal` accepts.
        pack: pack the weights for oneDNN (None: where it pays: every product on a CPU with AVX-512, the LM
            head alone on one with AVX2 only, see :func:`layers_gain_from_packing`; False: ``F.linear``, which
            ``torch.compile`` can trace). Unpacked products on a CPU use the layers' own weights (no copy); on a
            GPU they are fused per input (fewer kernel launches).
    """

    def __init__(self, model: PreTrainedModel, pack: bool | None = None) -> None:
        reason = fast_path_refusal(model)
        if reason is not None:
            raise ValueError(f"The fast path cannot run this model: {reason}.")
        config = model.config
        # a weak reference: _FORWARDS maps the model to this object, and a strong one would keep both alive forever
        self._model = weakref.ref(model)
        self.base = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scale = self.head_dim**-0.5
        cpu = model.lm_head.weight.device.type == "cpu"
        layer_pack = pack if pack is not None or not cpu or layers_gain_from_packing() else False
        self.layers = [_Layer(layer, layer_pack, not cpu) for layer in self.base.layers[: config.num_hidden_layers]]
        self.lm_head = PackedLinear([model.lm_head], pack)
        self.repacks = 0  # packed products rebuilt because their weights changed
        self.repack_seconds = 0.0
        self._trunks: dict[bytes, torch.Tensor] = {}  # frozen layers' output per sequence (see train_forward)
        self._trunk_signature: tuple = ()

    def __getstate__(self) -> dict:
        """Copies and pickles carry the model itself (``copy.deepcopy`` maps it to the copy's model)."""
        return {**self.__dict__, "_model": self.model}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _model=weakref.ref(state["_model"]))

    @property
    def model(self) -> PreTrainedModel:
        """The model whose parameters this forward runs on."""
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this fast forward was deleted; build one for the model in use.")
        return model

    def linears(self) -> list[PackedLinear]:
        """Every packed product, the LM head last."""
        return [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [self.lm_head]

    def refresh(self) -> None:
        """Repack the weights an optimizer step or a weight sync changed (cheap when none did).

        Under bfloat16 autocast on a CPU (``--precision bf16``) the products compute in bfloat16 from weights
        packed in bfloat16 (the residual stream and the cache stay in the weights' dtype).
        """
        count, seconds = refresh_all(self.linears(), self._compute_dtype())
        if count:
            self.repacks += count
            self.repack_seconds += seconds

    def _compute_dtype(self) -> torch.dtype | None:
        """bfloat16 under CPU autocast, else None (the weights' own dtype)."""
        cpu_bf16 = self.base.embed_tokens.weight.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        return torch.get_autocast_dtype("cpu") if cpu_bf16 else None

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
        x = self._run(ids, mask, positions, cache, self.layers)
        hidden = self.base.norm(x[:, -logits_to_keep:])
        return self.lm_head(hidden), hidden

    def _run(self, ids, mask, positions, cache: KVCache, layers: list[_Layer]) -> torch.Tensor:
        """The hidden states (B, n, H) after ``layers`` (before the final norm), the cache extended."""
        batch, n = ids.shape
        start = cache.length
        end = start + n
        cache.reserve(end)
        # padding is not computed: the linears run on the real tokens only (a prompt batch is a fifth padding)
        new = mask[:, start:end].reshape(-1).bool()
        rows = new.nonzero().squeeze(1) if n > 1 and not bool(new.all()) else None
        x = self.base.embed_tokens(ids.reshape(-1)[rows] if rows is not None else ids)
        cos, sin = self.base.rotary_emb(x, positions)  # (B, n, D) each
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads: (B, n, 1, D)
        bias = _attention_bias(mask[:, :end], start, n, x.dtype)  # (B, 1, 1, n, end)
        for i, layer in enumerate(layers):
            x = self._layer(layer, x, cos, sin, cache.keys[i], cache.values[i], bias, start, end, (batch, n, rows))
        cache.length = end
        if rows is not None:  # back to (B, n, H); padding positions hold zeros
            x = x.new_zeros(batch * n, x.size(-1)).index_copy_(0, rows, x).view(batch, n, -1)
        return x

    def train_forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, logits_to_keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass an update differentiates: (logits (B, k, V), hidden (B, k, H)), with gradients.

        The lowest layers that hold no trainable parameter (``freeze_layers``; the embeddings frozen too) run on
        the packed path without autograd, and their output is kept per sequence: PPO re-scores the same
        sequences every epoch, so they run once per batch, not once per epoch. The trainable layers run as the
        model's own modules; the LM head is one 2-D product over the kept positions, packed when it is frozen
        (tied to frozen embeddings: its input's gradient is ``grad @ W``, and it has no weight gradient).
        """
        _pre_hooks(self.model, ids, mask, positions)
        depth = self.frozen_depth()
        x = self._trunk(ids, mask, positions, depth) if depth else self.base.embed_tokens(ids)
        cos, sin = self.base.rotary_emb(x, positions)
        bias = _attention_bias(mask, 0, ids.size(1), x.dtype)[:, :, 0]  # (B, 1, L, L)
        for layer in self.base.layers[depth : len(self.layers)]:
            x = layer(x, attention_mask=bias, position_ids=positions, position_embeddings=(cos, sin))
        hidden = self.base.norm(x[:, -logits_to_keep:])
        flat = hidden.reshape(-1, hidden.size(-1))
        head = self.lm_head
        if head.pack and not any(p.requires_grad for p in head.parameters()):  # frozen (tied to frozen embeddings)
            head.refresh(self._compute_dtype())
            logits = head.frozen(flat)
        else:
            logits = torch.nn.functional.linear(flat, self.model.lm_head.weight, self.model.lm_head.bias)
        return logits.view(*hidden.shape[:2], -1), hidden

    def frozen_depth(self) -> int:
        """How many of the lowest layers hold no trainable parameter (0 when the embeddings train)."""
        if self.base.embed_tokens.weight.requires_grad:
            return 0
        depth = 0
        for layer in self.base.layers[: len(self.layers)]:
            if any(p.requires_grad for p in layer.parameters()):
                break
            depth += 1
        return depth

    @torch.no_grad()
    def _trunk(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, depth: int) -> torch.Tensor:
        """(B, L, H) after the lowest ``depth`` (frozen) layers, each sequence computed once.

        Kept until the frozen weights change or 256 MiB of them are kept (then the store starts over).
        """
        trunk = self.layers[:depth]
        refresh_all([p for layer in trunk for p in (layer.qkv, layer.o, layer.gate_up, layer.down)])
        signature = (depth, *(layer.qkv.signature for layer in trunk), *(layer.down.signature for layer in trunk))
        kept = sum(t.numel() for t in self._trunks.values())
        if signature != self._trunk_signature or kept + ids.numel() * self.base.config.hidden_size > _TRUNK_FLOATS:
            self._trunks, self._trunk_signature = {}, signature
        keys = [row.numpy().tobytes() for row in torch.cat([ids, mask], dim=1).cpu()]
        missing = [r for r, key in enumerate(keys) if key not in self._trunks]
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            cache = self.new_cache(len(missing), ids.size(1))
            x = self._run(ids[rows], mask[rows], positions[rows], cache, trunk)
            self._trunks.update((keys[r], x[i]) for i, r in enumerate(missing))
        return torch.stack([self._trunks[key] for key in keys])

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
            x = self._layer(layer, x, cos, sin, buffers[i], buffers[count + i], bias, index, None, (*ids.shape, None))
        hidden = self.base.norm(x[:, -1])
        return self.lm_head(hidden), hidden

    def _layer(self, layer, x, cos, sin, keys, values, bias, start, end: int | None, shape) -> torch.Tensor:
        """One decoder layer.

        ``start`` is an int (eager: attend to ``[:end]``) or a (1,) index tensor (static: write there with
        ``index_copy_`` and attend to the whole buffer). ``shape`` is ``(B, n, rows)``: with ``rows`` (the flat
        indices of the real tokens) ``x`` holds those tokens alone, (N, H), and only attention sees the padded
        layout.
        """
        module = layer.module
        batch, n, rows = shape
        qkv = layer.qkv(module.input_layernorm(x))
        if rows is not None:
            qkv = qkv.new_zeros(batch * n, qkv.size(-1)).index_copy_(0, rows, qkv)
        q, k, v = layer.qkv.split(qkv.view(batch, n, -1))
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
        out = out.reshape(batch, n, self.heads * self.head_dim)
        x = x + layer.o(out if rows is None else out.view(batch * n, -1).index_select(0, rows))
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
