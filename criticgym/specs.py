"""What a name inside a set-up stands for, typed: the one parser of each string grammar.

A string that carries structure is a convenience for the command line and ``gym.make``; it parses once, here, into
a frozen dataclass, and the rest of the package reads only the dataclass. Each typed value's ``str()`` is its string
form (what a run's ``config.json`` writes), and a field that takes one takes either.

=====================================================  ==============================================================
string form                                            typed value
=====================================================  ==============================================================
a model: ``openai:<model>@<url>``                      :class:`OpenAIServer` (any other name: a built-in model, a
                                                       folder or a hub id, kept as the string)
a model: ``self``                                      :class:`Policy`, the policy (its initial weights, frozen)
a judge: ``label:<model>``, ``label-content-free:``    :class:`LabelJudge`: the task's label-word question asked of a
``<model>``, ``label:self``                            model, with its calibration
a judge: ``lexicon``                                   :class:`ScorerPreference`: ``ScorerPreference("vader")``
a critic: ``random``, ``random-<critic>``              :class:`RandomSpans`: random spans with a critic's budget
feedback: ``program``, ``model:<model>``               :class:`ProgramAnnotator`, :class:`FeedbackModel`
a search value: ``self``, ``self-soft``,               :class:`SelfQuestion` (``soft``), and ``self-label``: the
``self-label``                                         policy's label-word gap, ``LabelJudge(Policy(),
                                                       "content-free")``
=====================================================  ==============================================================

A name with no structure (``"lexicon"`` as a critic, ``"vader"``, ``"smollm2-135m"``, a registered name) stays a
string: the registries of :mod:`criticgym.registration` and :mod:`criticgym.critics.scorers` look it up.

    >>> parse_judge("label-content-free:self")
    LabelJudge(model=Policy(), calibration='content-free')
    >>> str(parse_critic("random-lexicon")), parse_model("openai:qwen@http://127.0.0.1:8000")
    ('random-lexicon', OpenAIServer(model='qwen', url='http://127.0.0.1:8000'))
    >>> parse_judge("label:")
    Traceback (most recent call last):
    ...
    criticgym.errors.ConfigError: Cannot read the judge 'label:': a judge is written label:<model>, \
label-content-free:<model>, label:self, lexicon, a scorer name (pairwise), a registered judge name, or a model \
(a built-in name, a folder, a hub id, openai:<model>@<url>, or self: the policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from criticgym.errors import ConfigError

_MODEL = "a built-in name, a folder, a hub id, openai:<model>@<url>, or self: the policy"
FORMS = {
    "model": f"a model ({_MODEL})",
    "judge": (
        "label:<model>, label-content-free:<model>, label:self, lexicon, a scorer name (pairwise), a registered judge "
        f"name, or a model ({_MODEL})"
    ),
    "critic": "lexicon, toxicity, llm, label, random, random-<critic>, or a registered critic name",
    "feedback": "program (the task's annotator) or model:<model> (a model, as --critic-model names one)",
    "search value": (
        "self, self-soft (the policy answers the task's two-option question), self-label (the policy's label-word "
        "gap), label:<model>, label-content-free:<model>, or a scorer name"
    ),
}
"""Every form of each role's string grammar, as its error lists them."""


def _unreadable(role: str, value: str, why: str = "") -> ConfigError:
    article = "an" if role[0] in "aeiou" else "a"
    return ConfigError(f"Cannot read the {role} {value!r}{why}: {article} {role} is written {FORMS[role]}.")


# -- models -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The policy itself: the initial policy, frozen (``self``). Only the code that holds the policy resolves it."""

    def __str__(self) -> str:
        return "self"


@dataclass(frozen=True)
class OpenAIServer:
    """A model served behind an OpenAI-compatible API (vLLM, llama.cpp's server, Ollama): ``openai:<model>@<url>``.

    Its key is read from ``$OPENAI_API_KEY``.
    """

    model: str
    """The model name the server expects."""
    url: str
    """The server's root, http(s)://host:port (``/v1`` is added when missing)."""

    def __post_init__(self) -> None:
        if not self.model or not self.url.startswith(("http://", "https://")):
            raise _unreadable("model", str(self), " (a server needs a model name and an http(s) url)")

    def __str__(self) -> str:
        return f"openai:{self.model}@{self.url}"


Model = str | OpenAIServer | Policy
"""A model by name: a built-in name, a folder or a hub id (a string), a server, or the policy."""


def parse_model(value: Any) -> Any:
    """A model name's typed value (:data:`Model`); anything that is not a string (a backend, a pair) as it is."""
    if not isinstance(value, str):
        return value
    if value == "self":
        return Policy()
    if value.startswith("openai:"):
        model, at, url = value.removeprefix("openai:").rpartition("@")
        if not at:
            raise _unreadable("model", value, " (a server is written openai:<model>@<http(s) url>)")
        return OpenAIServer(model, url)
    if not value:
        raise _unreadable("model", value)
    return value


# -- judges -------------------------------------------------------------------------------------------------

CALIBRATED = {"none": "label", "content-free": "label-content-free"}
"""A label-word judge's calibration, by the prefix of its string form."""


