"""The Gymnasium ids criticgym registers, and the factories behind them.

``gym.make(id, reward=..., ...)`` chooses the reward set-up:

- ``reward="sparse"`` (default): the task's scorer (or ``scorer=``) paid at the last token.
- ``reward="relc"``: RELC, ``alpha1 * score`` at the last token plus ``alpha2 *`` per-token span rewards from a
  critic (``critic=``: ``"lexicon"``, ``"toxicity"``, ``"llm"``, ``"label"`` (the task's label-word question asked
  of each clause by ``critic_model``), ``"random"`` for random spans with the task
  critic's budget, ``"random-<name>"``, or your own critic), paid in hindsight. Also ``gate=``,
  ``positive_value=``, ``negative_value=`` (task defaults), ``critic_model=`` (the LLM critic's model),
  ``seed=`` (the random critic's).
- ``reward="rlaif-direct"``: an AI judge's direct score (0-9, expectation over the digit tokens, mapped to
  [-1, 1]) paid at the last token; ``judge=`` a :class:`~criticgym.critics.judge.ScoreJudge` or ``judge_model=``
  (default ``"smollm2-135m"``). ``judge_model="label:<model>"`` (or ``"label-content-free:<model>"``) asks the
  task's label-word question instead (:mod:`criticgym.critics.verbalizer`), for both RLAIF set-ups.
- ``reward="rlaif-pairwise"`` (vector env only, ``autoreset_mode="disabled"``, even ``num_envs``): sub-envs 2i
  and 2i+1 complete the same prompt and each gets its centered soft preference over the other, ``2p - 1``, from
  a :class:`~criticgym.critics.judge.PairwiseJudge` (``judge=`` or ``judge_model=``); see
  :mod:`criticgym.wrappers.preference`.
- ``reward=None``: no reward at all (every step pays 0), for users who add their own wrappers.

``overlap_feedback=True`` (vector env, ``autoreset_mode="disabled"``): the reward's expensive call (RELC's critic,
the sparse scorer, the direct judge) runs in a background thread while the other episodes generate; the rewards
are the same, paid on a later idle step of the finished row (:mod:`criticgym.wrappers.overlap`).

``feedback=`` (single env): episodes of two turns, answer then refinement after feedback in words
(:class:`~criticgym.wrappers.feedback.LanguageFeedback`): ``"program"`` (the task's annotator), ``"model:<name>"``
or a feedback source; ``feedback_tokens=`` (96) sizes the observation for it. The reward scores the refinement.

Any other keyword goes to :class:`~criticgym.envs.TextGenEnv` (``model``, ``split``, ``max_new_tokens``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from criticgym.errors import ConfigError, UnknownEnvError

ENV_IDS = {
    "criticgym/SentimentControl-v0": "sentiment",
    "criticgym/Detoxify-v0": "detoxify",
    "criticgym/Summarize-v0": "summarize",
    "criticgym/Words-v0": "words",
    "criticgym/Arithmetic-v0": "arithmetic",
}
REWARDS = ("sparse", "relc", "rlaif-direct", "rlaif-pairwise", None)
CRITICS = ("lexicon", "toxicity", "llm", "label", "random")

ScorerLike = str | Callable[..., Sequence[float]] | Any


def _check_reward(reward: str | None) -> None:
    if reward not in REWARDS:
        raise ConfigError(f"Unknown reward set-up {reward!r}; use one of {list(REWARDS)}.")


def make_critic(name: str | Any, task: str, tokenizer: Any, critic_model: str = "smollm2-135m", seed: int = 0) -> Any:
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


def _reward_kwargs(task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split the reward keywords off ``kwargs`` (what is left goes to the env)."""
    from criticgym.envs import get_task

    spec = get_task(task)
    keys = ("critic", "alpha1", "alpha2", "gate", "positive_value", "negative_value", "critic_model", "seed")
    keys += ("judge", "judge_model", "overlap_feedback")
    out = {k: kwargs.pop(k) for k in keys if k in kwargs}
    out.setdefault("critic", spec.critic)
    out.setdefault("positive_value", spec.span_values[0])
    out.setdefault("negative_value", spec.span_values[1])
    return out


