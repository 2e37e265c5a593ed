"""Span -> token mapping, against hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criticgym.critics import Span
from criticgym.critics.offsets import span_token_rewards, token_char_offsets, tokens_in_span


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def rewarded_tokens(tokenizer, text, spans):
    ids = encode(tokenizer, text)
    decoded, offsets = token_char_offsets(tokenizer, ids)
    assert decoded == text
    rewards = span_token_rewards(spans, offsets, positive=0.5, negative=-0.5)
    return [(tokenizer.decode([i]), r) for i, r in zip(ids, rewards, strict=True) if r]


def span_of(text, phrase, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(phrase, start + 1)
    return start, start + len(phrase)


def test_offsets_tile_the_text(tokenizer):
    text = " A truly wonderful, heart-warming film."
    decoded, offsets = token_char_offsets(tokenizer, encode(tokenizer, text))
    assert decoded == text
    assert offsets[0, 0] == 0 and offsets[-1, 1] == len(text)
    assert (offsets[1:, 0] == offsets[:-1, 1]).all()  # contiguous, no gaps, no overlaps


def test_leading_space_belongs_to_its_word(tokenizer):
    text = " the film was good"
    got = rewarded_tokens(tokenizer, text, [Span(*span_of(text, "good"), 1.0)])
    assert got == [(" good", 0.5)]


def test_multi_token_word_rewards_all_its_tokens(tokenizer):
    text = " it was antidisestablishmentarian"
    ids = encode(tokenizer, " antidisestablishmentarian")
    assert len(ids) > 1  # really several tokens
    got = rewarded_tokens(tokenizer, text, [Span(*span_of(text, "antidisestablishmentarian"), -1.0)])
    assert [r for _, r in got] == [-0.5] * len(ids)
    assert "".join(t for t, _ in got) == " antidisestablishmentarian"


def test_only_the_pointed_occurrence_of_a_repeated_word_is_rewarded(tokenizer):
    text = " good, not good, good"
    ids = encode(tokenizer, text)
    _, offsets = token_char_offsets(tokenizer, ids)
    second = span_of(text, "good", occurrence=1)
    rewards = span_token_rewards([Span(*second, -1.0)], offsets)
    assert rewards.tolist().count(-0.5) == 1
    marked = int(np.flatnonzero(rewards)[0])
    assert tuple(offsets[marked]) == (second[0] - 1, second[1])  # " good", the second one


def test_common_tokens_outside_spans_get_nothing(tokenizer):
    # the RELC reference code would reward every "the" because "the" occurs in the span text
    text = " the plot is the worst, the end"
    got = rewarded_tokens(tokenizer, text, [Span(*span_of(text, "the worst"), -1.0)])
    assert got == [(" the", -0.5), (" worst", -0.5)]


def test_span_crossing_token_boundaries(tokenizer):
    text = " unbelievably boring"
    # from the middle of the first word to the middle of the second
    got = rewarded_tokens(tokenizer, text, [Span(5, 16, -1.0)])
    assert "".join(t for t, _ in got) == text  # both words' tokens, wholly
    assert all(r == -0.5 for _, r in got)


def test_unicode_characters_belong_to_the_token_that_completes_them(tokenizer):
    text = " naïve 😀 good"
    ids = encode(tokenizer, text)
    decoded, offsets = token_char_offsets(tokenizer, ids)
    assert decoded == text
    emoji = span_of(text, "😀")
    covered = np.flatnonzero(tokens_in_span(offsets, *emoji))
    # the emoji's bytes are split over two tokens: the first (" " plus half the emoji) covers only the space,
    # the second completes the emoji and covers it
    assert len(covered) == 1
    assert offsets[covered[0] - 1].tolist() == [emoji[0] - 1, emoji[0]]
    got = rewarded_tokens(tokenizer, text, [Span(*span_of(text, "naïve"), 1.0)])
    assert "".join(t for t, _ in got) == " naïve"


def test_empty_span_and_zero_value_give_nothing(tokenizer):
    text = " fine"
    assert rewarded_tokens(tokenizer, text, [Span(2, 2, 1.0)]) == []
    assert rewarded_tokens(tokenizer, text, [Span(0, 5, 0.0)]) == []


def test_overlapping_spans_add_up(tokenizer):
    text = " very good"
    got = rewarded_tokens(tokenizer, text, [Span(0, 10, 1.0), Span(*span_of(text, "good"), 1.0)])
    assert got == [(" very", 0.5), (" good", 1.0)]


def test_special_tokens_cover_no_text(tokenizer):
    ids = [*encode(tokenizer, " ok"), tokenizer.eos_token_id]
    text, offsets = token_char_offsets(tokenizer, ids)
    assert text == " ok" and offsets[-1, 0] == offsets[-1, 1] == 3


def test_span_not_in_the_text_is_refused_by_construction():
    with pytest.raises(ValueError):
        Span(5, 2, 1.0)


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.integers(0, 49151), max_size=30), text=st.text(max_size=40))
def test_incremental_offsets_equal_the_prefix_reference(tokenizer, ids, text):
    """One DecodeStream pass gives the ends that decoding every prefix gives: on random ids (broken UTF-8, special
    tokens) and on the tokens of random text (emoji, accents, repeats)."""
    from criticgym.critics.offsets import _stream_ends, prefix_ends

    for sequence in (ids, tokenizer(text, add_special_tokens=False)["input_ids"]):
        decoded = tokenizer.decode(sequence, skip_special_tokens=True)
        reference = prefix_ends(tokenizer, sequence, decoded)
        fast = _stream_ends(tokenizer, sequence, decoded)
        if fast is not None:  # None: the stream disagrees with decode, and the reference is used
            np.testing.assert_array_equal(fast, reference)
    sample = encode(tokenizer, " naïve 😀 good, the worst")
    assert _stream_ends(tokenizer, sample, tokenizer.decode(sample)) is not None  # ordinary text: the fast path
