from __future__ import annotations

import pytest
import torch

from criticgym.critics.protocols import DirectJudge
from criticgym.envs import get_task
from criticgym.errors import ConfigError
from criticgym.search.values import FunctionValue, ScorerValue, SelfValue, make_value


def test_a_scorer_maps_from_its_range_onto_minus_one_to_one():
    toxicity = ScorerValue("toxicity")  # [-1, 0]
    assert (toxicity.low, toxicity.high) == (-1.0, 0.0)
    values = ScorerValue(lambda prompts, completions: [0.0, 0.25, 1.0, 2.0], score_range=(0.0, 1.0)).rate(
        [""] * 4, ["a", "b", "c", "d"]
    )
    assert values == pytest.approx([-1.0, -0.5, 1.0, 1.0])  # clipped above
    with pytest.raises(ConfigError, match="score_range"):
        ScorerValue("vader", score_range=(1.0, 1.0))


def test_self_evaluation_reuses_its_prefix_and_equals_a_fresh_prompt(sharp):
    model, tokenizer = sharp
    question = get_task("sentiment").self_evaluation
    hard, soft = SelfValue(model, tokenizer, question), SelfValue(model, tokenizer, question, soft=True)
    text = "The movie was a delight."
    p_first, p_second = soft.probabilities(text)
    prefix = tokenizer(soft.prefix(), add_special_tokens=False)["input_ids"]
    for good_first, expected in ((True, p_first), (False, p_second)):  # the same tokens run from scratch
        suffix = tokenizer(soft._block(text, good_first) + "\nAnswer:", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + suffix])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1, hard.option_ids].float()
        p_good = torch.softmax(logits, -1)[0 if good_first else 1]
        assert float(p_good) == pytest.approx(expected, abs=1e-4)
    assert soft.probabilities(text) == pytest.approx((p_first, p_second))  # the prefix cache was rewound
    assert soft.rate([""], [text]) == pytest.approx([p_first + p_second - 1])
    assert hard.rate([""], [text]) == [float((p_first > 0.5) + (p_second > 0.5) - 1)]
    assert "Answer: A" in hard.prefix() and "Answer: B" in hard.prefix()  # the examples' answers alternate


def test_make_value():
    """A search's value is a direct judge: one as it is, a name, scorer or function mapped onto [-1, 1]."""
    from criticgym.critics.judge import DigitJudge

    assert isinstance(make_value("vader"), ScorerValue)
    function = lambda prompts, texts: [0.5, 3.0][: len(texts)]  # noqa: E731
    value = make_value(function)
    assert isinstance(value, FunctionValue) and isinstance(value, DirectJudge)
    assert value.rate(["", ""], ["a", "b"]) == [0.5, 1.0]  # (-1, 1) as it is, clipped
    judge = DigitJudge.__new__(DigitJudge)  # a direct judge (rate) is a value as it is
    assert make_value(judge) is judge
    with pytest.raises(ConfigError, match=r"a direct judge \(rate\), a scorer \(score\) or a function"):
        make_value(3)
    with pytest.raises(ConfigError, match="question"):
        make_value("self")


def test_the_names_from_before_the_rename_still_work_with_a_warning():
    from criticgym.critics import verbalizer
    from criticgym.search import values

    for old, new in (("make_evaluator", make_value), ("ScorerEvaluator", ScorerValue), ("SelfEvaluator", SelfValue)):
        with pytest.warns(DeprecationWarning, match=rf"{old} is now {new.__name__}; the old name goes in 1.0"):
            assert getattr(values, old) is new
    from tests.critics.test_verbalizer import WORDS, Counting

    with pytest.warns(DeprecationWarning, match=r"GapEvaluator\(scorer\) is now the scorer itself"):
        scorer = verbalizer.LabelWordScorer(Counting(), WORDS)
        assert verbalizer.GapEvaluator(scorer)([""], ["x"]) == scorer.rate([""], ["x"])
    with pytest.warns(DeprecationWarning, match=r"ValueFunction is now DirectJudge"):
        from criticgym.critics import ValueFunction
    assert ValueFunction is DirectJudge
    with pytest.raises(AttributeError):
        values.Evaluator  # noqa: B018  (the alias of ValueFunction in search/rain.py is gone, as is any other)
