from __future__ import annotations

import pickle

import numpy as np
import pytest

from criticgym.critics import (
    FunctionScorer,
    RougeScorer,
    SentimentClassifier,
    ToxicityScorer,
    VaderSentiment,
    as_scorer,
    make_scorer,
)
from criticgym.critics.scorers import checked_scores
from criticgym.errors import ConfigError, CriticGymError, MissingDependencyError


def test_vader_orders_positive_above_negative():
    scores = VaderSentiment().score(["The film was", "The film was"], [" wonderful and moving", " dull and awful"])
    assert scores[0] > 0.5 and scores[1] < -0.5


def test_toxicity_is_higher_for_clean_text():
    clean, rude = ToxicityScorer().score(["", ""], ["thank you, friend", "shut up you stupid idiot"])
    assert -0.5 < clean <= 0 and rude < -0.5


def test_rouge_against_the_reference():
    scorer = RougeScorer()
    # stemmed LCS "senat confirm devo": 3 of 4 tokens on each side
    score = scorer.score(["a"], ["The Senate confirms DeVos"], ["Senate confirmed DeVos today"])[0]
    assert score == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="reference"):
        scorer.score(["a"], ["b"])


def test_function_scorers_plain_trl_style_and_positional():
    def plain(prompts, completions):
        return [len(c) for c in completions]

    def trl_style(completions, **kwargs):
        return [float(len(kwargs["prompts"][0]))] * len(completions)

    def positional(p, c):
        return [1.0] * len(c)

    def with_refs(prompts, completions, references):
        return [float(r == c) for c, r in zip(completions, references, strict=True)]

    assert as_scorer(plain).score(["x"], ["abc"]) == [3]
    assert as_scorer(trl_style).score(["four"], ["a", "b"]) == [4.0, 4.0]
    assert as_scorer(positional).score(["x"], ["y"]) == [1.0]
    assert as_scorer(with_refs).score(["x", "x"], ["a", "b"], ["a", "c"]) == [1.0, 0.0]
    assert isinstance(as_scorer(plain), FunctionScorer)


def test_scorer_lookup_errors_name_the_choices():
    with pytest.raises(ConfigError, match="vader"):
        make_scorer("sentimentality")
    with pytest.raises(ConfigError, match="score"):
        as_scorer(42)


def test_faulty_scores_never_become_rewards():
    with pytest.raises(CriticGymError, match="non-finite"):
        checked_scores([0.1, float("nan")], 2, "s")
    with pytest.raises(CriticGymError, match="1 scores for 2"):
        checked_scores([0.1], 2, "s")
    with pytest.raises(CriticGymError, match="not a list of numbers"):
        checked_scores(["high", "low"], 2, "s")
    np.testing.assert_array_equal(checked_scores([1, 2], 2, "s"), [1.0, 2.0])


def test_missing_package_gives_the_pip_command(monkeypatch):
    import sys

    from criticgym.critics import scorers

    scorers._vader.cache_clear()
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import now fails
    try:
        with pytest.raises(MissingDependencyError, match="pip install vaderSentiment==3.3.2"):
            VaderSentiment().score(["a"], ["b"])
    finally:
        scorers._vader.cache_clear()


def test_scorers_are_picklable():
    for scorer in (VaderSentiment(), ToxicityScorer(), RougeScorer("rouge1"), SentimentClassifier()):
        clone = pickle.loads(pickle.dumps(scorer))
        assert type(clone) is type(scorer)


@pytest.mark.slow
def test_sentiment_classifier_is_accurate_on_held_out_reviews():
    from criticgym.data import load_rotten_tomatoes

    classifier = SentimentClassifier(include_prompt=False)
    test = load_rotten_tomatoes("test")
    predictions = classifier.predict_proba([e.text for e in test]) > 0.5
    accuracy = np.mean(predictions == np.array([e.label for e in test]))
    assert accuracy > 0.72
    assert classifier.meta["test_accuracy"] == pytest.approx(accuracy, abs=1e-3)
    positive, negative = classifier.score(["", ""], ["A joyous, brilliant film.", "A tedious, ugly mess."])
    assert positive > 0 > negative
