from __future__ import annotations

import pytest
import torch

import criticgym
from criticgym.errors import ConfigError, PromptTooLongError
from criticgym.rollout import GREEDY, RolloutEngine, SamplingParams, filter_logits, left_pad, sequence_logprobs
from criticgym.sources import play

PROMPTS = [
    "The movie was",
    "I think that this film is a",
    "Bad",
    "An utterly charming and funny tale of two brothers who",
    "Hello there",
    "Nothing",
    "A long, slow, meandering and yet strangely compelling",
    "Why",
]


def hf_generate(model, tokenizer, prompts, max_new_tokens):
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    ids, mask = left_pad(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[:, ids.shape[1] :]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_equals_model_generate(sharp, batch_size):
    model, tokenizer = sharp
    prompts = PROMPTS[:batch_size]
    batch = RolloutEngine(model, tokenizer).generate(prompts, max_new_tokens=12, sampling=GREEDY)
    reference = hf_generate(model, tokenizer, prompts, 12)
    for row in range(batch_size):
        n = int(batch.lengths[row])
        assert torch.equal(batch.completion_ids[row, :n], reference[row, :n])
    assert len(set(batch.completion_ids[:, -1].tolist())) > 1 or batch_size == 1  # not a degenerate model


def test_batch_shapes_masks_and_padding(sharp):
    model, tokenizer = sharp
    batch = RolloutEngine(model, tokenizer).generate(PROMPTS[:4], max_new_tokens=6, seed=0)
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in PROMPTS[:4]]
    width = max(lengths)
    assert batch.prompt_ids.shape == batch.prompt_mask.shape == (4, width)
    assert batch.completion_ids.shape == batch.logprobs.shape == (4, 6)
    # prompts are left-padded: the mask is a run of zeros then ones
    for row, n in enumerate(lengths):
        assert batch.prompt_mask[row].tolist() == [0] * (width - n) + [1] * n
    assert (batch.logprobs <= 0).all()
    assert batch.values is None and batch.ref_logprobs is None and batch.rewards is None


def test_sampling_is_seeded(sharp):
    model, tokenizer = sharp
    engine = RolloutEngine(model, tokenizer)
    a = engine.generate(PROMPTS, max_new_tokens=8, seed=3)
    b = engine.generate(PROMPTS, max_new_tokens=8, seed=3)
    c = engine.generate(PROMPTS, max_new_tokens=8, seed=4)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_top_k_one_is_greedy(sharp):
    model, tokenizer = sharp
    engine = RolloutEngine(model, tokenizer)
    greedy = engine.generate(PROMPTS, max_new_tokens=8, sampling=GREEDY)
    top1 = engine.generate(PROMPTS, max_new_tokens=8, seed=0, sampling=SamplingParams(top_k=1))
    assert torch.equal(greedy.completion_ids, top1.completion_ids)


def test_logprobs_equal_one_pass_rescoring(sharp):
    model, tokenizer = sharp
    engine = RolloutEngine(model, tokenizer)
    batch = engine.generate(PROMPTS, max_new_tokens=8, seed=0, sampling=SamplingParams(temperature=0.7))
    rescored = engine.score(batch, sampling=SamplingParams(temperature=0.7))
    torch.testing.assert_close(rescored, batch.logprobs, atol=1e-4, rtol=1e-4)


def test_reference_logprobs_and_values(sharp):
    model, tokenizer = sharp
    head = torch.nn.Linear(model.config.hidden_size, 1)
    engine = RolloutEngine(model, tokenizer, ref_model=model, value_head=head)
    batch = engine.generate(PROMPTS[:4], max_new_tokens=5, seed=0)
    torch.testing.assert_close(batch.ref_logprobs, batch.logprobs, atol=1e-4, rtol=1e-4)
    # values: the head applied to the last hidden state that produced each token, in one full forward pass
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    with torch.no_grad():
        hidden = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            output_hidden_states=True,
        ).hidden_states[-1]
        width = batch.prompt_ids.shape[1]
        expected = head(hidden[:, width - 1 : -1]).squeeze(-1) * batch.completion_mask
    torch.testing.assert_close(batch.values, expected, atol=1e-4, rtol=1e-4)