@dataclass(frozen=True)
class LabelJudge:
    """The task's label-word question asked of a model, read from its next-token probabilities.

    ``label:<model>`` (calibration ``"none"``), ``label-content-free:<model>`` (minus the gap of a content-free text),
    ``label:self`` (the policy). Direct, it rates ``tanh(gap / 2)``; pairwise, a preference with temperature 1.
    """

    model: Model
    """The model asked: a name, a server, or the policy (``"self"`` and ``openai:...`` are read as such)."""
    calibration: Literal["none", "content-free"] = "none"
    """``"none"``: the raw gap; ``"content-free"``: minus the gap of the task's content-free text."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", parse_model(self.model))
        if self.calibration not in CALIBRATED:
            raise ConfigError(
                f"A label-word judge's calibration is one of {list(CALIBRATED)}, not {self.calibration!r}."
            )

    def __str__(self) -> str:
        return f"{CALIBRATED[self.calibration]}:{self.model}"


@dataclass(frozen=True)
class ScorerPreference:
    """A pairwise judge that prefers the completion a scorer scores higher (the judge ``lexicon`` is VADER's)."""

    scorer: str
    """A scorer name (``criticgym.critics.scorers.SCORERS``) or a reward-model folder."""

    def __str__(self) -> str:
        return self.scorer


JUDGE_ALIASES = {"lexicon": ScorerPreference("vader")}
"""Judge names that stand for a typed judge: ``lexicon`` is the preference of VADER's compound score."""


def parse_judge(value: Any) -> Any:
    """A judge name's typed value; a judge object as it is.

    A :class:`LabelJudge`, a :class:`ScorerPreference`, a model (:func:`parse_model`), or a plain name (a registered
    judge, a scorer or a model).
    """
    if not isinstance(value, str):
        return value
    prefix, colon, model = value.partition(":")
    if colon and prefix in CALIBRATED.values():
        if not model:
            raise _unreadable("judge", value)
        calibration = next(k for k, v in CALIBRATED.items() if v == prefix)
        return LabelJudge(parse_model(model), calibration)
    if value in JUDGE_ALIASES:
        return JUDGE_ALIASES[value]
    if colon and prefix != "openai":
        raise _unreadable("judge", value)
    try:
        return parse_model(value)
    except ConfigError as error:
        raise _unreadable("judge", value) from error


# -- critics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomSpans:
    """RELC's control: random spans marking as many tokens as a critic does, with its values.

    ``random`` (the task's critic's budget) or ``random-<critic>``.
    """

    critic: str | None = None
    """The critic whose budget the spans copy (None: the task's)."""

    def __post_init__(self) -> None:
        if self.critic is not None and (not self.critic or isinstance(parse_critic(self.critic), RandomSpans)):
            raise _unreadable("critic", str(self), " (random spans copy the budget of a named critic)")

    def __str__(self) -> str:
        return "random" if self.critic is None else f"random-{self.critic}"


def parse_critic(value: Any) -> Any:
    """A critic name's typed value: :class:`RandomSpans` for ``random[-<critic>]``, else the name (a registry's).

    A critic object is returned as it is.
    """
    if not isinstance(value, str):
        return value
    if value == "random" or value.startswith("random-"):
        return RandomSpans(value.partition("-")[2] or None)
    if not value or ":" in value:
        raise _unreadable("critic", value)
    return value


# -- feedback in words --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramAnnotator:
    """The task's program annotator (``program``: ``TaskSpec.feedback.annotator``)."""

    def __str__(self) -> str:
        return "program"


@dataclass(frozen=True)
class FeedbackModel:
    """A model that writes the feedback, completion-style, with the task's prompts (``model:<model>``)."""

    model: Model
    """The model: a name, a server (``"openai:..."`` is read as one)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", parse_model(self.model))

    def __str__(self) -> str:
        return f"model:{self.model}"


def parse_feedback(value: Any) -> Any:
    """A feedback writer's typed value: :class:`ProgramAnnotator` or :class:`FeedbackModel`; an object as it is."""
    if not isinstance(value, str):
        return value
    if value == "program":
        return ProgramAnnotator()
    kind, colon, model = value.partition(":")
    if kind == "model" and colon and model:
        return FeedbackModel(model)
    raise _unreadable("feedback", value)


# -- search values ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfQuestion:
    """The policy answers the task's two-option question about its own text, in both orders (RAIN's self-evaluation).

    ``self`` (each order votes) or ``self-soft`` (the good option's probability, averaged).
    """

    soft: bool = False
    """Average the good option's probability (else the two orders' votes: -1, 0 or 1)."""

    def __str__(self) -> str:
        return "self-soft" if self.soft else "self"


SELF_LABEL = LabelJudge(Policy(), "content-free")
"""``self-label``: the policy's label-word gap, content-free calibrated."""
_VALUES = {"self": SelfQuestion(), "self-soft": SelfQuestion(soft=True), "self-label": SELF_LABEL}


def parse_value(value: Any) -> Any:
    """A search value's typed value: :class:`SelfQuestion`, a :class:`LabelJudge`, or a scorer name.

    An object (a scorer, a function) is returned as it is.
    """
    if not isinstance(value, str):
        return value
    if value in _VALUES:
        return _VALUES[value]
    if ":" in value:
        try:
            judge = parse_judge(value)
        except ConfigError as error:
            raise _unreadable("search value", value) from error
        if not isinstance(judge, LabelJudge):
            raise _unreadable("search value", value)
        return judge
    if not value:
        raise _unreadable("search value", value)
    return value


TYPED = (Policy, OpenAIServer, LabelJudge, ScorerPreference, RandomSpans, ProgramAnnotator, FeedbackModel, SelfQuestion)
"""The typed values of this module: a set-up writes each by its string form."""

__all__ = [
    "FORMS",
    "FeedbackModel",
    "LabelJudge",
    "Model",
    "OpenAIServer",
    "Policy",
    "ProgramAnnotator",
    "RandomSpans",
    "SELF_LABEL",
    "ScorerPreference",
    "SelfQuestion",
    "parse_critic",
    "parse_feedback",
    "parse_judge",
    "parse_model",
    "parse_value",
]
