"""Scorers: batched sequence-level judges that turn (prompt, completion) pairs into one number each.

A scorer is anything with ``score(prompts, completions, references=None) -> list[float]``; higher is better.
A plain function works too, including Hugging Face TRL reward functions (``f(completions, **kwargs)``,
``f(prompts, completions, completion_ids, **kwargs)``): see :class:`FunctionScorer`.

Built in (offline):

============================  =================================================================  ==========
name                          what it measures                                                   range
============================  =================================================================  ==========
``sentiment-classifier``      logistic regression on MiniLM embeddings, trained on Rotten         [-1, 1]
                              Tomatoes (cached after the first use): ``2 P(positive) - 1``
``vader``                     VADER compound sentiment (lexicon)                                  [-1, 1]
``toxicity``                  minus the offensive-language probability (alt-profanity-check)      [-1, 0]
``profanity-list``            -1 if a word of better-profanity's list (with its spelling          {-1, 0}
                              variants) occurs, else 0: a second toxicity judge with no learned
                              part, independent of alt-profanity-check's data and model
``rouge``                     ROUGE-L F1 against the reference                                    [0, 1]
``word-count``                words per token of an 8-token budget (the toy task)                 [0, 1]
``exact-answer``              1 if the ``Answer: N`` line equals the reference's, else 0          {0, 1}
============================  =================================================================  ==========
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from criticgym.critics.embeddings import embed
from criticgym.critics.protocols import Scorer, TokenScorer
from criticgym.errors import ConfigError, CriticGymError, name_of, require

SCORE_RANGES: dict[str, tuple[float, float]] = {
    "sentiment-classifier": (-1.0, 1.0),
    "vader": (-1.0, 1.0),
    "toxicity": (-1.0, 0.0),
    "profanity-list": (-1.0, 0.0),
    "rouge": (0.0, 1.0),
    "word-count": (0.0, 1.0),
    "exact-answer": (0.0, 1.0),
}
"""The range of each built-in scorer (the table above), for mapping scores onto a common scale."""


class FunctionScorer:
    """Adapts a plain function, such as a Hugging Face TRL reward function, to the :class:`Scorer` protocol.

    criticgym offers what TRL passes: ``prompts``, ``completions``, ``completion_ids`` (the generated token ids,
    when the caller has them) and, for tasks with references, ``references``. A function whose parameters
    use these names, or that takes ``**kwargs``, is called with keywords, as TRL calls it; any signature of
    TRL's documentation works, e.g. ``f(completions, **kwargs)`` or
    ``f(prompts, completions, completion_ids, **kwargs)``. Any other function is called as
    ``fn(prompts, completions)``.

    Raises:
        ConfigError: at construction, when the function requires a parameter criticgym cannot give.
    """

    KEYWORDS = ("prompts", "completions", "completion_ids", "references")

    def __init__(self, fn: Callable[..., Sequence[float]]) -> None:
        self.fn = fn
        params = inspect.signature(fn).parameters
        self.var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        self.by_keyword = self.var_kw or any(n in self.KEYWORDS for n in named)
        if self.by_keyword:
            required = [n for n in named if params[n].default is inspect.Parameter.empty]
            unknown = [n for n in required if n not in self.KEYWORDS]
            if unknown:
                raise ConfigError(
                    f"The reward function {getattr(fn, '__name__', fn)!r} requires {unknown}, which criticgym "
                    f"does not pass; it passes {list(self.KEYWORDS)}. Give those parameters defaults or read them "
                    "from **kwargs."
                )
            self.accepted = set(self.KEYWORDS) if self.var_kw else set(named) & set(self.KEYWORDS)
            self.required = set(required)
        self.takes_completion_ids = self.by_keyword and "completion_ids" in self.accepted

    def score(self, prompts, completions, references=None, completion_ids=None) -> list[float]:
        """Call the function (its result is validated by :func:`checked_scores`, where callers check)."""
        if not self.by_keyword:
            return self.fn(list(prompts), list(completions))  # checked by the caller (checked_scores)
        available: dict[str, Any] = {"prompts": list(prompts), "completions": list(completions)}
        if completion_ids is not None:
            available["completion_ids"] = [[int(t) for t in ids] for ids in completion_ids]
        if references is not None:
            available["references"] = list(references)
        missing = self.required - set(available)
        if missing:
            raise ConfigError(
                f"The reward function {getattr(self.fn, '__name__', self.fn)!r} requires {sorted(missing)}, which "
                "this caller cannot give (completion_ids come only from an env or a rollout)."
            )
        return self.fn(**{k: v for k, v in available.items() if k in self.accepted})

    def __repr__(self) -> str:
        return f"FunctionScorer({name_of(self.fn)})"


def score_texts(
    scorer: Scorer,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[str | None] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> list[float]:
    """Call a scorer, handing it the generated token ids when it takes them (a TRL-style reward function).

    The scores are validated (:func:`checked_scores`): one finite real number per completion, else an error that
    names the scorer.
    """
    if completion_ids is not None and isinstance(scorer, TokenScorer) and scorer.takes_completion_ids:
        scores = scorer.score(prompts, completions, references, completion_ids=completion_ids)
    else:
        scores = scorer.score(prompts, completions, references)
    return checked_scores(scores, len(completions), scorer).tolist()


def as_scorer(scorer: str | Scorer | Callable[..., Sequence[float]]) -> Scorer:
    """A built-in scorer by name, a :class:`Scorer`, or a wrapped function."""
    if isinstance(scorer, str):
        return make_scorer(scorer)
    if callable(getattr(scorer, "score", None)):
        return scorer  # type: ignore[return-value]
    if callable(scorer):
        return FunctionScorer(scorer)
    raise ConfigError(
        f"A scorer must be a name {sorted(SCORERS)}, an object with score(prompts, completions), or a function; "
        f"got {type(scorer).__name__}."
    )


def _is_real(value: Any) -> bool:
    """A real number: a Python or numpy int or float (or a 0-d array of one), not a bool or a string."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating))


