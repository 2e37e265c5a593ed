"""Critic span-intrinsic rewards (RELC): a critic names good and bad spans; the tokens inside them are rewarded.

A critic can judge a completion only once it exists, so the dense part is paid in hindsight (the project's dense
reward contract): at the episode's last step the scalar reward grows by ``scale * sum(r_in)`` (so the episode return
stays the sum of the step rewards), and ``info["token_rewards"]`` holds the reward each step *should* have had:
what the wrapped env paid on that step plus ``scale * r_in_t``. Learners write that vector back onto the
episode's steps before computing advantages.

Spans become token rewards through character offsets of the generated tokens
(:mod:`criticgym.critics.offsets`), never by matching token strings.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from criticgym.critics.base import Critique, as_critic, checked_critiques
from criticgym.critics.offsets import span_token_rewards, token_char_offsets
from criticgym.critics.protocols import Critic, Scorer
from criticgym.errors import ConfigError
from criticgym.rewards import EXTRINSIC_REWARD, TOKEN_REWARDS, UNSCORED
from criticgym.wrappers.overlap import Ended, RewardCalls, put_row
from criticgym.wrappers.sparse import RewindableVectorWrapper, SparseExtrinsicReward, SparseExtrinsicRewardVector

STAT_KEYS = ("critic_called", "critic_cached", "critic_spans", "critic_unlocated", "critic_parse_failed")


class SpanRewarder:
    """The mechanism shared by the single and vector wrappers: critique a batch, turn spans into token rewards.

    Args:
        critic: a :class:`~criticgym.critics.base.Critic` or a function of the same shape.
        tokenizer: the env's tokenizer (for character offsets of the generated tokens).
        positive_value: reward of a token inside a good span (RELC: 0.5 for sentiment and summarization).
        negative_value: reward of a token inside a bad span (RELC: -0.5).
        gate: call the critic only when the extrinsic score is below this (None: always).
        cache_size: critiques of identical (prompt, completion) pairs kept (0: no cache).
    """

    def __init__(
        self,
        critic: Critic | Callable[..., Sequence[Critique]],
        tokenizer: Any,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
    ) -> None:
        if cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {cache_size}.")
        self.critic = as_critic(critic)
        self.tokenizer = tokenizer
        self.positive_value, self.negative_value = float(positive_value), float(negative_value)
        self.gate = gate
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Critique] = OrderedDict()
        self.last_latency = 0.0  # seconds of the last critic call

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        completion_ids: Sequence[np.ndarray],
        extrinsic: Sequence[float | None],
    ) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        """Per-token intrinsic rewards (unscaled) and statistics for each finished episode."""
        n = len(completions)
        critiques: list[Critique | None] = [None] * n
        stats: list[dict[str, Any]] = [{**dict.fromkeys(STAT_KEYS, 0), "critique": None} for _ in range(n)]
        wanted = [i for i in range(n) if self.gate is None or extrinsic[i] is None or extrinsic[i] < self.gate]
        missing = []
        for i in wanted:
            cached = self._cache.get((prompts[i], completions[i]))
            if cached is not None:
                self._cache.move_to_end((prompts[i], completions[i]))
                critiques[i], stats[i]["critic_cached"] = cached, 1
            else:
                missing.append(i)
        self.last_latency = 0.0
        if missing:  # one batched call for every episode that needs a fresh critique
            start = time.perf_counter()
            scores = [extrinsic[i] for i in missing]
            fresh = self.critic.critique(
                [prompts[i] for i in missing],
                [completions[i] for i in missing],
                None if any(s is None for s in scores) else scores,
            )
            fresh = checked_critiques(fresh, [completions[i] for i in missing], self.critic)
            self.last_latency = time.perf_counter() - start
            for i, critique in zip(missing, fresh, strict=True):
                critiques[i], stats[i]["critic_called"] = critique, 1
                if self.cache_size:
                    self._cache[(prompts[i], completions[i])] = critique
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        rewards = []
        for i, critique in enumerate(critiques):
            text, offsets = token_char_offsets(self.tokenizer, completion_ids[i])
            if critique is None:  # gated off: no intrinsic reward
                rewards.append(np.zeros(len(offsets)))
                continue
            if text != completions[i]:  # the critic read other text than the tokens decode to: trust nothing
                raise ConfigError("The completion text does not match its token ids; pass the env's own info.")
            rewards.append(span_token_rewards(critique.spans, offsets, self.positive_value, self.negative_value))
            stats[i]["critique"] = critique
            stats[i].update(
                critic_spans=len(critique.spans),
                critic_unlocated=critique.unlocated,
                critic_parse_failed=int(critique.parse_failed),
            )
        return rewards, stats


class CriticSpanReward(gym.Wrapper):
    """Dense rewards from a span critic, paid in hindsight at the last step.

    At an episode's last step ``info`` gains ``intrinsic_rewards`` (T,) (unscaled ``r_in``), ``token_rewards``
    (T,) (the hindsight vector; its sum is the episode return), ``critique`` (the :class:`Critique` or None when
    gated off), ``critic_latency_s`` and the counters ``critic_called``, ``critic_cached``, ``critic_spans``,
    ``critic_unlocated``, ``critic_parse_failed``. Every step before it carries ``info["unscored"] = True``.

    Args:
        env: a criticgym env (its final info carries the prompt, completion and completion ids).
        critic: the span critic.
        scale: RELC's ``alpha2``.
        positive_value, negative_value, gate, cache_size: see :class:`SpanRewarder`.

    Example:
        >>> from criticgym.critics import LexiconCritic
        >>> from criticgym.envs import TextGenEnv
        >>> env = CriticSpanReward(TextGenEnv("sentiment", max_new_tokens=2), LexiconCritic())
        >>> _ = env.reset(options={"prompt": "It was"})
        >>> _ = env.step(env.unwrapped.tokenizer(" a")["input_ids"][0])
        >>> _, reward, _, truncated, info = env.step(env.unwrapped.tokenizer(" joy")["input_ids"][0])
        >>> info["completion"], info["token_rewards"].tolist(), reward
        (' a joy', [0.0, 0.5], 0.5)
    """

    def __init__(
        self,
        env: gym.Env,
        critic: Critic | Callable[..., Sequence[Critique]],
        scale: float = 1.0,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
    ) -> None:
        super().__init__(env)
        self.rewarder = SpanRewarder(critic, env.unwrapped.tokenizer, positive_value, negative_value, gate, cache_size)
        self.scale = float(scale)
        self._paid: list[float] = []  # what the wrapped env paid on each step of the current episode

    def reset(self, **kwargs):
        """Start an episode."""
        self._paid = []
        return self.env.reset(**kwargs)

    def get_state(self) -> tuple[Any, tuple[float, ...]]:
        """A snapshot of the episode through this wrapper: the inner env's state and the step rewards it paid.

        Call it on a ``gym.make`` env as ``env.get_wrapper_attr("get_state")()``.
        """
        return self.env.get_wrapper_attr("get_state")(), tuple(self._paid)

    def set_state(self, state: tuple[Any, tuple[float, ...]]):
        """Rewind to :meth:`get_state`'s snapshot; returns the observation. The abandoned branch leaves nothing."""
        inner, paid = state
        observation = self.env.get_wrapper_attr("set_state")(inner)
        self._paid = list(paid)
        return observation

    def step(self, action):
        """Step; at the episode's end, critique it and pay the dense part."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._paid.append(float(reward))
        if terminated or truncated:
            ids = info["completion_ids"]
            (r_in,), (stats,) = self.rewarder(
                [info["prompt"]], [info["completion"]], [ids], [info.get(EXTRINSIC_REWARD)]
            )
            base = np.asarray(info.get(TOKEN_REWARDS, self._paid[-len(ids) :]), dtype=np.float64)
            info = {
                **info,
                **stats,
                "intrinsic_rewards": r_in,
                TOKEN_REWARDS: base + self.scale * r_in,
                "critic_latency_s": self.rewarder.last_latency,
            }
            reward = float(reward) + self.scale * float(r_in.sum())
        else:
            info = {**info, UNSCORED: True}
        return obs, reward, terminated, truncated, info


class CriticSpanRewardVector(RewindableVectorWrapper):
    """The vector version: the episodes that end together are critiqued in **one** batched critic call.

    ``info`` gains, for those sub-envs (with ``_key`` masks), ``intrinsic_rewards`` and ``token_rewards`` (object
    arrays of per-episode vectors), ``critic_latency_s`` (the critic call's seconds) and the counters of
    :class:`CriticSpanReward`.

    ``overlap=True`` (``autoreset_mode="disabled"`` only) takes the critic off the generation path: it runs in a
    background thread while the other episodes keep generating, and a finished episode is paid on a later idle step
    (:mod:`criticgym.wrappers.overlap`). The wrapped env's score is still paid on the last step.
    """

    def __init__(
        self,
        env: VectorEnv,
        critic: Critic | Callable[..., Sequence[Critique]],
        scale: float = 1.0,
        positive_value: float = 0.5,
        negative_value: float = -0.5,
        gate: float | None = None,
        cache_size: int = 4096,
        overlap: bool = False,
    ) -> None:
        super().__init__(env)
        self.rewarder = SpanRewarder(critic, env.unwrapped.tokenizer, positive_value, negative_value, gate, cache_size)
        self.scale = float(scale)
        self.calls = RewardCalls(env, self._critique, overlap, "overlap")
        self._paid: list[list[float]] = [[] for _ in range(self.num_envs)]
        self._ended = np.zeros(self.num_envs, dtype=bool)  # ended on the last step

    def _own_state(self, row: int) -> tuple[tuple[float, ...], bool, bool]:
        return tuple(self._paid[row]), bool(self._ended[row]), self.calls.snapshot(row)

    def _set_own_state(self, row: int, state: tuple[tuple[float, ...], bool, bool]) -> None:
        self._paid[row], self._ended[row] = list(state[0]), state[1]
        self.calls.restore(row, state[2])

    def reset(self, *, seed=None, options=None):
        """Reset, forgetting the step rewards (and any critique to come) of the sub-envs that restart."""
        mask = (options or {}).get("reset_mask")
        rows = range(self.num_envs) if mask is None else np.flatnonzero(mask)
        for row in rows:
            self._paid[row] = []
            self._ended[row] = False
        self.calls.reset(rows)
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        """Step every sub-env, then critique the episodes that just ended together (or hand them to the thread)."""
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        for row in range(self.num_envs):
            if self._ended[row]:  # the step after an end resets (next_step mode) or idles (disabled mode)
                self._paid[row] = []
            else:
                self._paid[row].append(float(rewards[row]))
        self._ended = np.logical_or(terminated, truncated)
        extrinsic = info.get(EXTRINSIC_REWARD)
        ended = []
        for i in np.flatnonzero(self._ended):
            n = len(info["completion_ids"][i])
            prior = info[TOKEN_REWARDS][i] if TOKEN_REWARDS in info and info[f"_{TOKEN_REWARDS}"][i] else None
            base = np.asarray(prior if prior is not None else self._paid[i][-n:], dtype=np.float64)
            score = float(extrinsic[i]) if extrinsic is not None else None
            episode = (info["prompt"][i], info["completion"][i], info["completion_ids"][i], score, base)
            ended.append(self.calls.ended(i, episode))
        paid = self.calls.step(ended)
        if paid:
            rewards, info = np.array(rewards, dtype=np.float64), dict(info)
        for episode, (r_in, stats, latency) in paid:
            rewards[episode.row] += self.scale * float(r_in.sum())
            entries = {
                TOKEN_REWARDS: episode.data[-1] + self.scale * r_in,  # the wrapped env's rewards + the spans
                "intrinsic_rewards": r_in,
                "critique": stats["critique"],
                "critic_latency_s": latency,
                **{key: stats[key] for key in STAT_KEYS},
            }
            for key, value in entries.items():
                put_row(info, key, episode.row, value, self.num_envs)
        return obs, rewards, terminated, truncated, info

    def close(self, **kwargs):
        """Stop the critic thread, then close the env."""
        self.calls.close()
        return super().close(**kwargs)

    def _critique(self, ended: list[Ended]) -> list[tuple[np.ndarray, dict[str, Any], float]]:
        """One critic call for these episodes: per episode, unscaled token rewards, statistics, the call's seconds."""
        prompts, completions, ids, scores, _ = zip(*(e.data for e in ended), strict=True)
        r_in, stats = self.rewarder(prompts, completions, ids, scores)
        return [(r, st, self.rewarder.last_latency) for r, st in zip(r_in, stats, strict=True)]


class RewardMix(CriticSpanReward):
    """RELC's reward ``r_t = alpha1 * r_ex * [t == T] + alpha2 * r_in_t``: a scorer plus a span critic.

    The scorer's raw score is handed to the critic (for gating, and for critics that read it).

    Args:
        env: a criticgym env without reward wrappers.
        scorer: the extrinsic scorer (name, object or function).
        critic: the span critic.
        alpha1: weight of the extrinsic score.
        alpha2: weight of the intrinsic span rewards.
        **kwargs: ``positive_value``, ``negative_value``, ``gate``, ``cache_size``.
    """

    def __init__(
        self,
        env: gym.Env,
        scorer: str | Scorer | Callable[..., Sequence[float]],
        critic: Critic | Callable[..., Sequence[Critique]],
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(SparseExtrinsicReward(env, scorer, scale=alpha1), critic, scale=alpha2, **kwargs)


class RewardMixVector(CriticSpanRewardVector):
    """The vector version of :class:`RewardMix`."""

    def __init__(
        self,
        env: VectorEnv,
        scorer: str | Scorer | Callable[..., Sequence[float]],
        critic: Critic | Callable[..., Sequence[Critique]],
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(SparseExtrinsicRewardVector(env, scorer, scale=alpha1), critic, scale=alpha2, **kwargs)
