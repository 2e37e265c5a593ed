"""The Gymnasium ids criticgym registers, and the one place where a reward spec becomes objects.

``gym.make(id, reward=...)`` takes a reward set-up (:mod:`criticgym.rewards`): a spec such as
``Relc(critic="lexicon", alpha2=0.5)``, or its string form with the spec's options as keywords
(``reward="relc", critic="lexicon", alpha2=0.5``; an option the set-up does not have is an error that names its
owner). ``reward=None`` pays nothing, for users who add their own wrappers.

- ``Sparse``: the task's scorer (or ``scorer=``, a name, a reward-model folder or a scorer object) at the last token.
- ``Relc``: ``alpha1 * score`` at the last token plus ``alpha2 *`` per-token span rewards of a critic
  (``critic=``: ``"lexicon"``, ``"toxicity"``, ``"llm"``, ``"label"`` (the task's label-word question asked of each
  clause by ``critic_model``), ``"random"`` / ``"random-<name>"`` for random spans with that critic's budget, or
  your own critic object), paid in hindsight.
- ``RlaifDirect``: an AI judge's direct score (``judge_model``, or ``judge=`` a direct judge object) at the last
  token. ``judge_model="label:<model>"`` asks the task's label-word question instead, for both RLAIF set-ups;
  ``"label:self"`` asks it of the policy: ``policy=`` (a model name, a frozen ``(model, tokenizer)`` pair or a
  function returning one), by default the env's ``model`` when it is a name.
- ``RlaifPairwise`` (vector env only, ``autoreset_mode="disabled"``, even ``num_envs``): sub-envs 2i and 2i+1
  complete the same prompt and each gets its centered soft preference over the other, ``2p - 1``
  (:mod:`criticgym.wrappers.preference`).

``overlap_feedback=True`` (vector env, ``autoreset_mode="disabled"``): the reward's expensive call (RELC's critic,
the sparse scorer, the direct judge) runs in a background thread while the other episodes generate; the rewards
are the same, paid on a later idle step of the finished row (:mod:`criticgym.wrappers.overlap`).

``feedback=`` (single env): episodes of two turns, answer then refinement after feedback in words
(:class:`~criticgym.wrappers.feedback.LanguageFeedback`): ``"program"`` (the task's annotator), ``"model:<name>"``
or a feedback writer; ``feedback_tokens=`` (96) sizes the observation for it. The reward scores the refinement.

A name with structure (``"label:self"``, ``"random-lexicon"``, ``"openai:<model>@<url>"``, ``"model:<name>"``) is read
once by :mod:`criticgym.specs` into its typed value (``LabelJudge(Policy())``, ``RandomSpans("lexicon")``, ...),
which every field here also takes itself.

Any other keyword goes to :class:`~criticgym.envs.TextGenEnv` (``model``, ``split``, ``max_new_tokens``, ...).
``max_new_tokens`` is the episode limit; a ``max_episode_steps`` shorter than it is refused where criticgym sees it
(:func:`check_episode_limit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import gymnasium as gym

from criticgym.errors import ConfigError, UnknownEnvError
from criticgym.rewards import (
    DEFAULT_MODEL,
    OPTIONS,
    Relc,
    RewardSpec,
    RlaifDirect,
    RlaifPairwise,
    Sparse,
    reward_spec,
    spec_name,
)
from criticgym.specs import LabelJudge, Policy, RandomSpans, parse_critic, parse_judge

ENV_IDS = {
    "criticgym/SentimentControl-v0": "sentiment",
    "criticgym/Detoxify-v0": "detoxify",
    "criticgym/Summarize-v0": "summarize",
    "criticgym/Words-v0": "words",
    "criticgym/Arithmetic-v0": "arithmetic",
}


class CriticContext(NamedTuple):
    """What a critic factory is given: the task, the env's tokenizer, the model it asks, and a seed."""

    task: Any  # the TaskSpec
    tokenizer: Any
    model: str  # the spec's critic_model: the model the llm and label critics ask
    seed: int