def checked_scores(scores: Any, expected: int, who: object) -> np.ndarray:
    """Validate a scorer's output: one finite real number per input. A fault never becomes a silent reward.

    Strings (``"0.5"``) and booleans are refused, not converted; so are ``None``, a bare number and a list of the
    wrong length. Every message names the scorer (the user's function, for a wrapped one).
    """
    who = name_of(who)
    if isinstance(scores, (str, bytes, dict)) or not hasattr(scores, "__iter__"):
        raise CriticGymError(
            f"Scorer {who} returned {type(scores).__name__} {scores!r:.60}; a scorer returns a list of {expected} "
            "numbers, one per completion."
        )
    values = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
    if len(values) != expected:
        raise CriticGymError(f"Scorer {who} returned {len(values)} scores for {expected} completions.")
    bad = [v for v in values if not _is_real(v)]
    if bad:
        raise CriticGymError(
            f"Scorer {who} returned {bad[0]!r:.60} ({type(bad[0]).__name__}); every score must be a real number "
            "(int or float, not a bool or a string)."
        )
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise CriticGymError(f"Scorer {who} returned a non-finite score ({array[~np.isfinite(array)][0]}).")
    return array


def _joined(prompts: Sequence[str], completions: Sequence[str], include_prompt: bool) -> list[str]:
    return [p + c for p, c in zip(prompts, completions, strict=True)] if include_prompt else list(completions)


class VaderSentiment:
    """VADER compound sentiment in [-1, 1].

    Args:
        include_prompt: score the prompt and completion together (the whole review), not the completion alone.

    Example:
        >>> VaderSentiment(include_prompt=False).score(["x"], ["a wonderful, moving film"])[0] > 0.5
        True
    """

    def __init__(self, include_prompt: bool = True) -> None:
        self.include_prompt = include_prompt

    def score(self, prompts, completions, references=None) -> list[float]:
        """Compound polarity of each text."""
        analyzer = _vader()
        return [analyzer.polarity_scores(t)["compound"] for t in _joined(prompts, completions, self.include_prompt)]


