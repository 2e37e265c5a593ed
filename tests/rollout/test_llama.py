"""The fast Llama-family path: transformers' logits within 1e-4, weights repacked when they change, and the
transformers forward wherever the fast path cannot go."""

from __future__ import annotations

import pytest
import torch

from criticgym.errors import ConfigError
from criticgym.rollout import SamplingParams
from criticgym.rollout.decoder import Decoder
from criticgym.rollout.engine import score_completions
from criticgym.rollout.kvcache import HFCache, KVCache
from criticgym.rollout.llama import fast_path_refusal
from criticgym.rollout.packed import PackedLinear, onednn_packing

SAMPLING = SamplingParams(temperature=0.8, top_p=0.9)
PROMPTS = [[10, 20, 30, 40, 50, 60, 70], [50, 60], [70, 80, 90], [11, 12, 13, 14]]


def random_model(kind: str, layers: int = 2):
    """A randomly initialized model of a family: SmolLM2's shapes (grouped-query attention), Qwen2's (biased q, k,
    v), Qwen3's (per-head q and k norms), or GPT-2 (not a family the fast path runs)."""
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=500, num_hidden_layers=layers, max_position_embeddings=256)
    if kind == "smollm2":
        config = transformers.LlamaConfig(
            hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
            rope_theta=100000.0, tie_word_embeddings=True, **common,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(
            hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, **common
        )
        model = transformers.Qwen2ForCausalLM(config)
    elif kind == "qwen3":
        config = transformers.Qwen3Config(
            hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32, **common
        )
        model = transformers.Qwen3ForCausalLM(config)
    else:
        config = transformers.GPT2Config(n_embd=64, n_layer=layers, n_head=4, vocab_size=500, n_positions=256)
        model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # sharper than the default initialization: logits that depend on every position
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    return model.eval()


@pytest.mark.parametrize("kind", ["smollm2", "qwen2", "qwen3"])
def test_fast_path_equals_transformers_over_a_prefill_and_20_steps(kind):
    model = random_model(kind)
    fast, hf = (Decoder(model, 0, hidden=True, path=p) for p in ("fast", "hf"))
    a, b = fast.prefill(PROMPTS, capacity=12), hf.prefill(PROMPTS)  # capacity < 27: the cache grows on the way
    assert isinstance(a.cache, KVCache) and isinstance(b.cache, HFCache)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(20):
        torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.hidden, b.hidden, atol=1e-4, rtol=1e-4)
        worst = max(worst, float((a.logits - b.logits).abs().max()))
        tokens = torch.randint(0, 500, (len(PROMPTS),), generator=g)
        a, b = fast.step(a, tokens), hf.step(b, tokens)
    assert a.cache.capacity >= a.length > 12
    assert worst > 0  # two different computations, equal up to float rounding