class JudgeContext(NamedTuple):
    """What a judge factory is given: the task, whether a pairwise judge is wanted, and the policy."""

    task: Any  # the TaskSpec
    pairwise: bool
    policy: Any  # what label:self judges with: a model name or a (model, tokenizer) pair (None: not known)


def _lexicon(ctx: CriticContext) -> Any:
    from criticgym.critics import LexiconCritic

    return LexiconCritic()


def _toxicity(ctx: CriticContext) -> Any:
    from criticgym.critics import ToxicityCritic

    return ToxicityCritic()


def _label(ctx: CriticContext) -> Any:
    """The task's label-word question, asked of each clause by the critic model."""
    from criticgym.critics.verbalizer import LabelWordCritic, LabelWordScorer

    if ctx.task.label_words is None:
        raise ConfigError(f"Task {ctx.task.name!r} has no label_words; give its TaskSpec some to use critic='label'.")
    scorer = LabelWordScorer(ctx.model, ctx.task.label_words, calibration="content-free", include_prompt=False)
    return LabelWordCritic(scorer)


def _llm(ctx: CriticContext) -> Any:
    from criticgym.critics import LLMCritic

    if ctx.task.critic_template is None:
        raise ConfigError(f"Task {ctx.task.name!r} has no critic_template; give its TaskSpec one to use critic='llm'.")
    return LLMCritic(ctx.model, template=ctx.task.critic_template, include_score=ctx.task.critic_sees_score)


CRITICS: dict[str, Callable[[CriticContext], Any]] = {
    "lexicon": _lexicon,
    "toxicity": _toxicity,
    "llm": _llm,
    "label": _label,
}
"""The named span critics: a factory per name, given a :class:`CriticContext` (:func:`register_critic` adds one).
``"random"`` and ``"random-<name>"`` wrap a named critic in random spans with its budget."""

JUDGES: dict[str, Callable[[JudgeContext], Any]] = {}
"""Named judges of your own (:func:`register_judge`), looked up before the built-in forms: ``label:<model>``,
``label-content-free:<model>``, ``label:self`` (the policy), a scorer name (pairwise), or a model name."""


def _register(registry: dict[str, Any], role: str, name: str, factory: Any) -> None:
    parse = parse_critic if role == "critic" else parse_judge  # a scorer's name is also a judge's
    if not isinstance(name, str) or not name or ":" in name or parse(name) != name:
        raise ConfigError(
            f"A {role} name is a plain word that none of the package's own forms takes (random..., self, lexicon, "
            f"label:...); got {name!r}."
        )
    if registry.get(name, factory) is not factory:
        raise ConfigError(f"A different {role} is already registered as {name!r}; choose another name.")
    registry[name] = factory


def register_critic(name: str, factory: Callable[[CriticContext], Any]) -> None:
    """Name a span critic: ``factory(ctx)`` builds it for a task (``Relc(critic=name)``, ``--critic name``)."""
    _register(CRITICS, "critic", name, factory)


def register_judge(name: str, factory: Callable[[JudgeContext], Any]) -> None:
    """Name a judge: ``factory(ctx)`` builds it, direct or pairwise as ``ctx.pairwise`` asks (``judge_model=name``)."""
    _register(JUDGES, "judge", name, factory)


def register_scorer(name: str, factory: Callable[[], Any]) -> None:
    """Name a scorer: ``factory()`` builds it (``Sparse(scorer=name)``, ``--scorer name``)."""
    from criticgym.critics.scorers import SCORERS

    _register(SCORERS, "scorer", name, factory)


