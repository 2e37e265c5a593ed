"""The reward set-ups, as data: one typed specification each, and the one parser of their string forms.

A reward set-up is one of four frozen dataclasses, each with exactly its own options:

- :class:`Sparse`: the task's score of the finished text (or ``scorer``), paid at its last token.
- :class:`Relc`: RELC, ``alpha1 *`` that score plus ``alpha2 *`` per-token span rewards from a critic.
- :class:`RlaifDirect`: an AI judge's direct score of each completion.
- :class:`RlaifPairwise`: an AI judge's soft preference between two completions of the same prompt.

``gym.make``, ``criticgym train``, the ablation and the frontier take a spec; registration
(:mod:`criticgym.registration`) is the one place where a spec becomes a critic, a judge and wrappers. Strings are a
convenience that :func:`reward_spec` parses into a spec: ``"sparse"``, ``"relc"``, ``"relc-<critic>"``,
``"random"``, ``"random-<critic>"`` (RELC with random spans), ``"rlaif-direct"``, ``"rlaif-pairwise"``. Inside a
spec, a name with structure is its typed value (:mod:`criticgym.specs`): ``Relc(critic="random-lexicon")`` holds
``RandomSpans("lexicon")``, ``RlaifDirect(judge_model="label:self")`` holds ``LabelJudge(Policy())``; either form
may be given, and the spec is the same.

    >>> reward_spec("relc-lexicon", alpha2=0.5)
    Relc(critic='lexicon', critic_model='smollm2-135m', alpha1=1.0, alpha2=0.5, gate=None, positive_value=None, \
negative_value=None, critic_seed=None, scorer=None)
    >>> reward_spec("sparse", critic="lexicon")
    Traceback (most recent call last):
    ...
    criticgym.errors.ConfigError: 'critic' is not an option of the sparse reward (its options: scorer); it belongs \
to relc.

A field that names a scorer, a critic or a judge also takes the object itself (``Relc(critic=my_function)``);
:func:`as_dict` writes such an object by its import path (``{"object": "my_module:my_function"}``), which
:func:`from_dict` imports back, so a run's ``config.json`` names it; an object without one (a lambda) is written as
unnamed, and a run holding it cannot be resumed or re-evaluated from its folder.

This module is data only (tyro's markers keep ``kind`` off the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, Literal

import tyro

from criticgym.errors import ConfigError
from criticgym.specs import TYPED, RandomSpans, parse_critic, parse_judge, parse_model

DEFAULT_MODEL = "smollm2-135m"
"""The model the defaults of a run name: the policy, the LLM critic, the AI judge, SELF's annotator (an env made
without ``model=`` tokenizes with ``"tiny"``'s tokenizer, which is SmolLM2's too)."""

# The info keys through which rewards reach the learner (wrappers write them, algos and the SB3 adapter read them).
EXTRINSIC_REWARD = "extrinsic_reward"
"""``info[EXTRINSIC_REWARD]``: a finished episode's task score (the sparse part of any reward)."""
TOKEN_REWARDS = "token_rewards"
"""``info[TOKEN_REWARDS]``: a finished episode's per-token rewards, paid in hindsight by the dense rewards (RELC's
spans, pairwise preferences); the learner writes them onto the steps. A vector env's rows carry the mask
``info["_" + TOKEN_REWARDS]``."""
UNSCORED = "unscored"
"""``info[UNSCORED]`` (a single env's reward wrappers): True on every step before the one that scores the episode.
An episode that ends with it (``truncated``) was cut by a limit outside the env, Gymnasium's ``TimeLimit``
(``gym.make(..., max_episode_steps=n)`` shorter than the token budget): it was never scored, and its reward 0 is no
score. The env's own budget, ``max_new_tokens``, ends an episode scored."""


@dataclass(frozen=True)
class Sparse:
    """The task's score of the finished completion, paid at its last token."""

    kind: Annotated[Literal["sparse"], tyro.conf.Suppress] = field(default="sparse", init=False, repr=False)
    scorer: str | None = None
    """A scorer name, a reward-model folder, or a scorer object or function (None: the task's scorer)."""