@pytest.mark.parametrize("kind", ["smollm2", "qwen3"])
def test_fast_scoring_equals_transformers_scoring(kind):
    model = random_model(kind)
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    completion, completion_mask = torch.tensor([[8, 9, 0], [6, 7, 8]]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    with torch.no_grad():  # no gradients: the fast path
        fast, fast_hidden = score_completions(model, ids, mask, completion, completion_mask, SAMPLING, True)
    hf, hf_hidden = score_completions(model, ids, mask, completion, completion_mask, SAMPLING, True)  # grads
    torch.testing.assert_close(fast, hf.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_hidden, hf_hidden.detach(), atol=1e-4, rtol=1e-4)


def test_an_optimizer_step_is_repacked_before_the_next_rollout_and_frozen_layers_are_not():
    model = random_model("smollm2", layers=3)
    for p in model.model.layers[0].parameters():
        p.requires_grad_(False)  # the lower layer frozen, as the demo freezes 20 of 30
    model.model.embed_tokens.weight.requires_grad_(False)
    fast, hf = Decoder(model, 0, path="fast"), Decoder(model, 0, path="hf")
    before = fast.prefill(PROMPTS).logits
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(torch.tensor(PROMPTS[:1])).logits.pow(2).mean()
    loss.backward()
    optimizer.step()
    repacks = fast.fast.repacks
    after = fast.prefill(PROMPTS).logits
    assert fast.fast.repacks - repacks == 2 * 4  # layers 1 and 2, four packed products each; not layer 0, not the head
    torch.testing.assert_close(after, hf.prefill(PROMPTS).logits, atol=1e-4, rtol=1e-4)
    assert (after - before).abs().max() > 1e-2  # the update shows


def test_models_the_fast_path_cannot_run_take_the_transformers_path():
    from peft import LoraConfig, get_peft_model

    gpt2 = random_model("gpt2")
    assert "gpt2" in fast_path_refusal(gpt2)
    assert Decoder(gpt2, 0).path == "hf"
    with pytest.raises(ConfigError, match="cannot run this model.*gpt2.*path='auto' or 'hf'"):
        Decoder(gpt2, 0, path="fast")
    lora = get_peft_model(random_model("qwen2"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert Decoder(lora, 0).path == "hf"
    assert "wrapped" in fast_path_refusal(lora.get_base_model())


def test_a_forward_hook_sends_the_call_through_transformers():
    model = random_model("qwen2")
    decoder = Decoder(model, 0)
    assert isinstance(decoder.prefill(PROMPTS).cache, KVCache)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        state = decoder.step(decoder.prefill(PROMPTS), torch.tensor([1, 2, 3, 4]))
    finally:
        handle.remove()
    assert isinstance(state.cache, HFCache) and len(seen) == 2  # the hook saw the prefill and the step


def test_the_compiled_step_is_one_graph_for_every_step_and_equals_eager(monkeypatch):
    import torch._dynamo

    model = random_model("smollm2")
    torch._dynamo.reset()
    compiled, eager = Decoder(model, 0, compile="eager"), Decoder(model, 0, path="fast")
    a, b = compiled.prefill(PROMPTS, capacity=30), eager.prefill(PROMPTS, capacity=30)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a step that needs a new graph fails the test
        for t in range(8):
            tokens = torch.full((len(PROMPTS),), 7 + t)
            a, b = compiled.step(a, tokens), eager.step(b, tokens)
            torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
        assert a.cache.capacity == 64  # rounded up: prompt widths that differ a little share a graph
        if onednn_packing():  # the graph calls the packed products (4 per layer and the head) as they are
            calls = []
            product = PackedLinear.product
            monkeypatch.setattr(PackedLinear, "product", lambda self, x: calls.append(1) or product(self, x))
            compiled.step(a, tokens)
            assert len(calls) == 2 * 4 + 1
        with torch.no_grad():  # an optimizer step: the next rollout repacks, and the same graph reads the new weights
            model.model.layers[1].mlp.down_proj.weight.mul_(0.5)
        a, b = compiled.prefill(PROMPTS, capacity=30), eager.prefill(PROMPTS, capacity=30)
        a, b = compiled.step(a, torch.full((4,), 3)), eager.step(b, torch.full((4,), 3))
        torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
        hf = Decoder(model, 0, path="hf")
        torch.testing.assert_close(
            a.logits, hf.step(hf.prefill(PROMPTS), torch.full((4,), 3)).logits, atol=1e-4, rtol=1e-4
        )


def test_cpu_bfloat16_autocast_packs_bfloat16_weights_and_stays_near_float32():
    model = random_model("smollm2")
    decoder = Decoder(model, 0, path="fast")
    exact = decoder.prefill(PROMPTS).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = decoder.prefill(PROMPTS).logits
    assert decoder.fast.lm_head.dtype == torch.bfloat16
    gap = (half.log_softmax(-1) - exact.log_softmax(-1)).abs()
    assert 0 < gap.mean() < 0.1  # bfloat16 products: a small, nonzero gap
    torch.testing.assert_close(decoder.prefill(PROMPTS).logits, exact)  # back in float32: repacked as it was


@pytest.mark.parametrize("path", ["auto", "hf"])
def test_scoring_an_empty_completion_gives_empty_log_probs_and_hidden_states(path, monkeypatch):
    monkeypatch.setenv("CRITICGYM_DECODE", path)
    model = random_model("smollm2")
    ids, mask = torch.tensor([[0, 5, 6], [1, 2, 3]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    empty = torch.zeros(2, 0, dtype=torch.long)
    logprobs, hidden = score_completions(model, ids, mask, empty, empty, SAMPLING, True)
    assert logprobs.shape == (2, 0) and hidden.shape == (2, 0, 576)


@pytest.mark.parametrize("frozen", [0, 2])
def test_the_update_forward_equals_transformers_in_values_and_gradients(frozen, monkeypatch):
    """With gradients, frozen lower layers run packed (kept per sequence) and the rest as the model's modules:
    the same log-probs and the same gradients as the transformers forward."""
    from criticgym.utils.training import freeze_lower_layers

    model = random_model("smollm2", layers=3)
    freeze_lower_layers(model, frozen)
    ids, mask = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    completion, completion_mask = torch.tensor([[8, 9, 0], [6, 7, 8]]), torch.tensor([[1, 1, 0], [1, 1, 1]])

    def logprobs_and_grads(path):
        monkeypatch.setenv("CRITICGYM_DECODE", path)
        model.zero_grad()
        out, hidden = score_completions(model, ids, mask, completion, completion_mask, SAMPLING, True)
        (out.sum() + hidden.pow(2).mean()).backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    for _ in range(2):  # the second call reads the frozen layers' output from what the first kept
        fast, fast_grads = logprobs_and_grads("auto")
        hf, hf_grads = logprobs_and_grads("hf")
        torch.testing.assert_close(fast, hf, atol=1e-4, rtol=1e-4)
        for a, b in zip(fast_grads, hf_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    from criticgym.rollout.llama import fast_forward_for

    assert fast_forward_for(model).frozen_depth() == frozen
    assert len(fast_forward_for(model)._trunks) == (2 if frozen else 0)


def test_without_onednn_packing_the_fused_weights_go_through_f_linear(monkeypatch):
    """Another CPU or CUDA: no packed product, the same logits through F.linear."""
    from criticgym.rollout import llama, packed

    model = random_model("qwen2")
    expected = Decoder(model, 0, path="hf").prefill(PROMPTS).logits
    monkeypatch.setattr(packed, "onednn_packing", lambda dtype=torch.float32: False)
    forward = llama.LlamaForward(model)
    assert not any(linear.packed for linear in forward.linears())
    monkeypatch.setattr(llama, "fast_forward_for", lambda model: forward)
    monkeypatch.setattr("criticgym.rollout.decoder.fast_forward_for", lambda model: forward)
    decoder = Decoder(model, 0, path="fast")
    assert decoder.fast is forward
    torch.testing.assert_close(decoder.prefill(PROMPTS).logits, expected, atol=1e-4, rtol=1e-4)


def test_on_an_avx2_cpu_only_the_lm_head_is_packed_and_the_layers_hold_no_copy(monkeypatch):
    """Where packing does not pay for the layers (AVX2 only), their products read the layers' own weights: no
    packed or concatenated copy, and the same logits."""
    from criticgym.rollout import llama

    model = random_model("qwen2")  # biased q, k and v: the unfused products add each layer's bias
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()
    expected = Decoder(model, 0, path="hf").prefill(PROMPTS).logits
    monkeypatch.setattr(llama, "layers_gain_from_packing", lambda: False)
    forward = llama.LlamaForward(model)
    layers = [p for p in forward.linears() if p is not forward.lm_head]
    assert not any(p.packed for p in layers) and sum(p.held_bytes() for p in layers) == 0
    assert forward.lm_head.packed == onednn_packing()
    monkeypatch.setattr("criticgym.rollout.decoder.fast_forward_for", lambda model: forward)
    decoder = Decoder(model, 0, path="fast")
    state = decoder.prefill(PROMPTS)
    torch.testing.assert_close(state.logits, expected, atol=1e-4, rtol=1e-4)
    hf = Decoder(model, 0, path="hf")
    reference = hf.prefill(PROMPTS)
    for token in (3, 4, 5):
        tokens = torch.full((len(PROMPTS),), token)
        state, reference = decoder.step(state, tokens), hf.step(reference, tokens)
        torch.testing.assert_close(state.logits, reference.logits, atol=1e-4, rtol=1e-4)


def test_unfused_products_equal_the_fused_product_and_hold_nothing():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, n, bias=b) for n, b in ((5, True), (3, False), (4, True))]
    fused, own = PackedLinear(layers, pack=False), PackedLinear(layers, pack=False, fuse=False)
    x = torch.randn(6, 8)
    torch.testing.assert_close(own(x), fused(x))
    torch.testing.assert_close(own(x), torch.cat([layer(x) for layer in layers], dim=-1))
    assert own.held_bytes() == 0 and fused.held_bytes() == 4 * (12 * 8 + 12)
    with torch.no_grad():
        layers[1].weight.add_(1.0)  # an optimizer step: the unfused product reads it at once, the fused one on refresh
    torch.testing.assert_close(own(x), torch.cat([layer(x) for layer in layers], dim=-1))
    assert fused.refresh()
    torch.testing.assert_close(fused(x), own(x))


def test_a_frozen_product_differentiates_its_input_and_refuses_trainable_weights():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight.requires_grad_(False)
    packed = PackedLinear([head])
    x = torch.randn(4, 8, requires_grad=True)
    packed.frozen(x).pow(2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    head(x).pow(2).sum().backward()
    torch.testing.assert_close(grad, x.grad)
    head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="weight gradients"):
        packed.frozen(x)


def test_transformers_own_hooks_do_not_send_later_calls_through_transformers():
    """transformers installs output-capturing hooks on the first call that asks for hidden states; a fast-path
    decoder made afterwards must still take the fast path."""
    model = random_model("smollm2")
    Decoder(model, 0, hidden=True, path="hf").prefill(PROMPTS)  # installs transformers' hooks
    assert isinstance(Decoder(model, 0, hidden=True).prefill(PROMPTS).cache, KVCache)


def test_an_engine_on_the_fast_path_deep_copies_and_the_copy_packs_its_own_weights():
    import copy

    model = random_model("qwen2")
    decoder = Decoder(model, 0)
    expected = decoder.prefill(PROMPTS).logits
    twin = copy.deepcopy(decoder)  # gym.make copies its kwargs (a SELF solver holds an engine)
    assert twin.fast.lm_head.weight is None and twin.fast.model is not model
    torch.testing.assert_close(twin.prefill(PROMPTS).logits, expected)


def test_a_deleted_model_frees_its_fast_forward_and_packed_weights():
    """The per-model cache must not keep a model alive: a frontier loads dozens of policies in one process."""
    import gc
    import weakref

    from criticgym.rollout import llama

    model = random_model("qwen2")
    Decoder(model, 0).prefill(PROMPTS)
    forward = llama.fast_forward_for(model)
    assert forward is not None and forward.model is model
    gone, forward_gone = weakref.ref(model), weakref.ref(forward)
    del model, forward
    gc.collect()
    assert gone() is None and forward_gone() is None
