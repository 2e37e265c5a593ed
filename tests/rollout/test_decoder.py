"""The decoder's explicit state: every operation must give the logits of a fresh prefill of the same tokens."""

from __future__ import annotations

import pytest
import torch

from criticgym.errors import ConfigError
from criticgym.rollout.decoder import Decoder

PROMPTS = [[10, 20, 30, 40], [50, 60], [70, 80, 90], [11]]


def fresh(decoder, rows):
    """Logits after prefilling exactly these token lists (no padding beyond what left_pad adds)."""
    return decoder.prefill(rows).logits


def walk(decoder, state, columns):
    for column in columns:
        state = decoder.step(state, torch.tensor(column))
    return state


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@pytest.fixture(params=["fast", "hf"])
def decoder(sharp, request):
    """Every test runs on both paths: the fast Llama forward with its preallocated cache, and transformers'."""
    model, tokenizer = sharp
    decoder = Decoder(model, tokenizer.pad_token_id, hidden=True, path=request.param)
    assert decoder.path == request.param
    return decoder


def test_steps_equal_a_fresh_prefill(decoder):
    state = walk(decoder, decoder.prefill(PROMPTS), [[1, 2, 3, 4], [5, 6, 7, 8]])
    expected = fresh(decoder, [p + [a, b] for p, a, b in zip(PROMPTS, [1, 2, 3, 4], [5, 6, 7, 8], strict=True)])
    close(state.logits, expected)
    assert state.length == 4 + 2 and state.hidden.shape == (4, decoder.model.config.hidden_size)


def test_select_keeps_rows_and_their_cache(decoder):
    state = walk(decoder, decoder.prefill(PROMPTS), [[1, 2, 3, 4]])
    kept = walk(decoder, state.select([2, 0]), [[9, 9]])
    close(kept.logits, fresh(decoder, [PROMPTS[2] + [3, 9], PROMPTS[0] + [1, 9]]))


def test_repeat_shares_one_prefill_among_k_continuations(decoder):
    state = decoder.prefill(PROMPTS[:2]).repeat(3)
    assert state.batch_size == 6
    state = walk(decoder, state, [[1, 2, 3, 4, 5, 6]])
    expected = fresh(decoder, [PROMPTS[i // 3] + [i + 1] for i in range(6)])
    close(state.logits, expected)


def test_fork_is_independent(decoder):
    state = walk(decoder, decoder.prefill(PROMPTS), [[1, 2, 3, 4]])
    branch = state.fork()
    walk(decoder, branch, [[5, 5, 5, 5], [6, 6, 6, 6]])  # the branch moves on ...
    after = decoder.step(state, torch.tensor([7, 7, 7, 7]))  # ... and the original is as it was
    close(after.logits, fresh(decoder, [p + [t, 7] for p, t in zip(PROMPTS, [1, 2, 3, 4], strict=True)]))


@pytest.mark.parametrize("back", [1, 2, 3])
def test_crop_rewinds_without_rerunning_the_prefix(decoder, back):
    start = decoder.prefill(PROMPTS)
    state = walk(decoder, start, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
    rewound = state.crop(state.length - back)
    generated = state.ids[:, start.length :].tolist()
    kept = [row[: 3 - back] for row in generated]
    close(rewound.logits, fresh(decoder, [p + k for p, k in zip(PROMPTS, kept, strict=True)]))
    # a different continuation from the rewound point equals a fresh run of it
    other = decoder.step(rewound, torch.tensor([42, 43, 44, 45]))
    close(other.logits, fresh(decoder, [p + k + [t] for p, k, t in zip(PROMPTS, kept, [42, 43, 44, 45], strict=True)]))
    # and the longer state was not touched
    close(
        decoder.step(state, torch.tensor([1, 1, 1, 1])).logits,
        fresh(decoder, [p + g + [1] for p, g in zip(PROMPTS, generated, strict=True)]),
    )


def test_bad_operations_name_the_fix(decoder):
    state = decoder.prefill(PROMPTS)
    with pytest.raises(ConfigError, match="length"):
        state.crop(0)
    with pytest.raises(ConfigError, match="length"):
        state.crop(state.length + 1)
    with pytest.raises(ConfigError, match="k >= 1"):
        state.repeat(0)


@pytest.mark.slow
def test_every_operation_on_smollm2_equals_a_fresh_prefill():
    from criticgym.rollout import load_policy

    model, tokenizer = load_policy("smollm2-135m")
    decoder = Decoder(model, tokenizer.pad_token_id)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("The film was", "I think that this")]
    state = walk(decoder, decoder.prefill(prompts).repeat(2), [[11, 12, 13, 14], [21, 22, 23, 24]])
    generated = state.ids[:, -2:].tolist()
    rows = [prompts[i // 2] + generated[i] for i in range(4)]
    close(state.logits, fresh(decoder, rows))
    close(state.select([3, 0]).logits, fresh(decoder, [rows[3], rows[0]]))
    close(state.crop(state.length - 1).logits, fresh(decoder, [r[:-1] for r in rows]))


def test_extend_feeds_a_chunk_per_row_in_one_pass(decoder):
    state = decoder.prefill(PROMPTS)
    chunk = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 6], [7, 8, 9]])
    real = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1]])  # rows pad at the start of their chunk
    state = decoder.extend(state, chunk, real)
    expected = [[1, 2], [3, 4, 5], [6], [7, 8, 9]]
    close(state.logits, fresh(decoder, [p + e for p, e in zip(PROMPTS, expected, strict=True)]))
    stepped = decoder.step(state, torch.tensor([1, 1, 1, 1]))  # and decoding goes on from there
    close(stepped.logits, fresh(decoder, [p + e + [1] for p, e in zip(PROMPTS, expected, strict=True)]))
    with pytest.raises(ConfigError, match="shape"):
        decoder.extend(state, torch.tensor([1, 2, 3, 4]))


def test_rewind_undoes_steps_in_place_without_a_copy(decoder):
    root = walk(decoder, decoder.prefill(PROMPTS), [[1, 2, 3, 4]])
    logits = root.logits.clone()
    for branch in ([5, 6], [7, 8, 9]):  # explore two branches from the same root, rewinding in between
        leaf = decoder.extend(root, torch.tensor([branch] * 4))
        close(leaf.logits, fresh(decoder, [p + [t, *branch] for p, t in zip(PROMPTS, [1, 2, 3, 4], strict=True)]))
        assert root.rewind().cache.length == root.length
    close(root.logits, logits)
    after = decoder.step(root, torch.tensor([9, 9, 9, 9]))
    close(after.logits, fresh(decoder, [p + [t, 9] for p, t in zip(PROMPTS, [1, 2, 3, 4], strict=True)]))