@lru_cache(maxsize=1)
def _vader():
    module = require("vaderSentiment.vaderSentiment", "vaderSentiment==3.3.2", "The VADER sentiment scorer")
    return module.SentimentIntensityAnalyzer()


CLASSIFIER_CACHE = "sentiment-classifier-v2"
"""The cache folder of the trained sentiment classifier."""


class SentimentClassifier:
    """A learned sentiment classifier: logistic regression on MiniLM embeddings.

    The default instance is trained on the Rotten Tomatoes train split on first use and cached (with its
    test accuracy, ``meta["test_accuracy"]``) in the criticgym cache folder.

    Args:
        include_prompt: score the prompt and completion together.
    """

    def __init__(self, include_prompt: bool = True) -> None:
        self.include_prompt = include_prompt
        self._model = None
        self.meta: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}  # reloaded from the cache after unpickling

    def _load(self):
        if self._model is None:
            import joblib

            from criticgym.rollout.models import build_once

            folder = build_once(CLASSIFIER_CACHE, _train_sentiment_classifier)
            self._model = joblib.load(folder / "model.joblib")
            self.meta = json.loads((folder / "meta.json").read_text())
        return self._model

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) for each text."""
        model = self._load()
        return model.predict_proba(embed(texts))[:, 1]

    def score(self, prompts, completions, references=None) -> list[float]:
        """``2 P(positive) - 1``."""
        return list(2.0 * self.predict_proba(_joined(prompts, completions, self.include_prompt)) - 1.0)


def _train_sentiment_classifier(out) -> None:
    import joblib

    sklearn = require("sklearn.linear_model", "scikit-learn", "Training the sentiment classifier")
    from criticgym.data import load_rotten_tomatoes

    train, test = load_rotten_tomatoes("train"), load_rotten_tomatoes("test")
    model = sklearn.LogisticRegression(C=2.0, max_iter=2000)
    model.fit(embed([e.text for e in train]), [e.label for e in train])
    accuracy = float(model.score(embed([e.text for e in test]), [e.label for e in test]))
    joblib.dump(model, out / "model.joblib")
    meta = {
        "test_accuracy": round(accuracy, 4),
        "n_train": len(train),
        "n_test": len(test),
        "corpus": "rotten_tomatoes",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


class ToxicityScorer:
    """Minus the probability that the completion is offensive (alt-profanity-check): higher is cleaner.

    Example:
        >>> s = ToxicityScorer().score(["", ""], ["have a nice day", "you stupid idiot"])
        >>> s[0] > s[1]
        True
    """

    def __init__(self, include_prompt: bool = False) -> None:
        self.include_prompt = include_prompt

    def score(self, prompts, completions, references=None) -> list[float]:
        """``-P(offensive)``."""
        module = require("profanity_check", "alt-profanity-check==1.9.1", "The toxicity scorer")
        return [-float(p) for p in module.predict_prob(_joined(prompts, completions, self.include_prompt))]


class ProfanityList:
    """-1 when the completion holds a word of better-profanity's word list (or a listed spelling variant), else 0.

    A word list, not a learned model: as a held-out judge of a policy trained on ``toxicity`` it shares neither
    that model's training data nor its features, so a policy cannot learn its quirks through the training reward.
    It is narrower (profanity only, no insults without swear words).

    Example:
        >>> ProfanityList().score(["", ""], ["have a nice day", "what the fuck"])
        [0.0, -1.0]
    """

    def __init__(self, include_prompt: bool = False) -> None:
        self.include_prompt = include_prompt

    def score(self, prompts, completions, references=None) -> list[float]:
        """``-1.0`` for a listed word, ``0.0`` otherwise."""
        words = _profanity_words()
        return [
            -1.0 if words.contains_profanity(t) else 0.0 for t in _joined(prompts, completions, self.include_prompt)
        ]


@lru_cache(maxsize=1)
def _profanity_words():
    module = require("better_profanity", "better-profanity==0.7.0", "The profanity-list scorer")
    module.profanity.load_censor_words()
    return module.profanity


class RougeScorer:
    """ROUGE F1 of the completion against the reference (``rougeL`` by default).

    Example:
        >>> RougeScorer().score(["article"], ["the cat sat"], ["the cat sat"])
        [1.0]
    """

    def __init__(self, metric: str = "rougeL") -> None:
        if metric not in ("rouge1", "rouge2", "rougeL"):
            raise ConfigError(f"metric must be 'rouge1', 'rouge2' or 'rougeL', got {metric!r}.")
        self.metric = metric

    def score(self, prompts, completions, references=None) -> list[float]:
        """F1 against each reference."""
        if references is None or any(r is None for r in references):
            raise ConfigError("The ROUGE scorer needs a reference for every completion; use a task that has them.")
        module = require("rouge_score.rouge_scorer", "rouge-score==0.1.2", "The ROUGE scorer")
        scorer = module.RougeScorer([self.metric], use_stemmer=True)
        return [scorer.score(r, c)[self.metric].fmeasure for c, r in zip(completions, references, strict=True)]


class WordCount:
    """Words written per token of budget, capped at 1: the reward of the toy task ``criticgym/Words-v0``.

    A random policy scores about 0.4 (half of a BPE vocabulary starts a new word); a policy that writes one
    whole word per token scores 1.

    Example:
        >>> WordCount(budget=4).score([""], [" one two three"])
        [0.75]
    """

    def __init__(self, budget: int = 8) -> None:
        self.budget = budget

    def score(self, prompts, completions, references=None) -> list[float]:
        """``min(words, budget) / budget``."""
        return [min(len(c.split()), self.budget) / self.budget for c in completions]


class ExactAnswer:
    r"""1.0 when the completion's last ``Answer: N`` equals the reference's, else 0.0 (arithmetic).

    Example:
        >>> ExactAnswer().score(["", ""], ["3 + 4 = 7\nAnswer: 7", "Answer: 8"], ["Answer: 7", "Answer: 7"])
        [1.0, 0.0]
    """

    def score(self, prompts, completions, references=None) -> list[float]:
        """Exact match of the final answers."""
        from criticgym.data.arithmetic import parse_answer

        if references is None or any(r is None for r in references):
            raise ConfigError("The exact-answer scorer needs the gold solution of every problem as its reference.")
        return [
            float(parse_answer(c) is not None and parse_answer(c) == parse_answer(r))
            for c, r in zip(completions, references, strict=True)
        ]


SCORERS: dict[str, Callable[[], Scorer]] = {
    "sentiment-classifier": SentimentClassifier,
    "vader": VaderSentiment,
    "toxicity": ToxicityScorer,
    "profanity-list": ProfanityList,
    "rouge": RougeScorer,
    "word-count": WordCount,
    "exact-answer": ExactAnswer,
}


def make_scorer(name: str) -> Scorer:
    """A built-in scorer by name, or a reward model saved by ``criticgym train-rm`` (its folder)."""
    from criticgym.critics.reward_model import RewardModelScorer, is_reward_model

    if name in SCORERS:
        return SCORERS[name]()
    if is_reward_model(name):
        return RewardModelScorer(name)
    raise ConfigError(
        f"Unknown scorer {name!r}; use one of {sorted(SCORERS)}, a reward-model folder (criticgym train-rm), "
        "or pass your own scorer."
    )


__all__ = [
    "FunctionScorer",
    "RougeScorer",
    "Scorer",
    "SentimentClassifier",
    "ToxicityScorer",
    "VaderSentiment",
    "WordCount",
    "as_scorer",
    "checked_scores",
    "make_scorer",
]