def make_env(task: str, reward: str | None = "sparse", scorer: ScorerLike = None, **kwargs: Any) -> gym.Env:
    """Build a single env with its reward wrappers (the entry point of every registered id)."""
    from criticgym.envs import TextGenEnv
    from criticgym.wrappers import AIPreferenceReward, RewardMix, SparseExtrinsicReward

    _check_reward(reward)
    options = _reward_kwargs(task, kwargs)
    wrappers = (SparseExtrinsicReward, RewardMix, AIPreferenceReward)
    feedback, feedback_tokens = kwargs.pop("feedback", None), kwargs.pop("feedback_tokens", 96)
    if feedback is None:
        return _with_reward(TextGenEnv(task, **kwargs), task, reward, scorer, options, *wrappers)
    from criticgym.critics.feedback import make_feedback
    from criticgym.envs import get_task
    from criticgym.wrappers.feedback import LanguageFeedback

    spec = get_task(task)
    answer = kwargs.get("max_new_tokens") or spec.max_new_tokens
    # room for the refinement context: prompt, answer, feedback and the glue between them
    kwargs.setdefault("max_prompt_tokens", spec.max_prompt_tokens + answer + feedback_tokens + 16)
    env = LanguageFeedback(TextGenEnv(task, **kwargs), make_feedback(feedback, spec.feedback))
    return _with_reward(env, task, reward, scorer, options, *wrappers)


def make_vector_env(
    task: str, num_envs: int = 1, reward: str | None = "sparse", scorer: ScorerLike = None, **kwargs: Any
) -> gym.vector.VectorEnv:
    """Build the native vector env with its reward wrappers (the vector entry point of every registered id)."""
    from criticgym.envs import TextGenVectorEnv
    from criticgym.wrappers import AIPreferenceRewardVector, RewardMixVector, SparseExtrinsicRewardVector

    _check_reward(reward)
    options = _reward_kwargs(task, kwargs)
    if "feedback" in kwargs:
        raise ConfigError("Language feedback episodes run on a single env: use gym.make(..., feedback=...).")
    envs = TextGenVectorEnv(num_envs, task, **kwargs)
    wrappers = (SparseExtrinsicRewardVector, RewardMixVector, AIPreferenceRewardVector)
    return _with_reward(envs, task, reward, scorer, options, *wrappers)


def _with_reward(
    env: Any, task: str, reward: str | None, scorer: ScorerLike, options: dict[str, Any], sparse, mix, preference
):
    """Wrap a single or vector env (given its sparse, RELC and preference wrapper classes) in a reward set-up."""
    from criticgym.envs import get_task

    scorer = scorer if scorer is not None else get_task(task).scorer
    overlap = {"overlap": True} if options.pop("overlap_feedback", False) else {}
    if overlap and (not isinstance(env, gym.vector.VectorEnv) or reward is None):
        raise ConfigError(
            "overlap_feedback runs the reward's scorer, critic or judge while other episodes generate: use the "
            "vector env (make_vec) with a reward."
        )
    if reward == "sparse":
        return sparse(env, scorer, **overlap)
    if reward in ("rlaif-direct", "rlaif-pairwise"):
        mode = reward.partition("-")[2]
        return preference(env, _judge(task, options, mode), mode, **overlap)
    if reward == "relc":
        return _relc(mix, env, scorer, task, {**options, **overlap})
    return env


def _judge(task: str, options: dict[str, Any], mode: str) -> Any:
    from criticgym.critics.judge import PairwiseJudge, ScoreJudge
    from criticgym.envs import get_task

    if options.get("judge") is not None:
        return options["judge"]
    from criticgym.critics.judge import label_word_judge, parse_label_judge

    spec, model = get_task(task), options.get("judge_model", "smollm2-135m")
    if parse_label_judge(model) is not None:
        return label_word_judge(model, spec.label_words, pairwise=mode == "pairwise")
    judge = PairwiseJudge if mode == "pairwise" else ScoreJudge
    return judge(model, preamble=spec.preamble)


def _relc(wrapper: Any, env: Any, scorer: ScorerLike, task: str, relc: dict[str, Any]) -> Any:
    relc.pop("judge", None)
    relc.pop("judge_model", None)
    tokenizer = env.unwrapped.tokenizer
    critic = make_critic(
        relc.pop("critic"), task, tokenizer, relc.pop("critic_model", "smollm2-135m"), relc.pop("seed", 0)
    )
    return wrapper(env, scorer, critic, **relc)


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
