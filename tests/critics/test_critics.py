from __future__ import annotations

import pickle

import numpy as np
import pytest

from criticgym.critics import Critique, LexiconCritic, RandomCritic, Span, ToxicityCritic, as_critic
from criticgym.critics.offsets import span_token_rewards
from criticgym.errors import ConfigError


def texts_of(critique, completion):
    return [(completion[s.start : s.end], s.label) for s in critique.spans]


def test_lexicon_critic_marks_valenced_words_and_flips_negations():
    completion = " It was a brilliant film, not bad at all, but the ending was awful and dull."
    (critique,) = LexiconCritic().critique([""], [completion])
    assert texts_of(critique, completion) == [
        ("brilliant", "positive"),
        ("bad", "positive"),  # "not bad"
        ("awful", "negative"),
        ("dull", "negative"),
    ]
    assert all(-1 <= s.value <= 1 for s in critique.spans)


def test_lexicon_threshold():
    (weak,) = LexiconCritic(min_valence=3.0).critique([""], ["a good, superb film"])
    assert [s.label for s in weak.spans] == ["positive"]  # superb (3.1) yes, good (1.9) no


def test_toxicity_critic_marks_words_and_whole_offensive_clauses():
    completion = "thanks for coming, you stupid idiot, see you"
    (critique,) = ToxicityCritic().critique([""], [completion])
    marked = [completion[s.start : s.end] for s in critique.spans]
    assert "stupid" in marked and "idiot" in marked
    assert all(s.value < 0 and s.label == "toxic" for s in critique.spans)
    (clean,) = ToxicityCritic().critique([""], ["a pleasant afternoon in the park"])
    assert clean.spans == ()


def test_random_critic_keeps_the_token_budget_and_moves_it(tokenizer):
    completion = " a wonderful, delightful film with a terrible ending and an awful score"
    real = LexiconCritic()
    (truth,) = real.critique([""], [completion])
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"])
    budget = np.count_nonzero(span_token_rewards(truth.spans, offsets))
    runs = [RandomCritic(real, tokenizer, seed=s).critique([""], [completion])[0] for s in range(5)]
    for critique in runs:
        marked = span_token_rewards(critique.spans, offsets)
        assert np.count_nonzero(marked) == budget
        assert sorted(s.value for s in critique.spans) == sorted(
            v for s in truth.spans for v in [s.value] * np.count_nonzero(span_token_rewards([s], offsets))
        )
    assert len({tuple((s.start, s.end) for s in c.spans) for c in runs}) > 1  # places differ between seeds
    again = RandomCritic(real, tokenizer, seed=3).critique([""], [completion])[0]
    assert again == runs[3]  # and are reproducible


def test_function_critics_and_bad_critics():
    def whole_text(prompts, completions):
        return [Critique((Span(0, len(c), 1.0),)) for c in completions]

    def with_score(prompts, completions, extrinsic):
        return [Critique((Span(0, 1, e),)) for c, e in zip(completions, extrinsic, strict=True)]

    assert as_critic(whole_text).critique(["p"], ["abc"])[0].spans == (Span(0, 3, 1.0),)
    assert as_critic(with_score).critique(["p"], ["abc"], extrinsic=[-0.3])[0].spans[0].value == -0.3
    with pytest.raises(ConfigError, match="critique"):
        as_critic("lexicon")


def test_critics_pickle():
    for critic in (LexiconCritic(), ToxicityCritic()):
        clone = pickle.loads(pickle.dumps(critic))
        assert clone.critique([""], ["an awful day"]) == critic.critique([""], ["an awful day"])


def test_random_critic_has_no_state(tokenizer):
    """Its draws depend on (seed, prompt, completion) alone: order, batching and history change nothing."""
    real = LexiconCritic()
    texts = [" a wonderful film with an awful score", " dull, dull, dull but lovely", " a joy and a bore"]
    critic = RandomCritic(real, tokenizer, seed=7)
    alone = [critic.critique(["p"], [t])[0] for t in texts]
    critic.critique(["x"] * 3, texts[::-1])  # calls in between would advance a stateful generator
    batched = RandomCritic(real, tokenizer, seed=7).critique(["p"] * 3, texts)
    assert batched == alone
    assert critic.critique(["p"], [texts[0]])[0] == alone[0]
