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


def test_the_profanity_list_flags_listed_words_and_their_variants_only():
    from criticgym.critics.scorers import ProfanityList

    texts = ["a lovely quiet film", "this is sh1t", "what the fuck", "an assassin's classic", "you idiot"]
    assert ProfanityList().score([""] * 5, texts) == [0.0, -1.0, -1.0, 0.0, 0.0]  # insults without swearing pass
    assert ProfanityList(include_prompt=True).score(["damn,"], [" nice"]) == [-1.0]


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


def test_trl_reward_functions_get_what_trl_passes(tokenizer):
    """Functions written exactly in TRL's documented signatures, as a scorer of a criticgym env."""
    import gymnasium as gym

    seen = {}

    def reward_func(prompts, completions, completion_ids, **kwargs):  # TRL's full signature
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, kwargs=kwargs)
        return [float(len(ids)) for ids in completion_ids]

    def reward_len(completions, **kwargs):  # TRL's short form
        return [-float(len(c)) for c in completions]

    def format_reward(completions, completion_ids, trainer_state=None, **kwargs):  # an optional TRL extra
        return [float(c.startswith(" ")) for c in completions]

    words = tokenizer(" good fun", add_special_tokens=False)["input_ids"]
    for fn, expected in ((reward_func, 2.0), (reward_len, -9.0), (format_reward, 1.0)):
        env = gym.make("criticgym/SentimentControl-v0", scorer=fn, max_new_tokens=2)
        env.reset(seed=0)
        env.step(words[0])
        _, reward, _, truncated, info = env.step(words[1])
        assert truncated and reward == expected == info["extrinsic_reward"]
    assert seen["completions"] == [" good fun"] and seen["completion_ids"] == [words]
    assert isinstance(seen["prompts"][0], str) and seen["kwargs"] == {}

    envs = gym.make_vec("criticgym/SentimentControl-v0", num_envs=3, scorer=reward_func, max_new_tokens=1)
    envs.reset(seed=0)
    _, rewards, _, _, _ = envs.step(np.array(words[:1] * 3))
    assert rewards.tolist() == [1.0, 1.0, 1.0] and seen["completion_ids"] == [words[:1]] * 3


def test_function_scorers_that_need_what_is_not_there_fail_clearly():
    def needs_solution(completions, solution):
        return [0.0] * len(completions)

    with pytest.raises(ConfigError, match="solution"):
        as_scorer(needs_solution)

    def needs_ids(completions, completion_ids):
        return [0.0] * len(completions)

    with pytest.raises(ConfigError, match="completion_ids"):
        as_scorer(needs_ids).score(["p"], ["c"])  # no ids outside an env or a rollout


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
    with pytest.raises(CriticGymError, match="real number"):
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


def _say_half(prompts, completions):
    return ["0.5"] * len(completions)


@pytest.mark.parametrize(
    "result, message",
    [
        (lambda n: ["0.5"] * n, "real number"),
        (lambda n: ["1"] * n, "real number"),
        (lambda n: [True] * n, "real number"),
        (lambda n: None, "returned NoneType"),
        (lambda n: 0.5, "returned float"),
        (lambda n: [float("nan")] * n, "non-finite"),
    ],
)
def test_a_custom_scorer_must_return_real_numbers_and_the_error_names_it(result, message):
    import gymnasium as gym

    def my_reward(prompts, completions):
        return result(len(completions))

    env = gym.make("criticgym/SentimentControl-v0", scorer=my_reward, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(CriticGymError, match=f"my_reward.*{message}|{message}.*my_reward"):
        env.step(env.unwrapped.eos_token_id)


def test_numpy_scores_and_integers_are_real_numbers():
    np.testing.assert_array_equal(checked_scores(np.array([1, 2]), 2, "s"), [1.0, 2.0])
    np.testing.assert_array_equal(checked_scores([np.float32(0.5), 1], 2, "s"), [0.5, 1.0])
    assert repr(as_scorer(_say_half)) == "FunctionScorer(tests.critics.test_scorers._say_half)"