def test_each_row_stops_at_its_own_eos(sharp):
    model, tokenizer = sharp
    trigger = tokenizer(" Bad", add_special_tokens=False)["input_ids"][-1]
    eos = tokenizer.eos_token_id

    def force_eos(module, args, kwargs, output):  # EOS right after the token " Bad"
        last = kwargs["input_ids"][:, -1]
        output.logits[last == trigger, -1, eos] = 1e4
        return output

    handle = model.register_forward_hook(force_eos, with_kwargs=True)
    try:
        batch = RolloutEngine(model, tokenizer).generate(
            ["It was Bad", "It was good"], max_new_tokens=6, sampling=GREEDY
        )
    finally:
        handle.remove()
    assert batch.lengths.tolist() == [1, 6]
    assert batch.completion_ids[0].tolist() == [eos] * 6  # EOS, then padding (pad == EOS here)
    assert batch.completion_mask[0].tolist() == [1, 0, 0, 0, 0, 0]
    assert batch.logprobs[0, 1:].abs().sum() == 0


def test_filter_logits_matches_a_hand_computed_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    kept = torch.isfinite(filter_logits(logits, top_p=0.9))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.01))
    assert kept.tolist() == [[True, False, False, False]]  # the top token always stays


def test_sequence_logprobs_ignore_padding(tiny):
    model, tokenizer = tiny
    prompt, pmask = left_pad([[5, 6, 7], [8]], tokenizer.pad_token_id, torch.device("cpu"))
    completion = torch.tensor([[9, 10], [11, 2]])
    cmask = torch.tensor([[1, 1], [1, 0]])
    with torch.no_grad():
        lp = sequence_logprobs(model, prompt, pmask, completion, cmask)
        alone = sequence_logprobs(
            model, torch.tensor([[8]]), torch.tensor([[1]]), torch.tensor([[11]]), torch.tensor([[1]])
        )
    assert lp[1, 1] == 0
    torch.testing.assert_close(lp[1, 0], alone[0, 0], atol=1e-5, rtol=1e-5)


def test_prompt_longer_than_the_context_names_the_fix(tiny):
    model, tokenizer = tiny
    too_long = [[5] * (model.config.max_position_embeddings - 3)]
    with pytest.raises(PromptTooLongError, match="max_new_tokens"):
        RolloutEngine(model, tokenizer).generate(too_long, max_new_tokens=10)


def test_bad_arguments(tiny):
    engine = RolloutEngine(*tiny)
    with pytest.raises(ConfigError):
        engine.generate([], max_new_tokens=3)
    with pytest.raises(ConfigError, match="temperature"):
        engine.generate(["a"], sampling=SamplingParams(temperature=0))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        engine.generate(["a"], max_new_tokens=0)


def test_a_step_hook_decides_the_ends(sharp):
    model, tokenizer = sharp
    engine = RolloutEngine(model, tokenizer)
    ids, mask = left_pad(tokenizer(PROMPTS[:3], add_special_tokens=False)["input_ids"], engine.pad_id, engine.device)
    seen = []

    def stop_row_at(t, tokens, active):  # row r ends with token r + 1; EOS does not end anything
        seen.append(active.tolist())
        return [t == row for row in range(3)]

    batch = engine.run(ids, mask, 6, eos_ids=[], on_step=stop_row_at, seed=0)
    assert batch.lengths.tolist() == [1, 2, 3]
    assert seen == [[True, True, True], [False, True, True], [False, False, True]]
    assert batch.completion_ids[0, 1:].eq(engine.pad_id).all() and batch.rewards is None


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 8])
def test_greedy_equals_generate_on_smollm2(batch_size):
    model, tokenizer = criticgym.load_policy("smollm2-135m")
    prompts = PROMPTS[:batch_size]
    batch = RolloutEngine(model, tokenizer).generate(prompts, max_new_tokens=16, sampling=GREEDY)
    reference = hf_generate(model, tokenizer, prompts, 16)
    for row in range(batch_size):
        n = int(batch.lengths[row])
        assert torch.equal(batch.completion_ids[row, :n], reference[row, :n])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_equals_generate_on_cuda_bf16():
    model, tokenizer = criticgym.load_policy("tiny", device="auto")  # no hub, no large files on a GPU machine
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    batch = RolloutEngine(model, tokenizer).generate(PROMPTS, max_new_tokens=16, sampling=GREEDY)
    encoded = tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    ids, mask = left_pad(encoded, tokenizer.pad_token_id, torch.device("cuda"))
    reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False)[
        :, ids.shape[1] :
    ]
    agree = (batch.completion_ids == reference[:, : batch.completion_ids.shape[1]]).float().mean()
    assert agree > 0.9  # bf16 kernels may break near-ties differently