def make_critic(name: str | Any, task: str, tokenizer: Any, critic_model: Any = DEFAULT_MODEL, seed: int = 0) -> Any:
    """A critic by name or typed value for a task, or a critic object as it is.

    :class:`~criticgym.specs.RandomSpans` (``"random"``, ``"random-<critic>"``) copies the budget of the named
    critic (the task's by default).
    """
    from criticgym.critics import RandomCritic
    from criticgym.envs import get_task

    critic = parse_critic(name)
    if isinstance(critic, RandomSpans):
        inner = critic.critic or get_task(task).critic
        return RandomCritic(make_critic(inner, task, tokenizer, critic_model), tokenizer, seed=seed)
    if not isinstance(critic, str):
        return critic
    if critic not in CRITICS:
        raise ConfigError(
            f"Unknown critic {critic!r}; use one of {sorted(CRITICS)}, 'random-<critic>', your own critic object, or "
            "register one (criticgym.registration.register_critic)."
        )
    return CRITICS[critic](CriticContext(get_task(task), tokenizer, critic_model, seed))


def make_judge(name: str | Any, task: str, pairwise: bool, policy: Any = None) -> Any:
    """A judge by name or typed value for a task, or a judge object as it is: where every judge name becomes a judge.

    The name's form is read by :func:`criticgym.specs.parse_judge`; a registered name comes first.

    ``policy`` is what :class:`~criticgym.specs.Policy` (``self``, ``label:self``) judges with: a model name, a frozen
    ``(model, tokenizer)`` pair, or a function returning one (called only when a judge needs it: the training
    driver's frozen copy of the initial policy).
    """
    from criticgym.critics import judge as judges
    from criticgym.envs import get_task

    task_spec = get_task(task)
    if isinstance(name, str) and name in JUDGES:
        return JUDGES[name](JudgeContext(task_spec, pairwise, policy))
    spec = parse_judge(name)
    model = spec.model if isinstance(spec, LabelJudge) else spec
    if isinstance(model, Policy):
        if policy is None:
            raise ConfigError(
                f"{str(spec)!r} is the policy judging itself, and this env does not know the policy: give the env "
                "policy= (a model name or a (model, tokenizer) pair), or a model name as model=."
            )
        backend = policy() if callable(policy) and not isinstance(policy, str) else policy
        if isinstance(spec, LabelJudge):
            return judges.label_word_judge(spec, task_spec.label_words, pairwise=pairwise, backend=backend)
        name = backend
    return judges.make_judge(name, task_spec.preamble, task_spec.label_words, pairwise=pairwise)


ROLES = {"scorer": (Sparse, Relc), "critic": (Relc,), "judge": (RlaifDirect, RlaifPairwise)}
"""Which reward set-ups have each role that gym.make takes as an object (the judge's spec field is judge_model)."""


def split_reward(reward: RewardSpec | str | None, options: dict[str, Any]) -> RewardSpec | None:
    """The reward spec of ``gym.make``'s keywords, objects given in place of names included.

    Reward options are taken out of ``options`` (what is left goes to the env). ``scorer`` and ``critic`` may be
    names or objects; ``judge=`` is a judge object, put in the spec's ``judge_model``.
    """
    named = {k: options.pop(k) for k in list(options) if k in OPTIONS}
    objects = {"judge": options.pop("judge", None)}
    for role in ("scorer", "critic"):
        if named.get(role) is not None and not isinstance(named[role], str):
            objects[role] = named.pop(role)
    spec = reward_spec(reward, **named)
    for role, obj in objects.items():
        if obj is None:
            continue
        kinds = ROLES[role]
        if not isinstance(spec, kinds):
            owners = " and ".join(k.kind for k in kinds)
            raise ConfigError(
                f"{role}= is given, but the {spec_name(spec)} reward has no {role}; it belongs to {owners}."
            )
        spec = replace(spec, **{"judge_model" if role == "judge" else role: obj})
    return spec


def _policy(options: dict[str, Any]) -> Any:
    """What ``label:self`` judges with: ``policy=``, else the env's model when it is named."""
    policy = options.pop("policy", None)
    model = options.get("model")
    return policy if policy is not None or not isinstance(model, str) else model