@dataclass(frozen=True)
class Relc:
    """RELC: alpha1 times the task's score at the last token plus alpha2 times a critic's span rewards."""

    kind: Annotated[Literal["relc"], tyro.conf.Suppress] = field(default="relc", init=False, repr=False)
    critic: str | None = None
    """The span critic: lexicon, toxicity, llm, label, random, random-<critic> (RandomSpans), a registered name, or a
    critic object or function (None: the task's)."""
    critic_model: str = DEFAULT_MODEL
    """The model the llm and label critics ask: a built-in name, a folder, a hub id or openai:<model>@<url>
    (OpenAIServer)."""
    alpha1: float = 1.0
    """Weight of the task's score."""
    alpha2: float = 1.0
    """Weight of the span rewards."""
    gate: float | None = None
    """Pay spans only when the score is below this (None: always)."""
    positive_value: float | None = None
    """A good span's reward, spread over its tokens (None: the task's)."""
    negative_value: float | None = None
    """A bad span's reward (None: the task's)."""
    critic_seed: int | None = None
    """The random critic's seed (None: the run's seed; 0 for gym.make)."""
    scorer: str | None = None
    """A scorer name or a reward-model folder (None: the task's scorer)."""

    def __post_init__(self) -> None:  # a string form becomes its typed value (criticgym.specs), once
        object.__setattr__(self, "critic", parse_critic(self.critic))
        object.__setattr__(self, "critic_model", parse_model(self.critic_model))


@dataclass(frozen=True)
class RlaifDirect:
    """Direct RLAIF: an AI judge's score of each completion (0-9 in expectation, mapped to [-1, 1])."""

    kind: Annotated[Literal["rlaif-direct"], tyro.conf.Suppress] = field(default="rlaif-direct", init=False, repr=False)
    judge_model: str = DEFAULT_MODEL
    """The judge: a model, label:<model> (the task's label-word question), label:self (a frozen copy of the
    initial policy), a registered name, or a judge object (criticgym.specs.parse_judge reads the name)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "judge_model", parse_judge(self.judge_model))


@dataclass(frozen=True)
class RlaifPairwise:
    """Pairwise RLAIF: sub-envs 2i and 2i+1 complete one prompt; each gets its soft preference over the other."""

    kind: Annotated[Literal["rlaif-pairwise"], tyro.conf.Suppress] = field(
        default="rlaif-pairwise", init=False, repr=False
    )
    judge_model: str = DEFAULT_MODEL
    """The judge: a model, label:<model> (the task's label-word question), label:self, a registered name, or a
    judge object."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "judge_model", parse_judge(self.judge_model))


RewardSpec = Sparse | Relc | RlaifDirect | RlaifPairwise
RewardOption = Annotated[
    Annotated[Sparse, tyro.conf.subcommand("sparse")]
    | Annotated[Relc, tyro.conf.subcommand("relc")]
    | Annotated[RlaifDirect, tyro.conf.subcommand("rlaif-direct")]
    | Annotated[RlaifPairwise, tyro.conf.subcommand("rlaif-pairwise")],
    tyro.conf.OmitSubcommandPrefixes,
]
"""A reward set-up as a command-line field: what ``--reward FORM`` becomes (one subcommand per spec, each showing
only its own options; :func:`criticgym.train.config.reward_args`)."""
SPECS: dict[str, type[RewardSpec]] = {cls.kind: cls for cls in (Sparse, Relc, RlaifDirect, RlaifPairwise)}
FORMS = ("sparse", "relc", "relc-<critic>", "random", "random-<critic>", "rlaif-direct", "rlaif-pairwise")


def options_of(spec: type[RewardSpec] | RewardSpec) -> tuple[str, ...]:
    """The option names of a reward set-up (its fields besides ``kind``)."""
    return tuple(f.name for f in fields(spec) if f.name != "kind")


OPTIONS = frozenset(name for cls in SPECS.values() for name in options_of(cls))
"""Every option any reward set-up has: what ``gym.make`` reads as reward options rather than env options."""


def _check_options(kind: str, options: dict[str, Any]) -> None:
    own = options_of(SPECS[kind])
    for name in options:
        if name in own:
            continue
        owners = [k for k, cls in SPECS.items() if name in options_of(cls)]
        where = f"; it belongs to {' and '.join(owners)}" if owners else ""
        raise ConfigError(
            f"{name!r} is not an option of the {kind} reward (its options: {', '.join(own) or 'none'}){where}."
        )


def reward_spec(reward: RewardSpec | str | None = "sparse", **options: Any) -> RewardSpec | None:
    """A reward spec from a spec, a string form or None (no reward), with ``options`` setting its fields.

    The string forms are ``sparse``, ``relc``, ``relc-<critic>``, ``random``, ``random-<critic>``,
    ``rlaif-direct`` and ``rlaif-pairwise``; an option the set-up does not have is an error that says which set-up
    it belongs to.
    """
    if reward is None:
        if options:
            raise ConfigError(f"reward=None pays nothing, so it takes no reward options; got {sorted(options)}.")
        return None
    if isinstance(reward, tuple(SPECS.values())):
        _check_options(reward.kind, options)
        return replace(reward, **options)
    if not isinstance(reward, str):
        raise ConfigError(
            f"reward must be a reward spec (Sparse, Relc, RlaifDirect, RlaifPairwise), one of {list(FORMS)} or None; "
            f"got {type(reward).__name__}."
        )
    kind, critic = _parse_form(reward)
    if critic is not None:
        if parse_critic(options.get("critic")) not in (None, critic):
            raise ConfigError(f"reward={reward!r} names the critic {str(critic)!r}; drop critic={options['critic']!r}.")
        options = {**options, "critic": critic}
    _check_options(kind, options)
    return SPECS[kind](**options)


def _parse_form(reward: str) -> tuple[str, Any]:
    """A string form's reward kind and the critic it names (None: none named)."""
    if reward in SPECS:
        return reward, None
    head, _, tail = reward.partition("-")
    if head == "relc" and tail:
        return "relc", tail
    if head == "random":
        return "relc", parse_critic(reward)
    raise ConfigError(f"Unknown reward set-up {reward!r}; use one of {list(FORMS)}, a reward spec, or None.")


def spec_name(spec: RewardSpec | None) -> str:
    """A short name for people and folders: ``sparse``, ``relc-lexicon``, ``random-lexicon``, ``rlaif-direct``."""
    if spec is None:
        return "none"
    if isinstance(spec, Relc) and spec.critic is not None:
        if isinstance(spec.critic, RandomSpans):
            return str(spec.critic)
        if not isinstance(spec.critic, str):  # an object: its function's or class's name
            return f"relc-{getattr(spec.critic, '__name__', type(spec.critic).__name__)}"
        return f"relc-{spec.critic}"
    return spec.kind


# -- objects in a spec, written down by name -------------------------------------------------------------------
# A spec's scorer, critic or judge may be an object. A run's config.json holds it as {"object": "module:name"}
# when the object is what that import path gives (a module-level function, class or instance), else as
# {"object": None, "type": ...}: a run can start with it, but not be resumed or re-evaluated from its folder.

OBJECT = "object"
"""The key of an object's reference in a spec's plain data."""


def object_path(obj: Any) -> str | None:
    """``"module:qualified.name"`` when importing it gives ``obj`` back, else None.

    None for a lambda, a local function, or an instance that no module holds by name.
    """
    import sys

    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str) and "<" not in name:
        path = f"{module}:{name}"
        return path if _imported(path, quiet=True) is obj else None
    for module in dict.fromkeys((type(obj).__module__, "__main__")):  # an instance a module holds by name
        found = [k for k, v in vars(sys.modules.get(module, object())).items() if v is obj and not k.startswith("_")]
        if found:
            return f"{module}:{found[0]}"
    return None


