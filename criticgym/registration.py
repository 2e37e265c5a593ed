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
  token. ``judge_model="label:<model>"`` asks the task's label-word question instead, for both RLAIF set-ups.
- ``RlaifPairwise`` (vector env only, ``autoreset_mode="disabled"``, even ``num_envs``): sub-envs 2i and 2i+1
  complete the same prompt and each gets its centered soft preference over the other, ``2p - 1``
  (:mod:`criticgym.wrappers.preference`).

``overlap_feedback=True`` (vector env, ``autoreset_mode="disabled"``): the reward's expensive call (RELC's critic,
the sparse scorer, the direct judge) runs in a background thread while the other episodes generate; the rewards
are the same, paid on a later idle step of the finished row (:mod:`criticgym.wrappers.overlap`).

``feedback=`` (single env): episodes of two turns, answer then refinement after feedback in words
(:class:`~criticgym.wrappers.feedback.LanguageFeedback`): ``"program"`` (the task's annotator), ``"model:<name>"``
or a feedback writer; ``feedback_tokens=`` (96) sizes the observation for it. The reward scores the refinement.

Any other keyword goes to :class:`~criticgym.envs.TextGenEnv` (``model``, ``split``, ``max_new_tokens``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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

ENV_IDS = {
    "criticgym/SentimentControl-v0": "sentiment",
    "criticgym/Detoxify-v0": "detoxify",
    "criticgym/Summarize-v0": "summarize",
    "criticgym/Words-v0": "words",
    "criticgym/Arithmetic-v0": "arithmetic",
}
CRITICS = ("lexicon", "toxicity", "llm", "label", "random")

ScorerLike = str | Callable[..., Sequence[float]] | Any


def make_critic(name: str | Any, task: str, tokenizer: Any, critic_model: str = DEFAULT_MODEL, seed: int = 0) -> Any:
    """A critic by name for a task (``"random"`` copies the budget of the task's default critic)."""
    from criticgym.critics import LexiconCritic, LLMCritic, RandomCritic, ToxicityCritic
    from criticgym.envs import get_task

    if not isinstance(name, str):
        return name
    if name.startswith("random"):
        inner = name.partition("-")[2] or get_task(task).critic
        return RandomCritic(make_critic(inner, task, tokenizer, critic_model), tokenizer, seed=seed)
    if name == "lexicon":
        return LexiconCritic()
    if name == "toxicity":
        return ToxicityCritic()
    if name == "label":  # the label-word question, asked of each clause by the critic model
        from criticgym.critics.verbalizer import LabelWordCritic, LabelWordScorer

        words = get_task(task).label_words
        if words is None:
            raise ConfigError(f"Task {task!r} has no label_words; give its TaskSpec some to use critic='label'.")
        return LabelWordCritic(LabelWordScorer(critic_model, words, calibration="content-free", include_prompt=False))
    if name == "llm":
        spec = get_task(task)
        if spec.critic_template is None:
            raise ConfigError(f"Task {spec.name!r} has no critic_template; give its TaskSpec one to use critic='llm'.")
        return LLMCritic(critic_model, template=spec.critic_template, include_score=spec.critic_sees_score)
    raise ConfigError(f"Unknown critic {name!r}; use one of {list(CRITICS)}, 'random-<critic>', or your own critic.")


@dataclass
class Built:
    """What a reward spec's objects are, given as objects rather than names (None: built from the spec)."""

    scorer: Any = None
    critic: Any = None
    judge: Any = None


def split_reward(reward: RewardSpec | str | None, options: dict[str, Any]) -> tuple[RewardSpec | None, Built]:
    """The reward spec of ``gym.make``'s keywords, and the objects given in place of names.

    Reward options are taken out of ``options`` (what is left goes to the env). ``scorer`` and ``critic`` may be
    names (spec fields) or objects; ``judge`` is an object (``judge_model`` names one).
    """
    named = {k: options.pop(k) for k in list(options) if k in OPTIONS}
    built = Built(judge=options.pop("judge", None))
    for role in ("scorer", "critic"):
        if named.get(role) is not None and not isinstance(named[role], str):
            setattr(built, role, named.pop(role))
    spec = reward_spec(reward, **named)
    roles = {"scorer": (Sparse, Relc), "critic": (Relc,), "judge": (RlaifDirect, RlaifPairwise)}
    for role, kinds in roles.items():
        if getattr(built, role) is not None and not isinstance(spec, kinds):
            owners = " and ".join(k.kind for k in kinds)
            raise ConfigError(
                f"{role}= is given, but the {spec_name(spec)} reward has no {role}; it belongs to {owners}."
            )
    return spec, built


def make_env(task: str, reward: RewardSpec | str | None = "sparse", **kwargs: Any) -> gym.Env:
    """Build a single env with its reward wrappers (the entry point of every registered id)."""
    from criticgym.envs import TextGenEnv, get_task

    spec, built = split_reward(reward, kwargs)
    overlap = kwargs.pop("overlap_feedback", False)
    if overlap:
        raise ConfigError(
            "overlap_feedback runs the reward's scorer, critic or judge while other episodes generate: use the "
            "vector env (make_vec) with a reward."
        )
    feedback, feedback_tokens = kwargs.pop("feedback", None), kwargs.pop("feedback_tokens", 96)
    if feedback is None:
        return with_reward(TextGenEnv(task, **kwargs), task, spec, built)
    from criticgym.critics.feedback import make_feedback
    from criticgym.wrappers.feedback import LanguageFeedback

    task_spec = get_task(task)
    answer = kwargs.get("max_new_tokens") or task_spec.max_new_tokens
    # room for the refinement context: prompt, answer, feedback and the glue between them
    kwargs.setdefault("max_prompt_tokens", task_spec.max_prompt_tokens + answer + feedback_tokens + 16)
    env = LanguageFeedback(TextGenEnv(task, **kwargs), make_feedback(feedback, task_spec.feedback))
    return with_reward(env, task, spec, built)


def make_vector_env(
    task: str, num_envs: int = 1, reward: RewardSpec | str | None = "sparse", **kwargs: Any
) -> gym.vector.VectorEnv:
    """Build the native vector env with its reward wrappers (the vector entry point of every registered id)."""
    from criticgym.envs import TextGenVectorEnv

    spec, built = split_reward(reward, kwargs)
    overlap = kwargs.pop("overlap_feedback", False)
    if overlap and spec is None:
        raise ConfigError("overlap_feedback runs the reward's scorer, critic or judge: give the env a reward.")
    if "feedback" in kwargs:
        raise ConfigError("Language feedback episodes run on a single env: use gym.make(..., feedback=...).")
    return with_reward(TextGenVectorEnv(num_envs, task, **kwargs), task, spec, built, overlap)


def with_reward(env: Any, task: str, spec: RewardSpec | None, built: Built | None = None, overlap: bool = False):
    """Wrap a single or vector env in the reward a spec describes: where a spec becomes objects."""
    from criticgym import wrappers
    from criticgym.critics.judge import make_judge
    from criticgym.envs import get_task

    built = built or Built()
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
        judge = built.judge
        if judge is None:
            judge = make_judge(spec.judge_model, task_spec.preamble, task_spec.label_words, pairwise=pairwise)
        if pairwise:
            if overlap:
                raise ConfigError("overlap runs direct judges only; a pairwise judge already waits for both siblings.")
            return wrappers.PairwisePreferenceReward(env, judge)
        wrapper = wrappers.AIPreferenceRewardVector if vector else wrappers.AIPreferenceReward
        return wrapper(env, judge, **extra)
    scorer = built.scorer if built.scorer is not None else (spec.scorer or task_spec.scorer)
    if isinstance(spec, Sparse):
        wrapper = wrappers.SparseExtrinsicRewardVector if vector else wrappers.SparseExtrinsicReward
        return wrapper(env, scorer, **extra)
    critic = built.critic
    if critic is None:
        seed = spec.critic_seed or 0
        critic = make_critic(spec.critic or task_spec.critic, task, env.unwrapped.tokenizer, spec.critic_model, seed)
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


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` for criticgym ids, with an error that lists the valid ids."""
    _check_id(env_id)
    return gym.make(env_id, **kwargs)


def make_vec(env_id: str, num_envs: int = 1, **kwargs: Any) -> gym.vector.VectorEnv:
    """``gym.make_vec`` for criticgym ids (always the native vector env), with an error that lists the valid ids."""
    _check_id(env_id)
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)