def test_min_new_tokens_masks_eos(sharp):
    model, tokenizer = sharp
    eos = tokenizer.eos_token_id

    def always_eos(module, args, kwargs, output):
        output.logits[:, -1, eos] = 1e4
        return output

    handle = model.register_forward_hook(always_eos, with_kwargs=True)
    try:
        engine = RolloutEngine(model, tokenizer)
        assert engine.generate(["a", "b"], max_new_tokens=8, sampling=GREEDY).lengths.tolist() == [1, 1]
        batch = engine.generate(["a", "b"], max_new_tokens=8, seed=0, sampling=SamplingParams(min_new_tokens=3))
    finally:
        handle.remove()
    assert batch.lengths.tolist() == [4, 4]
    assert (batch.completion_ids[:, :3] != eos).all() and (batch.completion_ids[:, 3] == eos).all()


def test_sampler_draws_from_the_softmax():
    from criticgym.rollout import sample_from_logits

    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])
    logits = probs.log().expand(200_000, 4).contiguous()
    draws = sample_from_logits(logits, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4) / len(draws)
    assert frequencies[1] == 0  # -inf logits are never drawn
    torch.testing.assert_close(frequencies, probs, atol=5e-3, rtol=0)


def test_sampled_logprobs_are_those_of_the_filtered_distribution(sharp):
    """What a row records is log p(token) under the distribution it was drawn from: tempered, cut to the top-p
    nucleus and renormalized; re-scoring with the same settings gives it again."""
    model, tokenizer = sharp
    engine = RolloutEngine(model, tokenizer)
    batch = engine.generate(
        PROMPTS[:4], max_new_tokens=6, seed=3, sampling=SamplingParams(temperature=0.8, top_p=0.5, top_k=20)
    )
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    width = batch.prompt_ids.shape[1]
    for row in range(4):
        for t in range(int(batch.lengths[row])):
            step = logits[row, width - 1 + t].double() / 0.8
            probs = step.softmax(-1)
            order = probs.argsort(descending=True)[:20]  # top-k, then (renormalized, as Hugging Face's warpers
            top = probs[order] / probs[order].sum()  # do) the smallest prefix reaching 0.5
            cut = int((top.cumsum(0) < 0.5).sum()) + 1
            nucleus = order[:cut]
            token = int(batch.completion_ids[row, t])
            assert token in nucleus.tolist()
            expected = torch.log(probs[token] / probs[nucleus].sum())
            assert float(batch.logprobs[row, t]) == pytest.approx(float(expected), abs=1e-4)
    rescored = engine.score(batch, sampling=SamplingParams(temperature=0.8, top_k=20, top_p=0.5))
    torch.testing.assert_close(rescored, batch.logprobs, atol=1e-4, rtol=1e-4)
    assert (
        engine.score(batch, sampling=SamplingParams(temperature=0.8)) < batch.logprobs - 1e-3
    ).any()  # unfiltered: other numbers


def test_one_eos_definition_for_engine_and_env(sharp, tmp_path):
    """A model whose generation config lists two EOS ids (as Llama 3 and Qwen do): generate() and the env both
    stop at either."""
    from criticgym.rollout import eos_token_ids, load_policy

    model, tokenizer = sharp
    plain = RolloutEngine(model, tokenizer).generate(PROMPTS[:4], max_new_tokens=6, sampling=GREEDY)
    second_eos = int(plain.completion_ids[0, 2])  # a token the model writes third on row 0
    assert second_eos != tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, second_eos]
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    tokenizer.save_pretrained(tmp_path)
    model2, tokenizer2 = load_policy(str(tmp_path))
    assert eos_token_ids(tokenizer2) == eos_token_ids(tokenizer2, model2.generation_config)
    assert eos_token_ids(tokenizer2) == (tokenizer.eos_token_id, second_eos)

    engine = RolloutEngine(model2, tokenizer2)
    generated = engine.generate(PROMPTS[:4], max_new_tokens=6, sampling=GREEDY)
    assert int(generated.lengths[0]) == plain.completion_ids[0].tolist().index(second_eos) + 1
    envs = criticgym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=4,
        model=str(tmp_path),
        reward=None,
        max_new_tokens=6,
        autoreset_mode="disabled",
    )
    rolled = play(engine, envs, options={"prompt": PROMPTS[:4]}, sampling=GREEDY)
    assert torch.equal(rolled.lengths, generated.lengths)
    assert torch.equal(
        rolled.completion_ids * rolled.completion_mask, generated.completion_ids * generated.completion_mask
    )
    assert rolled.infos[0]["completion_ids"][-1] == second_eos