def _imported(path: str, quiet: bool = False) -> Any:
    """The object an ``object_path`` names (None, when ``quiet``, where it cannot be imported)."""
    import importlib

    module, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        if quiet:
            return None
        raise ConfigError(f"Cannot import {path!r}, an object the run's reward set-up names: {error}.") from error
    return obj


def unnamed(spec: RewardSpec) -> list[str]:
    """The fields of a spec holding an object that has no :func:`object_path`, as ``field (what)``."""
    values = {name: getattr(spec, name) for name in options_of(spec)}
    return [
        f"{name} ({getattr(v, '__qualname__', type(v).__qualname__)})"
        for name, v in values.items()
        if v is not None and not isinstance(v, (str, int, float, *TYPED)) and object_path(v) is None
    ]


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, TYPED):  # a typed name (criticgym.specs) by its string form
        return str(value)
    path = object_path(value)
    return {OBJECT: path} if path else {OBJECT: None, "type": getattr(value, "__qualname__", type(value).__qualname__)}


def as_dict(spec: RewardSpec) -> dict[str, Any]:
    """A spec as plain data, ``kind`` included (what a run's ``config.json`` holds); objects by import path."""
    return {"kind": spec.kind} | {name: _plain(getattr(spec, name)) for name in options_of(spec)}


def _object(name: str, value: Any) -> Any:
    if not (isinstance(value, dict) and OBJECT in value):
        return value
    if value[OBJECT] is None:
        raise ConfigError(
            f"The run's {name} was an object criticgym could not name ({value.get('type')}: a lambda, a local "
            "function or an instance no module holds), so the run cannot be resumed or re-evaluated with it. Use a "
            "function, class or instance defined at the top of a module, or register it by name "
            "(criticgym.registration.register_critic / register_judge / register_scorer)."
        )
    return _imported(value[OBJECT])


def from_dict(data: dict[str, Any]) -> RewardSpec:
    """The spec :func:`as_dict` wrote, its objects imported back."""
    options = {k: _object(k, v) for k, v in data.items() if k != "kind"}
    if data.get("kind") not in SPECS:
        raise ConfigError(f"A reward spec needs a kind, one of {list(SPECS)}; got {data.get('kind')!r}.")
    return reward_spec(data["kind"], **options)