def make_env(task: str, reward: RewardSpec | str | None = "sparse", **kwargs: Any) -> gym.Env:
    """Build a single env with its reward wrappers (the entry point of every registered id)."""
    from criticgym.envs import TextGenEnv, get_task

    spec, policy = split_reward(reward, kwargs), _policy(kwargs)
    overlap = kwargs.pop("overlap_feedback", False)
    if overlap:
        raise ConfigError(
            "overlap_feedback runs the reward's scorer, critic or judge while other episodes generate: use the "
            "vector env (make_vec) with a reward."
        )
    feedback, feedback_tokens = kwargs.pop("feedback", None), kwargs.pop("feedback_tokens", 96)
    if feedback is None:
        return with_reward(TextGenEnv(task, **kwargs), task, spec, policy=policy)
    from criticgym.critics.feedback import make_feedback
    from criticgym.wrappers.feedback import LanguageFeedback

    task_spec = get_task(task)
    answer = kwargs.get("max_new_tokens") or task_spec.max_new_tokens
    # room for the refinement context: prompt, answer, feedback and the glue between them
    kwargs.setdefault("max_prompt_tokens", task_spec.max_prompt_tokens + answer + feedback_tokens + 16)
    env = LanguageFeedback(TextGenEnv(task, **kwargs), make_feedback(feedback, task_spec.feedback))
    return with_reward(env, task, spec, policy=policy)


def make_vector_env(
    task: str, num_envs: int = 1, reward: RewardSpec | str | None = "sparse", **kwargs: Any
) -> gym.vector.VectorEnv:
    """Build the native vector env with its reward wrappers (the vector entry point of every registered id)."""
    from criticgym.envs import TextGenVectorEnv

    spec, policy = split_reward(reward, kwargs), _policy(kwargs)
    overlap = kwargs.pop("overlap_feedback", False)
    if overlap and spec is None:
        raise ConfigError("overlap_feedback runs the reward's scorer, critic or judge: give the env a reward.")
    if "feedback" in kwargs:
        raise ConfigError("Language feedback episodes run on a single env: use gym.make(..., feedback=...).")
    check_episode_limit(task, kwargs.pop("max_episode_steps", None), kwargs)  # gym.make_vec hands it over
    return with_reward(TextGenVectorEnv(num_envs, task, **kwargs), task, spec, overlap, policy)


def with_reward(env: Any, task: str, spec: RewardSpec | None, overlap: bool = False, policy: Any = None):
    """Wrap a single or vector env in the reward a spec describes: where a spec becomes objects.

    Every field of the spec may be a name (built here: :func:`make_critic`, :func:`make_judge`, a scorer name) or
    the object itself. ``policy`` is what ``label:self`` judges with (a model name or a ``(model, tokenizer)``
    pair, frozen).
    """
    from criticgym import wrappers
    from criticgym.envs import get_task

    vector = isinstance(env, gym.vector.VectorEnv)
    extra = {"overlap": True} if overlap else {}
    task_spec = get_task(task)
    if spec is None:
        return env
    if isinstance(spec, RlaifDirect | RlaifPairwise):
        pairwise = isinstance(spec, RlaifPairwise)
        if pairwise and not vector:
            raise ConfigError(
                "Pairwise preferences compare two completions of the same prompt, so they need the vector env: "
                "gym.make_vec(env_id, num_envs=2 * n, reward='rlaif-pairwise', autoreset_mode='disabled')."
            )
        judge = make_judge(spec.judge_model, task, pairwise, policy)
        if pairwise:
            if overlap:
                raise ConfigError("overlap runs direct judges only; a pairwise judge already waits for both siblings.")
            return wrappers.PairwisePreferenceReward(env, judge)
        wrapper = wrappers.DirectJudgeRewardVector if vector else wrappers.DirectJudgeReward
        return wrapper(env, judge, **extra)
    scorer = task_spec.scorer if spec.scorer is None else spec.scorer
    if isinstance(spec, Sparse):
        wrapper = wrappers.SparseExtrinsicRewardVector if vector else wrappers.SparseExtrinsicReward
        return wrapper(env, scorer, **extra)
    tokenizer = env.unwrapped.tokenizer
    name = task_spec.critic if spec.critic is None else spec.critic
    critic = make_critic(name, task, tokenizer, spec.critic_model, spec.critic_seed or 0)
    values = {
        "positive_value": task_spec.span_values[0] if spec.positive_value is None else spec.positive_value,
        "negative_value": task_spec.span_values[1] if spec.negative_value is None else spec.negative_value,
    }
    wrapper = wrappers.RewardMixVector if vector else wrappers.RewardMix
    return wrapper(env, scorer, critic, spec.alpha1, spec.alpha2, gate=spec.gate, **values, **extra)