def test_decoding_uses_the_current_cache_api_without_warnings(sharp):
    import warnings

    model, tokenizer = sharp
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning from transformers fails the test
        batch = RolloutEngine(model, tokenizer).generate(PROMPTS[:2], max_new_tokens=4, seed=0)
    assert batch.completion_ids.shape == (2, 4)


def test_group_rollouts_share_one_prefill_and_equal_separate_ones(sharp):
    """k copies of a prompt (RLOO, pairwise siblings) are prefilled once; the completions are those of k
    separate prefills with the same seed."""
    model, tokenizer = sharp
    prompts = [PROMPTS[0]] * 4 + [PROMPTS[3]] * 4
    shared_engine = RolloutEngine(model, tokenizer)
    prefill_rows = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: prefill_rows.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        shared = shared_engine.generate(prompts, max_new_tokens=6, seed=4, sampling=SamplingParams(temperature=0.9))
    finally:
        handle.remove()
    assert prefill_rows[0][0] == 2  # two distinct prompts, one prefill each
    separate_engine = RolloutEngine(model, tokenizer, share_prefill=False)  # every row prefilled on its own
    separate = separate_engine.generate(prompts, max_new_tokens=6, seed=4, sampling=SamplingParams(temperature=0.9))
    assert torch.equal(shared.completion_ids, separate.completion_ids)
    torch.testing.assert_close(shared.logprobs, separate.logprobs, atol=1e-4, rtol=1e-4)
    assert len({tuple(r) for r in shared.completion_ids[:4].tolist()}) > 1  # the copies went their own ways


def test_stop_ids_end_a_row_and_stay_in_its_completion():
    model, tokenizer = criticgym.load_policy("tiny")
    engine = RolloutEngine(model, tokenizer)
    free = engine.generate(["Say it:", "Words:"], max_new_tokens=8, sampling=GREEDY)
    stop = int(free.completion_ids[0, 2])  # the third token of the first row
    stopped = engine.generate(["Say it:", "Words:"], max_new_tokens=8, stop_ids=[stop], sampling=GREEDY)
    first_stop = [int((row == stop).nonzero()[0]) + 1 if (row == stop).any() else 8 for row in free.completion_ids]
    assert stopped.lengths.tolist() == first_stop and first_stop[0] <= 3
    torch.testing.assert_close(stopped.completion_ids[0, : first_stop[0]], free.completion_ids[0, : first_stop[0]])


def test_replay_of_the_sampled_tokens_is_the_batch_run_returned(sharp):
    """Tokens sampled elsewhere (vLLM) replayed in one pass: the log-probs, values and reference log-probs of run()."""
    model, tokenizer = sharp
    head = torch.nn.Linear(model.config.hidden_size, 1)
    engine = RolloutEngine(model, tokenizer, ref_model=model, value_head=head)
    sampled = engine.generate(PROMPTS, max_new_tokens=8, seed=3, sampling=SamplingParams(temperature=0.7, top_p=0.9))
    # rows of other lengths (as an env ends them): what lies past a row's end is padding to the replay
    mask = (torch.arange(8)[None, :] < torch.tensor([8, 3, 1, 8, 5, 2, 7, 4])[:, None]).long()
    replayed = engine.replay(
        sampled.prompt_ids, sampled.prompt_mask, sampled.completion_ids, mask, sampling=SamplingParams(0.7, top_p=0.9)
    )
    torch.testing.assert_close(replayed.completion_mask, mask)
    for field in ("logprobs", "values", "ref_logprobs"):
        expected = getattr(sampled, field) * mask
        torch.testing.assert_close(getattr(replayed, field), expected, atol=1e-4, rtol=1e-4)