def register_task(spec: Any, env_id: str | None = None) -> str:
    """Add a task (a :class:`~criticgym.envs.TaskSpec`) and register its Gymnasium id; returns the id.

    The id defaults to ``criticgym/<Name>-v0`` from the spec's name (``"poems"`` -> ``criticgym/Poems-v0``).
    Registering the same spec again is a no-op; another spec under a taken name or id is an error.
    """
    from criticgym.envs.tasks import TASKS, TaskSpec

    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"register_task needs a TaskSpec, got {type(spec).__name__}.")
    env_id = env_id or f"criticgym/{spec.name.title().replace('_', '').replace('-', '')}-v0"
    if TASKS.get(spec.name, spec) != spec or ENV_IDS.get(env_id, spec.name) != spec.name:
        raise ConfigError(f"A different task is already registered as {spec.name!r} or {env_id!r}; rename yours.")
    TASKS[spec.name] = spec
    ENV_IDS[env_id] = spec.name
    register_envs()
    return env_id


def register_envs() -> None:
    """Register every criticgym id with Gymnasium (idempotent)."""
    for env_id, task in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="criticgym.registration:make_env",
            vector_entry_point="criticgym.registration:make_vector_env",
            kwargs={"task": task},
            disable_env_checker=False,
        )


def _check_id(env_id: str) -> None:
    if env_id not in ENV_IDS:
        raise UnknownEnvError(f"Unknown environment id {env_id!r}; criticgym registers {sorted(ENV_IDS)}.")


def check_episode_limit(task: str, limit: int | None, options: dict[str, Any]) -> None:
    """Refuse an episode limit (``max_episode_steps``) shorter than the episodes an env with ``options`` plays.

    Gymnasium's ``TimeLimit`` sits outside the env: it would cut a completion before the env ends it, and a cut
    episode is never scored (reward 0, ``info["unscored"]``). The env's own budget, ``max_new_tokens``, ends every
    episode scored. A limit at least as long as the episodes never acts (-1 or None: no limit).
    """
    from criticgym.envs import get_task

    if limit is None or limit == -1:
        return
    turns = 1 if options.get("feedback") is None else 2  # answer, then refinement
    budget = options.get("max_new_tokens") or get_task(task).max_new_tokens
    if limit < turns * budget:
        episode = f"{budget} tokens" if turns == 1 else f"two turns of {budget} tokens"
        raise ConfigError(
            f"max_episode_steps={limit} is shorter than an episode ({episode}): Gymnasium's TimeLimit would cut "
            "completions before the env ends them, and a cut episode is never scored (reward 0). Give the env that "
            f"budget instead, max_new_tokens={max(1, limit // turns)} (each episode then ends scored), or drop "
            "max_episode_steps."
        )


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` for criticgym ids, with an error that lists the valid ids.

    An episode limit shorter than the token budget (``max_episode_steps``, or one registered with the id) is refused
    (:func:`check_episode_limit`); ``gym.make`` itself applies it outside the env, where the env cannot see it, and
    the cut episodes say ``info["unscored"]``.
    """
    _check_id(env_id)
    limit = kwargs.get("max_episode_steps")
    check_episode_limit(ENV_IDS[env_id], gym.spec(env_id).max_episode_steps if limit is None else limit, kwargs)
    return gym.make(env_id, **kwargs)


def make_vec(env_id: str, num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv:
    """``gym.make_vec`` for criticgym ids (always the native vector env), with an error that lists the valid ids."""
    _check_id(env_id)
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)
